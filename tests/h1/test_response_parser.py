"""h1.ResponseParser: framing of upstream responses, bytes only."""

from __future__ import annotations

import pytest

from veloxy.errors import UpstreamProtocolError
from veloxy.h1.head import ResponseHead
from veloxy.h1.parser import ResponseParser


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_informational(self, head: ResponseHead) -> None:
        self.events.append(("1xx", head.status))

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head.status, tuple(head.headers), head.content_length,
                            head.chunked, head.close))

    def on_response_body(self, chunk: bytes) -> None:
        self.events.append(("body", chunk))

    def on_response_end(self) -> None:
        self.events.append(("end",))


def test_informational_then_final() -> None:
    recorder = Recorder()
    ResponseParser(recorder).feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert recorder.events == [("1xx", 100), ("head", 200, ((b"Content-Length", b"2"),), 2,
                                                        False, False), ("body", b"hi"), ("end",)]


def test_head_response_has_no_body_and_parser_is_reusable() -> None:
    recorder = Recorder()
    parser = ResponseParser(recorder)
    parser.expect_no_body()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert [e[0] for e in recorder.events] == ["head", "end"]
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert recorder.events[-2:] == [("body", b"x"), ("end",)]


def test_close_delimited_body_completes_at_eof_only() -> None:
    recorder = Recorder()
    parser = ResponseParser(recorder)
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert recorder.events[-1] == ("body", b"abc")
    assert parser.finish() is True
    assert recorder.events[-1] == ("end",)


def test_truncated_content_length_is_not_complete_at_eof() -> None:
    recorder = Recorder()
    parser = ResponseParser(recorder)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert parser.finish() is False
    assert ("end",) not in recorder.events


def test_hop_by_hop_response_fields_removed() -> None:
    recorder = Recorder()
    ResponseParser(recorder).feed(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=1\r\n"
        b"Transfer-Encoding: chunked\r\nX-End: e\r\n\r\n0\r\n\r\n")
    head = recorder.events[0]
    assert head[2] == ((b"X-End", b"e"),)
    assert head[4] is True and head[5] is True


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        ResponseParser(Recorder()).feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_status_parser_skips_headers_but_keeps_framing() -> None:
    from veloxy.h1.parser import StatusResponseParser

    recorder = Recorder()
    parser = StatusResponseParser(recorder)
    parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 100 + b"\r\nContent-Length: 3\r\n\r\nabc"
                b"HTTP/1.1 204 No Content\r\n\r\n")
    assert recorder.events == [("head", 200, (), None, False, False), ("body", b"abc"), ("end",),
                               ("head", 204, (), None, False, False), ("end",)]


def test_status_parser_eof_completes_only_close_delimited_bodies() -> None:
    from veloxy.h1.parser import StatusResponseParser

    recorder = Recorder()
    parser = StatusResponseParser(recorder)
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\npartial")
    assert parser.finish() is True and recorder.events[-1] == ("end",)
    recorder = Recorder()
    parser = StatusResponseParser(recorder)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert parser.finish() is False and ("end",) not in recorder.events
