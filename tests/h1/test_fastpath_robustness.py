"""The C fast lane (h1/_fastpath.c) under misuse and hostile input: what a handler that
raises, a handler that feeds again, an unmade parser, a reference cycle and a head trickled
byte by byte do to it. Each case was a defect found by review under AddressSanitizer; the
differential suite (test_fastpath.py) holds the parsing itself to llhttp.
"""

from __future__ import annotations

import gc
import sys

import pytest

from veloxy.errors import BadRequest, UpstreamProtocolError
from veloxy.h1.head import RequestHead, ResponseHead
from veloxy.h1.parser import RequestParser, ResponseParser

if sys.platform == "win32":  # pragma: no cover - built where a compiler is at hand
    _fastpath = pytest.importorskip("veloxy.h1._fastpath")
else:
    from veloxy.h1 import _fastpath

POST = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
GET = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"


class Boom(Exception):
    pass


class Handler:
    """Records request and response events; raises once at `raise_on` if given."""

    def __init__(self, raise_on: str | None = None) -> None:
        self.events: list[tuple] = []
        self.raise_on = raise_on

    def _event(self, *event: object) -> None:
        self.events.append(event)
        if event[0] == self.raise_on:
            self.raise_on = None
            raise Boom(event[0])

    def on_request_head(self, head: RequestHead) -> None:
        self._event("head", head.target)

    def on_request_body(self, chunk: bytes) -> None:
        self._event("body", chunk)

    def on_request_end(self) -> None:
        self._event("end")

    def on_informational(self, head: ResponseHead) -> None:
        self._event("1xx", head.status)

    def on_response_head(self, head: ResponseHead) -> None:
        self._event("head", head.status)

    def on_response_body(self, chunk: bytes) -> None:
        self._event("body", chunk)

    def on_response_end(self) -> None:
        self._event("end")


def outcomes(parser: object, reads: list[bytes]) -> list[str]:
    result = []
    for data in reads:
        try:
            parser.feed(data)  # type: ignore[attr-defined]
            result.append("ok")
        except Exception as exc:
            result.append(type(exc).__name__)
    return result


@pytest.mark.parametrize("raise_on", ["head", "body", "end"])
def test_after_a_handler_raised_every_later_read_is_refused_as_llhttp_does(
        raise_on: str) -> None:
    """The rest of the read that raised is lost, and with it the framing: the C parser
    must not take the next read's bytes as the old body or serve the next request."""
    reads = [POST + GET, b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"]
    fast_handler, slow_handler = Handler(raise_on), Handler(raise_on)
    fast = outcomes(_fastpath.RequestParser(fast_handler, RequestParser, RequestHead), reads)
    slow = outcomes(RequestParser(slow_handler), reads)
    assert fast == ["Boom", "BadRequest"]
    assert slow[1] == "BadRequest"
    assert fast_handler.events == slow_handler.events
    assert ("head", b"/c") not in fast_handler.events


def test_a_response_parser_refuses_after_its_handler_raised() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    parser = _fastpath.ResponseParser(Handler("head"), ResponseParser, ResponseHead)
    assert outcomes(parser, [response, response]) == ["Boom", "UpstreamProtocolError"]


def test_bytes_after_close_keep_being_refused() -> None:
    close = b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    handler = Handler()
    parser = _fastpath.RequestParser(handler, RequestParser, RequestHead)
    assert outcomes(parser, [close, GET, GET]) == ["ok", "BadRequest", "BadRequest"]
    assert handler.events == [("head", b"/a"), ("end",)]
    with pytest.raises(BadRequest):
        parser.feed(b"\r\nX")


def test_feeding_again_from_a_callback_is_refused() -> None:
    class Reentrant(Handler):
        parser: object = None

        def on_request_head(self, head: RequestHead) -> None:
            super().on_request_head(head)
            self.parser.feed(GET)  # type: ignore[attr-defined]

    handler = Reentrant()
    handler.parser = _fastpath.RequestParser(handler, RequestParser, RequestHead)
    with pytest.raises(RuntimeError, match="handler callback"):
        handler.parser.feed(GET)  # type: ignore[attr-defined]


def test_a_parser_never_initialised_raises_instead_of_crashing() -> None:
    parser = _fastpath.RequestParser.__new__(_fastpath.RequestParser)
    with pytest.raises(RuntimeError, match="not initialised"):
        parser.feed(GET)
    response = _fastpath.ResponseParser.__new__(_fastpath.ResponseParser)
    with pytest.raises(RuntimeError, match="not initialised"):
        response.feed(b"HTTP/1.1 204 No Content\r\n\r\n")


def test_a_failed_reinit_leaves_the_parser_working() -> None:
    handler = Handler()
    parser = _fastpath.RequestParser(handler, RequestParser, RequestHead)
    with pytest.raises(AttributeError):
        parser.__init__(object(), RequestParser, RequestHead)
    parser.feed(GET)
    assert handler.events == [("head", b"/b"), ("end",)]


def test_head_classes_with_c_state_of_their_own_are_refused() -> None:
    import collections

    class DequeHead(collections.deque):  # type: ignore[type-arg]
        pass

    with pytest.raises(TypeError, match="head_class"):
        _fastpath.RequestParser(Handler(), RequestParser, DequeHead)
    with pytest.raises(ValueError, match="negative"):
        _fastpath.RequestParser(Handler(), RequestParser, RequestHead, max_request_line=-1)


@pytest.mark.parametrize("kind", ["request", "response"])
def test_an_unfinished_head_in_a_reference_cycle_is_collected(kind: str) -> None:
    alive = []

    class Tracked(bytes):
        def __del__(self) -> None:
            alive.pop()

    for _ in range(50):
        if kind == "request":
            parser = _fastpath.RequestParser(Handler(), RequestParser, RequestHead)
            data = Tracked(b"GET /unfinished HTTP/1.1\r\nHo")
        else:
            parser = _fastpath.ResponseParser(Handler(), ResponseParser, ResponseHead)
            data = Tracked(b"HTTP/1.1 200 OK\r\nConte")
        alive.append(1)
        data.parser = parser  # type: ignore[attr-defined]  # parser -> pending -> data -> parser
        parser.feed(data)
        del parser, data
    gc.collect()
    assert alive == []


def test_a_head_trickled_byte_by_byte_goes_to_llhttp() -> None:
    """Each read of an unfinished head is joined and scanned from its start: past a few
    dozen reads the head is declined to llhttp, which goes on where it stopped, so a
    client sending one byte at a time cannot make the work grow with the square."""
    head = GET[:-2] + b"X-Pad: " + b"p" * 200 + b"\r\n\r\n"
    handler = Handler()
    parser = _fastpath.RequestParser(handler, RequestParser, RequestHead)
    for i in range(len(head)):
        parser.feed(head[i:i + 1])
    assert parser.declined is True
    assert handler.events == [("head", b"/b"), ("end",)]
    short = _fastpath.RequestParser(Handler(), RequestParser, RequestHead)
    for piece in (GET[:10], GET[10:20], GET[20:]):
        short.feed(piece)
    assert short.declined is False


@pytest.mark.parametrize("value", [b"1x", b"9" * 25, b" 5\r\nContent-Length: 6"])
def test_a_bad_content_length_is_refused_with_the_read_that_brings_it(value: bytes) -> None:
    partial = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value
    for parser in (_fastpath.RequestParser(Handler(), RequestParser, RequestHead),
                   RequestParser(Handler())):
        with pytest.raises(BadRequest):
            parser.feed(partial)


def test_a_truncated_upstream_response_is_not_complete_at_end_of_stream() -> None:
    handler = Handler()
    parser = _fastpath.ResponseParser(handler, ResponseParser, ResponseHead)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    assert parser.finish() is False
    assert parser.idle is False
    assert ("end",) not in handler.events


def test_a_response_after_one_that_closed_is_refused() -> None:
    handler = Handler()
    parser = _fastpath.ResponseParser(handler, ResponseParser, ResponseHead)
    with pytest.raises(UpstreamProtocolError):
        parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    b"HTTP/1.1 204 No Content\r\n\r\n")
    assert handler.events == [("head", 200), ("end",)]
