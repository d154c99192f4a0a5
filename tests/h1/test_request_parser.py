"""h1.RequestParser: bytes in, events out, no sockets (h11's habit).

Every input is checked whole and split at every position or a random one: a parser must give
the same events however the bytes arrive.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veloxy.errors import (
    BadRequest,
    DownstreamError,
    HeaderFieldsTooLarge,
    NotImplementedByProxy,
    PayloadTooLarge,
    UriTooLong,
)
from veloxy.h1.head import RequestHead
from veloxy.h1.parser import RequestParser, UpgradeRequested


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(("head", head.method, head.target, tuple(head.headers), head.host,
                            head.content_length, head.chunked, head.close, head.upgrade,
                            head.forwarded_for, head.expect_continue))

    def on_request_body(self, chunk: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + chunk)
        else:
            self.events.append(("body", chunk))

    def on_request_end(self) -> None:
        self.events.append(("end",))


def parse(data: bytes, pieces: list[int] | None = None, **limits: int | None) -> list[tuple]:
    recorder = Recorder()
    parser = RequestParser(recorder, **limits)  # type: ignore[arg-type]
    if pieces is None:
        parser.feed(data)
    else:
        start = 0
        for end in [*sorted(pieces), len(data)]:
            if end > start:
                parser.feed(data[start:end])
                start = end
    return recorder.events


SIMPLE = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
CHUNKED = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
HOP_BY_HOP = (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
              b"Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: y\r\n"
              b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Real-IP: 9.9.9.9\r\n"
              b"X-Forwarded-Proto: https\r\nX-Kept: k\r\n\r\n")


def test_simple_get() -> None:
    (head, end) = parse(SIMPLE)
    assert head[:5] == ("head", b"GET", b"/a?b=c",
                        ((b"Host", b"example.com"), (b"Accept", b"*/*")), b"example.com")
    assert end == ("end",)


def test_chunked_body_is_decoded_and_trailers_dropped() -> None:
    events = parse(CHUNKED)
    assert events[0][6] is True  # chunked
    assert all(name != b"Transfer-Encoding" for name, _ in events[0][3])
    assert events[1] == ("body", b"hello world")
    assert events[2] == ("end",)


def test_hop_by_hop_and_forwarding_fields_are_removed() -> None:
    head = parse(HOP_BY_HOP)[0]
    names = [name for name, _ in head[3]]
    assert names == [b"Host", b"X-Kept"]
    assert head[9] == b"1.2.3.4, 5.6.7.8"  # X-Forwarded-For chain kept for appending


def test_pipelined_requests_in_one_read() -> None:
    events = parse(SIMPLE + b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    kinds = [e[0] for e in events]
    assert kinds == ["head", "end", "head", "body", "end"]
    assert events[3] == ("body", b"abc")


def test_http10_without_keep_alive_closes() -> None:
    head = parse(b"GET / HTTP/1.0\r\n\r\n")[0]
    assert head[7] is True
    head = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0]
    assert head[7] is False


def test_upgrade_hands_over_the_tail() -> None:
    recorder = Recorder()
    parser = RequestParser(recorder)
    with pytest.raises(UpgradeRequested) as info:
        parser.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n\x81\x05hello")
    assert info.value.tail == b"\x81\x05hello"
    assert recorder.events[0][8] == b"websocket"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         BadRequest),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         BadRequest),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX\x01: y\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", BadRequest),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01", BadRequest),
        (b"GET / HTTP/1.1\r\n\r\n", BadRequest),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         NotImplementedByProxy),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", NotImplementedByProxy),
    ],
)
def test_malformed_requests_raise_the_right_error(data: bytes, error: type) -> None:
    with pytest.raises(error):
        parse(data)


def test_limits() -> None:
    with pytest.raises(UriTooLong):
        parse(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n", max_request_line=50)
    with pytest.raises(HeaderFieldsTooLarge):
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 200 + b"\r\n\r\n",
              max_header_bytes=100)
    with pytest.raises(PayloadTooLarge):
        parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", max_body_bytes=10)
    with pytest.raises(PayloadTooLarge):
        parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"b\r\nhello world\r\n0\r\n\r\n", max_body_bytes=10)
    # A head that never ends is cut off before it is complete.
    recorder = Recorder()
    parser = RequestParser(recorder, max_request_line=64, max_header_bytes=128)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
    with pytest.raises(HeaderFieldsTooLarge):
        for _ in range(10):
            parser.feed(b"v" * 64)


@pytest.mark.parametrize("message", [SIMPLE, CHUNKED, HOP_BY_HOP])
def test_every_split_gives_the_same_events(message: bytes) -> None:
    whole = parse(message)
    for cut in range(1, len(message)):
        assert parse(message, [cut]) == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(CHUNKED) - 1), max_size=8))
def test_random_splits_of_chunked_body(cuts: list[int]) -> None:
    assert parse(CHUNKED, cuts) == parse(CHUNKED)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_protocol_errors(data: bytes) -> None:
    try:
        parse(data)
    except (DownstreamError, UpgradeRequested):
        pass
