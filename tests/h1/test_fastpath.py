"""h1._fastpath: the C fast lane held to the Python parsers, event for event.

The C parsers serve a strict subset of HTTP/1.1 and decline the rest to the Python parsers
(h1/parser.py, llhttp underneath). Whatever they accept must give exactly the events the
Python parser gives for the same bytes, however the bytes are split into reads; whatever
they decline must reach the Python parser whole, so that the events (or the refusal) are
again the Python parser's. Every comparison here feeds the same pieces to a C parser (with
the Python class as its fallback) and to a pure Python parser, each with its own recorder;
the C parser is run twice, for a handler with and without the whole-message event
(on_request / on_response, which net/server_connection.py and net/client.py have). A refusal is
compared by its exception type, and separately by the read that brings it.

Sections: the harness; the fast lane engages on the common shapes; each reason to decline;
limits (413/414/431); when a refusal comes; field values and connection management; the
response parser's idle, in_body, finish() and HEAD; pipelining across a decline; then the
generated inputs (hypothesis).

The C module is built by CI (`python setup.py build_ext --inplace`): where it cannot be
imported these tests fail, except on Windows, where a compiler may legitimately be missing.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from veloxy.errors import (
    DownstreamError,
    HeaderFieldsTooLarge,
    PayloadTooLarge,
    UpstreamProtocolError,
    UriTooLong,
)
from veloxy.h1 import parser as parser_module
from veloxy.h1.head import CRLF, SEP, RequestHead, ResponseHead
from veloxy.h1.parser import RequestParser, ResponseParser, UpgradeRequested

try:
    from veloxy.h1 import _fastpath  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only where the extension was not built
    if sys.platform == "win32":
        pytest.skip(f"the C fast lane is not built here: {exc}", allow_module_level=True)
    _fastpath = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


NOT_BUILT = (f"veloxy.h1._fastpath cannot be imported ({_IMPORT_ERROR}); build it with "
             "`python setup.py build_ext --inplace`")


@pytest.fixture(autouse=True, scope="module")
def _fast_lane_is_built() -> None:
    if _fastpath is None:
        pytest.fail(NOT_BUILT)


def test_the_c_module_is_importable() -> None:
    assert _fastpath is not None, NOT_BUILT
    assert hasattr(_fastpath, "RequestParser") and hasattr(_fastpath, "ResponseParser")


# ============================================================================================
# Harness
# ============================================================================================

def _wellformed(fields: list[bytes]) -> bool:
    return (isinstance(fields, list) and len(fields) % 4 == 0
            and all(s == SEP for s in fields[1::4]) and all(c == CRLF for c in fields[3::4])
            and all(type(f) is bytes for f in fields))


def _typed(*values: Any) -> tuple:
    """Values with their types: True and 1, or b"x" and "x", must not pass for each other."""
    return tuple((type(v).__name__, v) for v in values)


class RequestRecorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_request_head(self, head: RequestHead) -> None:
        assert isinstance(head, RequestHead)
        self.events.append(("head", *_typed(
            head.method, head.target, head.version, head.host, head.content_length,
            head.chunked, head.close, head.upgrade, head.forwarded_for, head.expect_continue),
            tuple(head.headers), _wellformed(head.fields)))

    def on_request_body(self, chunk: bytes) -> None:
        assert type(chunk) is bytes
        if not chunk:
            return  # httptools hands one over for an empty read: bodies are compared as bytes
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + chunk)
        else:
            self.events.append(("body", chunk))

    def on_request_end(self) -> None:
        self.events.append(("end",))


class ResponseRecorder:
    """Records response events; with `parser` set, also what the parser's `idle` and
    `in_body` say from inside each callback (`watch`)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.heads: list[ResponseHead] = []
        self.parser: Any = None
        self.inside: list[tuple] = []

    def _state(self, where: str) -> None:
        if self.parser is not None:
            self.inside.append((where, self.parser.idle, in_body_index(self.parser, self)))

    def _head(self, kind: str, head: ResponseHead) -> None:
        assert isinstance(head, ResponseHead)
        self.heads.append(head)
        self.events.append((kind, *_typed(head.status, head.reason, head.content_length,
                                          head.chunked, head.close, head.upgrade),
                            tuple(head.headers), _wellformed(head.fields)))

    def on_informational(self, head: ResponseHead) -> None:
        self._head("1xx", head)
        self._state("1xx")

    def on_response_head(self, head: ResponseHead) -> None:
        self._head("head", head)
        self._state("head")

    def on_response_body(self, chunk: bytes) -> None:
        assert type(chunk) is bytes
        if not chunk:
            return
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + chunk)
        else:
            self.events.append(("body", chunk))
        self._state("body")

    def on_response_end(self) -> None:
        self.events.append(("end",))
        self._state("end")


class WholeRequestRecorder(RequestRecorder):
    """A handler with the whole-message event, as net/server_connection.py has: the C parser calls
    on_request(head, body) for a request that is all in one read, meaning on_request_head,
    on_request_body (unless body is empty) and on_request_end."""

    def __init__(self) -> None:
        super().__init__()
        self.wholes = 0

    def on_request(self, head: RequestHead, body: bytes) -> None:
        assert type(body) is bytes
        self.wholes += 1
        self.on_request_head(head)
        if body:
            self.on_request_body(body)
        self.on_request_end()


class WholeResponseRecorder(ResponseRecorder):
    """The same for responses, as net/client.py has (on_response)."""

    def __init__(self) -> None:
        super().__init__()
        self.wholes = 0

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        assert type(body) is bytes
        self.wholes += 1
        self._state("whole")
        parser, self.parser = self.parser, None  # the parts are one event: no state of theirs
        self.on_response_head(head)
        if body:
            self.on_response_body(body)
        self.on_response_end()
        self.parser = parser


def in_body_index(parser: Any, recorder: ResponseRecorder) -> int | str | None:
    """Which recorded head `parser.in_body` is (by identity), so that parsers compare."""
    head = parser.in_body
    if head is None:
        return None
    for i, seen in enumerate(recorder.heads):
        if seen is head:
            return i
    return "a head never handed to the handler"


def split(data: bytes, cuts: list[int] | None) -> list[bytes]:
    if not cuts:
        return [data]
    pieces, start = [], 0
    for end in sorted({c for c in cuts if 0 < c < len(data)}):
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return pieces


class Run:
    """What one parser did with a list of reads."""

    def __init__(self, parser: Any, recorder: Any) -> None:
        self.parser = parser
        self.recorder = recorder
        self.whole_run: Run | None = None  # the same reads to a handler with on_request
        self.raised_at: int | None = None  # index of the read whose feed raised
        self.states: list[tuple] = []  # responses: (idle, in_body) after each read

    @property
    def events(self) -> list[tuple]:
        return self.recorder.events


def run_requests(fast: bool, pieces: list[bytes], whole: bool = False, **limits: Any) -> Run:
    recorder = WholeRequestRecorder() if whole else RequestRecorder()
    if fast:
        parser = _fastpath.RequestParser(recorder, RequestParser, RequestHead, **limits)
    else:
        parser = RequestParser(recorder, **limits)
    run = Run(parser, recorder)
    for i, piece in enumerate(pieces):
        try:
            result = parser.feed(piece)
        except UpgradeRequested as exc:
            recorder.events.append(("upgrade", exc.tail))
        except DownstreamError as exc:
            recorder.events.append(("raise", type(exc)))
        else:
            assert result is None
            continue
        run.raised_at = i
        break
    return run


def run_responses(fast: bool, pieces: list[bytes], head_request: bool = False,
                  finish: bool = True, watch: bool = False, whole: bool = False) -> Run:
    recorder = WholeResponseRecorder() if whole else ResponseRecorder()
    if fast:
        parser = _fastpath.ResponseParser(recorder, ResponseParser, ResponseHead)
    else:
        parser = ResponseParser(recorder)
    if watch:
        recorder.parser = parser
    if head_request:
        parser.expect_no_body()
    run = Run(parser, recorder)
    for i, piece in enumerate(pieces):
        try:
            tail = parser.feed(piece)
        except UpstreamProtocolError as exc:
            recorder.events.append(("raise", type(exc)))
            run.raised_at = i
            return run
        if tail is not None:
            recorder.events.append(("tail", tail))
            run.raised_at = i
            return run  # a 101: the rest of the stream is the tunnel's, not HTTP
        run.states.append((parser.idle, in_body_index(parser, recorder)))
    if finish:
        recorder.events.append(("finish", parser.finish()))
    return run


def requests_agree(data: bytes, cuts: list[int] | None = None, **limits: Any) -> Run:
    """The C parser's events, to a handler without and with on_request, are the Python
    parser's. Returns the C parser's run (the one with on_request in `whole_run`)."""
    pieces = split(data, cuts)
    slow = run_requests(False, pieces, **limits)
    fast = run_requests(True, pieces, **limits)
    assert fast.events == slow.events, f"reads: {pieces!r}"
    fast.whole_run = run_requests(True, pieces, whole=True, **limits)
    assert fast.whole_run.events == slow.events, f"reads: {pieces!r}, handler with on_request"
    assert fast.whole_run.parser.declined is fast.parser.declined
    return fast


def responses_agree(data: bytes, cuts: list[int] | None = None, head_request: bool = False,
                    finish: bool = True) -> Run:
    """As requests_agree, for responses (on_response); `feed`'s 101 tail and `finish()`
    are among the events."""
    pieces = split(data, cuts)
    slow = run_responses(False, pieces, head_request, finish)
    fast = run_responses(True, pieces, head_request, finish)
    assert fast.events == slow.events, f"reads: {pieces!r}"
    fast.whole_run = run_responses(True, pieces, head_request, finish, whole=True)
    assert fast.whole_run.events == slow.events, f"reads: {pieces!r}, handler with on_response"
    assert fast.whole_run.parser.declined is fast.parser.declined
    return fast


def every_cut(data: bytes) -> list[list[int] | None]:
    return [None, *([c] for c in range(1, len(data)))]


# ============================================================================================
# Messages
# ============================================================================================

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
BROWSER = (b"GET /search?q=veloxy&lang=en HTTP/1.1\r\nHost: www.example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Referer: https://www.example.com/\r\nConnection: keep-alive\r\n"
           b"Cookie: session=abc123; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\n"
           b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nPriority: u=0, i\r\n\r\n")
POST = (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        b"Content-Length: 17\r\n\r\n{\"name\": \"thing\"}")
HTTP10_KEEP_ALIVE = b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n"
HOP_BY_HOP = (b"GET /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
              b"TE: trailers\r\nTrailer: y\r\n"
              b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Real-IP: 9.9.9.9\r\n"
              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\nX-Kept: k\r\n\r\n")
CHUNKED_POST = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

OK_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n"
NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 120\r\n\r\n"
CHUNKED_200 = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")


# ============================================================================================
# 2. The fast lane engages on the common shapes
# ============================================================================================


@pytest.mark.parametrize("data", [
    pytest.param(GET, id="get-host-only"),
    pytest.param(BROWSER, id="browser-like"),
    pytest.param(POST, id="post-content-length"),
    pytest.param(HTTP10_KEEP_ALIVE, id="http10-keep-alive"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="http10-bare"),
    pytest.param(HOP_BY_HOP, id="hop-by-hop-dropped"),
    pytest.param(b"DELETE /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", id="close"),
    pytest.param(GET + POST + BROWSER, id="pipelined"),
])
def test_fast_lane_serves_common_requests(data: bytes) -> None:
    for cuts in every_cut(data):
        run = requests_agree(data, cuts)
        assert run.parser.declined is False, split(data, cuts)
        assert run.events and run.events[-1] == ("end",)
    # all in one read: one on_request per request
    run = requests_agree(data).whole_run
    assert run is not None
    assert run.recorder.wholes == run.events.count(("end",))


@pytest.mark.parametrize(("data", "head_request"), [
    pytest.param(OK_200, False, id="200-content-length"),
    pytest.param(NO_CONTENT, False, id="204"),
    pytest.param(NOT_MODIFIED, False, id="304"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", True, id="head"),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", False, id="http10"),
    pytest.param(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 False, id="404-close"),
    pytest.param(OK_200 + NO_CONTENT + OK_200, False, id="pipelined"),
])
def test_fast_lane_serves_common_responses(data: bytes, head_request: bool) -> None:
    for cuts in every_cut(data):
        run = responses_agree(data, cuts, head_request)
        assert run.parser.declined is False, split(data, cuts)
        assert ("end",) in run.events
    run = responses_agree(data, head_request=head_request).whole_run
    assert run is not None
    assert run.recorder.wholes == run.events.count(("end",))


def test_factories_choose_the_fast_lane() -> None:
    pure = bool(os.environ.get("VELOXY_PURE_PYTHON"))
    assert parser_module.FAST_LANE is not pure
    request = parser_module.request_parser(RequestRecorder())
    response = parser_module.response_parser(ResponseRecorder())
    if pure:
        assert (type(request), type(response)) == (RequestParser, ResponseParser)
    else:
        assert type(request) is _fastpath.RequestParser
        assert type(response) is _fastpath.ResponseParser


def test_the_bound_request_parser_factory_keeps_the_limits() -> None:
    """request_parser_factory (one per ServerLimits, net/server_connection.py) makes the
    parser request_parser makes, with the limits it was given."""
    limits = {"max_request_line": 32, "max_header_bytes": 256, "max_body_bytes": 4}
    make = parser_module.request_parser_factory(**limits)
    for new in (make, lambda handler: parser_module.request_parser(handler, **limits)):
        recorder = RequestRecorder()
        parser = new(recorder)
        assert type(parser) is type(parser_module.request_parser(RequestRecorder()))
        parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recorder.events[-1] == ("end",)
        statuses = []
        for data in (b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 300 + b"\r\n\r\n",
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"):
            with pytest.raises(DownstreamError) as caught:
                new(RequestRecorder()).feed(data)
            statuses.append(caught.value.status)
        assert statuses == [414, 431, 413]


# ============================================================================================
# 3. Declines: every reason of _fastpath.c, each with the Python parser's events
# ============================================================================================

REQUEST_DECLINES = {
    # framing, upgrades, connection management
    "chunked": CHUNKED_POST,
    "transfer-encoding-gzip": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-and-content-length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "upgrade": (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"\r\n\x81\x05hello"),
    "upgrade-header-alone": b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n",
    "connection-upgrade-alone": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
    "expect-100-continue": (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                            b"Content-Length: 2\r\n\r\nhi"),
    "expect-other": b"GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n",
    "connection-foo": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo\r\nFoo: bar\r\nX: y\r\n\r\n",
    "connection-close-and-keep-alive": (b"GET / HTTP/1.1\r\nHost: h\r\n"
                                        b"Connection: close, keep-alive\r\n\r\n"),
    "connection-token-with-space": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close x\r\n\r\n",
    "proxy-connection": b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n",
    # request line
    "connect": b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    "webdav-method": b"PROPFIND /d HTTP/1.1\r\nHost: h\r\nDepth: 1\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    "method-with-digit": b"GET2 / HTTP/1.1\r\nHost: h\r\n\r\n",
    "absolute-form": b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-quote": b'GET /a"b HTTP/1.1\r\nHost: h\r\n\r\n',
    "target-brace": b"GET /a{b} HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-fragment": b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-pipe-caret-backtick": b"GET /a|b^c`d HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-backslash": b"GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-high-byte": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-space": b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    "double-space": b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    "http-1.2": b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "http-0.9-style": b"GET /\r\n\r\n",
    "version-junk": b"GET / HTTP/1.1x\r\nHost: h\r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\nHost: h\r\n\r\n",
    "request-line-bare-lf": b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    "leading-empty-line": b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    # header lines
    "header-bare-lf": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",
    "trailing-whitespace": b"GET / HTTP/1.1\r\nHost: h\r\nX: a \r\n\r\n",
    "header-bare-cr": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: h\r\nX : v\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
    "name-bad-byte": b"GET / HTTP/1.1\r\nHost: h\r\nX\x01: y\r\n\r\n",
    "name-high-byte": b"GET / HTTP/1.1\r\nHost: h\r\nX\xe9: y\r\n\r\n",
    "value-nul": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "value-del": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
    "value-obs-text": b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
    "value-ctl": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
    # framing and routing facts
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "duplicate-host-case": b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "duplicate-content-length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 3\r\n\r\nabc"),
    "conflicting-content-length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabcd"),
    "content-length-empty": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
    "content-length-sign": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    "content-length-list": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
    "content-length-hex": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc",
    "content-length-19-digits": (b"POST / HTTP/1.1\r\nHost: h\r\n"
                                 b"Content-Length: 0000000000000000003\r\n\r\nabc"),
    "content-length-huge": (b"POST / HTTP/1.1\r\nHost: h\r\n"
                            b"Content-Length: 99999999999999999999999\r\n\r\n"),
    # unfinished heads that can no longer become fast-lane heads
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "garbage-first-byte": b"{\"json\": true}",
    "pending-nul": b"GET /\x00",
}


@pytest.mark.parametrize("data", list(REQUEST_DECLINES.values()), ids=list(REQUEST_DECLINES))
def test_declined_requests_get_the_python_parsers_events(data: bytes) -> None:
    run = requests_agree(data)
    assert run.parser.declined is True
    for cuts in every_cut(data)[1:]:
        run = requests_agree(data, cuts)
        assert run.parser.declined is True, split(data, cuts)


RESPONSE_DECLINES = {
    "chunked": CHUNKED_200,
    "chunked-304": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "upgrade-header": b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
    "connection-foo": (b"HTTP/1.1 200 OK\r\nConnection: foo\r\nFoo: 1\r\nContent-Length: 0\r\n"
                       b"\r\n"),
    "connection-close-and-keep-alive": (b"HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\n"
                                        b"Content-Length: 0\r\n\r\n"),
    "proxy-connection": (b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 0\r\n"
                         b"\r\n"),
    "trailing-whitespace": b"HTTP/1.1 200 OK\r\nX: a\t\r\nContent-Length: 0\r\n\r\n",
    "100-continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
                     b"hi"),
    "103-early-hints": (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                        b"HTTP/1.1 204 No Content\r\n\r\n"),
    "101-switching": (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                      b"Upgrade: websocket\r\n\r\n\x81\x02hi"),
    "close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "close-delimited-http10": b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
    "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
    "status-199": b"HTTP/1.1 199 Odd\r\nContent-Length: 0\r\n\r\n",
    "status-two-digits": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "status-letters": b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n",
    "no-reason-no-space": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "reason-obs-text": b"HTTP/1.1 200 \xc3\x89t\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
    "reason-nul": b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
    "http-1.2": b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "http-2": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "status-line-bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    "header-bare-lf": b"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "value-obs-text": b"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
    "value-nul": b"HTTP/1.1 200 OK\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
    "duplicate-content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
                                 b"\r\nhi"),
    "content-length-garbage": b"HTTP/1.1 200 OK\r\nContent-Length: 2a\r\n\r\nhi",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "pending-implausible": b"HTTP/1.1 200 OK\r\nX: \x80",
}


@pytest.mark.parametrize("data", list(RESPONSE_DECLINES.values()), ids=list(RESPONSE_DECLINES))
def test_declined_responses_get_the_python_parsers_events(data: bytes) -> None:
    run = responses_agree(data)
    assert run.parser.declined is True
    for cuts in every_cut(data)[1:]:
        run = responses_agree(data, cuts)
        assert run.parser.declined is True, split(data, cuts)


def test_declined_head_response_keeps_its_no_body_expectation() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    for cuts in every_cut(data):
        run = responses_agree(data, cuts, head_request=True)
        assert run.parser.declined is True
    # in one read, what follows the head is dropped with it
    assert [e[0] for e in responses_agree(data, head_request=True).events] == [
        "head", "end", "finish"]


def test_what_follows_a_declined_message_stays_with_the_python_parser() -> None:
    recorder = RequestRecorder()
    parser = _fastpath.RequestParser(recorder, RequestParser, RequestHead)
    parser.feed(CHUNKED_POST)
    assert parser.declined is True
    parser.feed(GET)  # a fast-lane shape, but the connection is the Python parser's now
    assert parser.declined is True
    assert recorder.events == run_requests(False, [CHUNKED_POST, GET]).events


# ============================================================================================
# Limits: the C parser must give the Python parser's 413/414/431
# ============================================================================================

LIMIT_CASES = [
    pytest.param(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                 {"max_request_line": 50}, UriTooLong, id="414-target"),
    pytest.param(b"GET /" + b"a" * 45 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                 {"max_request_line": 50}, None, id="line-over-but-target-under"),
    pytest.param(b"GET /" + b"a" * 49 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                 {"max_request_line": 50}, None, id="target-at-limit"),
    pytest.param(b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                 {"max_request_line": 50}, UriTooLong, id="target-one-over"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 200 + b"\r\n\r\n",
                 {"max_header_bytes": 100}, HeaderFieldsTooLarge, id="431-one-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Many: 0123456789\r\n" * 20 + b"\r\n",
                 {"max_header_bytes": 300}, HeaderFieldsTooLarge, id="431-many-fields"),
    # "Host: h" counts 1 + 4 + 4 bytes, "X: v..." 1 + len(value) + 4: 100 in all here
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 86 + b"\r\n\r\n",
                 {"max_header_bytes": 100}, None, id="header-bytes-at-limit"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 87 + b"\r\n\r\n",
                 {"max_header_bytes": 100}, HeaderFieldsTooLarge, id="header-bytes-one-over"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: " + b"1" * 200 + b"\r\n\r\n",
                 {"max_header_bytes": 100}, HeaderFieldsTooLarge, id="431-dropped-field"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: a" + b" " * 20 + b"\r\n\r\n",
                 {"max_header_bytes": 20}, HeaderFieldsTooLarge, id="431-trailing-whitespace"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX:" + b" " * 200 + b"v\r\n\r\n",
                 {"max_header_bytes": 100}, None, id="leading-whitespace-is-not-counted"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
                 {"max_body_bytes": 10}, PayloadTooLarge, id="413"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello worl",
                 {"max_body_bytes": 10}, None, id="body-at-limit"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
                 {"max_body_bytes": 0}, PayloadTooLarge, id="413-zero-limit"),
    pytest.param(GET + b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
                 {"max_body_bytes": 10}, PayloadTooLarge, id="413-pipelined"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"b\r\nhello world\r\n0\r\n\r\n",
                 {"max_body_bytes": 10}, PayloadTooLarge, id="413-chunked"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 300,
                 {"max_request_line": 64, "max_header_bytes": 128}, HeaderFieldsTooLarge,
                 id="endless-head"),
]


@pytest.mark.parametrize(("data", "limits", "error"), LIMIT_CASES)
def test_limits_give_the_python_parsers_status(data: bytes, limits: dict, error: type | None
                                               ) -> None:
    for cuts in every_cut(data):
        run = requests_agree(data, cuts, **limits)
        if cuts is None:
            # the case means what it says: the Python parser gives this outcome
            outcome = run.events[-1][1] if run.events[-1][0] == "raise" else None
            assert outcome is error


def test_head_size_guard_counts_like_the_python_parser_after_a_pipelined_request() -> None:
    """The Python parser's guard against a head that never ends counts the reads wholly in
    an unfinished head: one that began mid-read (after a whole request) is counted from the
    next read on. A head the C parser declines on its size must reach the Python parser so
    that it counts the same bytes: here the head ends well within the limits once the
    whitespace is set aside, and the Python parser serves it."""
    first = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    second = b"GET / HTTP/1.1\r\nHost: h\r\nX:" + b" " * 60 + b"v\r\n\r\n"
    data = first + second
    cut = len(first) + len(second) - len(b"v\r\n\r\n")
    requests_agree(data, [cut], max_request_line=16, max_header_bytes=64)


# ============================================================================================
# Refusals are not deferred: when the Python parser refuses a read, so does the C parser
# ============================================================================================

DEFERRED = [
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\n\n"], {}, id="bare-lf-head-end"),
    pytest.param([b"GET / HTTP/1.1\nHost: h\n\n"], {}, id="bare-lf-everywhere"),
    pytest.param([b"GET /" + b"a" * 100], {"max_request_line": 50}, id="414-before-line-end"),
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 200 + b"\r\nY"],
                 {"max_header_bytes": 100}, id="431-before-head-end"),
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\r\n", b"Host: i\r\nX"], {},
                 id="duplicate-host-before-head-end"),
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\nX"],
                 {}, id="duplicate-content-length-before-head-end"),
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb"], {}, id="bare-cr-in-value"),
    pytest.param([b"GET / HTTP/1.2"], {}, id="bad-version-before-line-end"),
    pytest.param([b" "], {}, id="lone-space"),
    pytest.param([GET + b"I"], {}, id="no-method-begins-so"),
    pytest.param([b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding:"], {},
                 id="transfer-encoding-name-after-content-length"),
]


@pytest.mark.parametrize(("pieces", "limits"), DEFERRED)
def test_refusals_come_with_the_same_read(pieces: list[bytes], limits: dict) -> None:
    fast = run_requests(True, pieces, **limits)
    slow = run_requests(False, pieces, **limits)
    assert slow.raised_at is not None  # the case means what it says
    assert (fast.events, fast.raised_at) == (slow.events, slow.raised_at)


RESPONSE_DEFERRED = {
    "bad-version": [b"HTTP/1.2"],
    "empty-name": [b"HTTP/1.1 204 No Content\r\n:"],
    "content-length-and-chunked": [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                                   b"Transfer-Encoding: chunked\r\nX"],
    "transfer-encoding-name-after-content-length": [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                                    b"Transfer-Encoding:"],
}


@pytest.mark.parametrize("pieces", list(RESPONSE_DEFERRED.values()), ids=list(RESPONSE_DEFERRED))
def test_response_refusals_come_with_the_same_read(pieces: list[bytes]) -> None:
    fast = run_responses(True, pieces)
    slow = run_responses(False, pieces)
    assert slow.raised_at is not None  # the case means what it says
    assert (fast.events, fast.raised_at) == (slow.events, slow.raised_at)


@pytest.mark.parametrize(("pieces", "limits"), [
    pytest.param([b"GET /00000000", b"\x80 HTTP/1.1\r\n\r\n"], {"max_request_line": 8},
                 id="414-then-bad-byte"),
    pytest.param([b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 100 + b"\r\nY",
                  b": \x00\r\n\r\n"], {"max_header_bytes": 50}, id="431-then-bad-byte"),
])
def test_refusals_do_not_depend_on_how_the_head_arrived(pieces: list[bytes], limits: dict
                                                        ) -> None:
    """An unfinished head held by the C parser reaches the Python parser in one read when
    it is declined: the refusal must still be the one the Python parser gives."""
    fast = run_requests(True, pieces, **limits)
    slow = run_requests(False, pieces, **limits)
    assert fast.events == slow.events


# ============================================================================================
# Values, connection management: the attributes the proxy acts on
# ============================================================================================

OWS_CASES = {
    "trailing-space": b"GET / HTTP/1.1\r\nHost: h\r\nX: a   \r\n\r\n",
    "trailing-tab": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\t\r\n\r\n",
    "inner-space-kept": b"GET / HTTP/1.1\r\nHost: h\r\nX: a  b\r\n\r\n",
    "leading-ows": b"GET / HTTP/1.1\r\nHost: h\r\nX: \t a\r\n\r\n",
    "only-ows": b"GET / HTTP/1.1\r\nHost: h\r\nX: \t \r\nY: y\r\n\r\n",
    "empty": b"GET / HTTP/1.1\r\nHost: h\r\nX:\r\nY: y\r\n\r\n",
    "host-trailing-space": b"GET / HTTP/1.1\r\nHost: h \r\n\r\n",
    "host-empty": b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    "xff-trailing-space": (b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4 \r\n"
                           b"X-Forwarded-For: 5.6.7.8\r\n\r\n"),
    "xff-empty-first": (b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\n"
                        b"X-Forwarded-For: 5.6.7.8\r\n\r\n"),
    "content-length-trailing-space": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2 \r\n"
                                      b"\r\nhi"),
    "content-length-leading-zeros": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 002\r\n"
                                     b"\r\nhi"),
    "content-length-18-digits": (b"POST / HTTP/1.1\r\nHost: h\r\n"
                                 b"Content-Length: 999999999999999999\r\n\r\nhi"),
    "colon-in-value": b"GET / HTTP/1.1\r\nHost: h:80\r\nX: a:b: c\r\n\r\n",
}


@pytest.mark.parametrize("data", list(OWS_CASES.values()), ids=list(OWS_CASES))
def test_field_values_agree(data: bytes) -> None:
    for cuts in every_cut(data):
        requests_agree(data, cuts)
    response = data.replace(data[:data.index(b"\r\n")], b"HTTP/1.1 200 OK", 1)
    if b"Content-Length" not in response:
        response = response.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n", 1)
    for cuts in every_cut(response):
        responses_agree(response, cuts)


# Bytes a field value may not hold in the fast lane (or at all), and HTAB, which it may: the
# value scan takes 8 bytes at a time (_fastpath.c has_ctl_del_or_high) and each of these
# must be seen wherever it falls in a word, and at the value's end, where the last bytes are
# not a whole word.
WORD_SCAN_BYTES = [b"\t", b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xff", b"\r", b" "]


@pytest.mark.parametrize("byte", WORD_SCAN_BYTES, ids=lambda b: f"0x{b[0]:02x}")
def test_the_word_at_a_time_value_scan_agrees(byte: bytes) -> None:
    for length in (7, 8, 9, 16, 23, 24, 25):
        for at in range(length):
            value = b"abcdefghijklmnopqrstuvwxy"[:length]
            value = value[:at] + byte + value[at + 1:]
            data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + value + b"\r\n\r\n"
            requests_agree(data)
            responses_agree(b"HTTP/1.1 200 OK\r\nX-Long: " + value
                            + b"\r\nContent-Length: 0\r\n\r\n")


CONNECTION_CASES = {
    "close": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "close-mixed-case-commas": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, cLoSe ,\r\n\r\n",
    "keep-alive-1.1": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n",
    "keep-alive-1.0": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "keep-alive-twice-1.0": (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n"
                             b"Connection: keep-alive\r\n\r\n"),
    "empty-connection": b"GET / HTTP/1.1\r\nHost: h\r\nConnection:\r\n\r\n",
    "1.0-without-keep-alive": b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    "keep-alive-field-alone": b"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n",
    "proxy-connection-close": b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
    "proxy-connection-keep-alive-1.0": (b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n"
                                        b"\r\n"),
    "proxy-connection-other": b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: x\r\n\r\n",
}


@pytest.mark.parametrize("data", list(CONNECTION_CASES.values()), ids=list(CONNECTION_CASES))
def test_connection_management_agrees(data: bytes) -> None:
    for cuts in every_cut(data):
        requests_agree(data, cuts)
    status_line = b"HTTP/1.0 200 OK" if b"HTTP/1.0" in data else b"HTTP/1.1 200 OK"
    response = (status_line + data[data.index(b"\r\n"):-2].replace(b"Host: h\r\n", b"")
                + b"Content-Length: 0\r\n\r\n")
    for cuts in every_cut(response):
        responses_agree(response, cuts)


AFTER_CLOSE = {
    "connection-close": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET,
    "http10": b"GET / HTTP/1.0\r\n\r\n" + GET,
    "http10-body": (b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"
                    b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n"),
    "proxy-connection-close": (b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n"
                               + GET),
    "close-then-empty-line": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n\r\n",
}


@pytest.mark.parametrize("data", list(AFTER_CLOSE.values()), ids=list(AFTER_CLOSE))
def test_what_follows_a_request_that_closes_agrees(data: bytes) -> None:
    for cuts in every_cut(data):
        requests_agree(data, cuts)


RESPONSE_AFTER_CLOSE = {
    "connection-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                         + OK_200),
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi" + NO_CONTENT,
    "http10-then-close-delimited": (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
                                    b"HTTP/1.1 200 OK\r\n\r\n"),
}


@pytest.mark.parametrize("data", list(RESPONSE_AFTER_CLOSE.values()),
                         ids=list(RESPONSE_AFTER_CLOSE))
def test_what_follows_a_response_that_closes_agrees(data: bytes) -> None:
    for cuts in every_cut(data):
        responses_agree(data, cuts)


# ============================================================================================
# 4. Response parser specifics: idle, in_body, finish(), HEAD
# ============================================================================================

STATE_CASES = {
    "200": OK_200,
    "200-pipelined": OK_200 + NO_CONTENT + NOT_MODIFIED + OK_200,
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "declined-chunked": CHUNKED_200 + OK_200,
    "declined-after-fast": OK_200 + CHUNKED_200,
    "informational": b"HTTP/1.1 100 Continue\r\n\r\n" + OK_200,
    "close-delimited": b"HTTP/1.1 200 OK\r\n\r\nabc",
    "200-empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + OK_200,
}


@pytest.mark.parametrize("data", list(STATE_CASES.values()), ids=list(STATE_CASES))
def test_in_body_agrees_after_every_read(data: bytes) -> None:
    for cuts in every_cut(data):
        pieces = split(data, cuts)
        fast = run_responses(True, pieces)
        slow = run_responses(False, pieces)
        assert fast.events == slow.events
        assert [s[1] for s in fast.states] == [s[1] for s in slow.states], pieces


@pytest.mark.parametrize("data", list(STATE_CASES.values()), ids=list(STATE_CASES))
def test_idle_agrees_after_every_read(data: bytes) -> None:
    for cuts in every_cut(data):
        pieces = split(data, cuts)
        fast = run_responses(True, pieces)
        slow = run_responses(False, pieces)
        assert [s[0] for s in fast.states] == [s[0] for s in slow.states], pieces


EMPTY_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("data", [OK_200, OK_200 + NO_CONTENT, CHUNKED_200, EMPTY_200,
                                  EMPTY_200 + OK_200 + EMPTY_200,
                                  b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                                  NO_CONTENT + EMPTY_200 + NOT_MODIFIED],
                         ids=["200", "200-204", "chunked", "200-empty", "empty-200-empty",
                              "404-empty", "204-empty-304"])
def test_in_body_and_idle_agree_inside_the_callbacks(data: bytes) -> None:
    """The handler may look at the parser from its callbacks (the upstream connection asks
    `idle` when the sink releases it)."""
    for cuts in every_cut(data):
        pieces = split(data, cuts)
        fast = run_responses(True, pieces, watch=True)
        slow = run_responses(False, pieces, watch=True)
        assert fast.events == slow.events
        assert fast.recorder.inside == slow.recorder.inside, pieces


@pytest.mark.parametrize("data", [OK_200, OK_200 + NO_CONTENT + NOT_MODIFIED,
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"],
                         ids=["200", "pipelined", "head"])
def test_a_whole_response_leaves_the_parser_idle(data: bytes) -> None:
    """net/client.py marks the connection idle when it hears on_response: the parser must
    agree (as the Python parser does by on_response_end)."""
    head_request = b"1234" in data
    fast = run_responses(True, [data], head_request, watch=True, whole=True)
    slow = run_responses(False, [data], head_request, watch=True)
    assert fast.events == slow.events
    wholes = [state for state in fast.recorder.inside if state[0] == "whole"]
    ends = [state for state in slow.recorder.inside if state[0] == "end"]
    assert len(wholes) == len(ends) > 0
    assert [state[1:] for state in wholes] == [state[1:] for state in ends]


@pytest.mark.parametrize(("data", "complete"), [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False, id="mid-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", False, id="before-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", False, id="mid-head"),
    pytest.param(OK_200, False, id="after-complete"),
    pytest.param(b"", False, id="nothing"),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\nabc", True, id="close-delimited"),
    pytest.param(OK_200 + b"HTTP/1.1 200 OK\r\n\r\nabc", True, id="close-delimited-second"),
])
def test_finish_agrees(data: bytes, complete: bool) -> None:
    for cuts in every_cut(data):
        run = responses_agree(data, cuts)
        assert run.events[-1] == ("finish", complete)


def test_what_follows_a_head_response_in_the_same_read_is_dropped() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n"
    for cuts in every_cut(data):
        run = responses_agree(data, cuts, head_request=True)
        assert run.events[0][0] == "head" and run.events[1] == ("end",)
        assert ("body", b"hello") not in run.events
    # and the connection goes on with the next response, in the fast lane
    for fast in (True, False):
        run = run_responses(fast, [data, OK_200], head_request=True)
        assert [e[0] for e in run.events] == ["head", "end", "head", "body", "end", "finish"]
    assert run_responses(True, [data, OK_200], head_request=True).parser.declined is False


@pytest.mark.parametrize("data", [
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="no-framing"),
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\n", id="no-framing-http10"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", id="content-length"),
    pytest.param(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 9\r\n\r\n",
                 id="close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
])
def test_head_responses_agree(data: bytes) -> None:
    for cuts in every_cut(data):
        responses_agree(data, cuts, head_request=True)


def test_101_returns_the_tunnels_first_bytes_from_both() -> None:
    data = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"\r\n\x81\x02hi")
    run = responses_agree(data)
    assert run.events[-1] == ("tail", b"\x81\x02hi")


def test_upgrade_request_hands_over_the_same_tail() -> None:
    data = REQUEST_DECLINES["upgrade"]
    for cuts in every_cut(data):
        run = requests_agree(GET + data, cuts and [c + len(GET) for c in cuts])
        assert run.events[-1][0] == "upgrade"


# ============================================================================================
# 5. Pipelining: fast-lane messages and declined ones in the same reads
# ============================================================================================

PIPELINES = {  # (served by the fast lane, then declined mid-stream)
    "get-then-chunked": (GET, CHUNKED_POST),
    "get-chunked-get": (GET, CHUNKED_POST + GET),
    "post-then-chunked-then-post": (POST, CHUNKED_POST + POST),
    "get-then-upgrade": (GET, REQUEST_DECLINES["upgrade"]),
    "get-then-expect": (GET, REQUEST_DECLINES["expect-100-continue"] + GET),
    "get-then-bad": (GET + HOP_BY_HOP, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET),
    "get-then-garbage": (GET, b"\x16\x03\x01\x00\x05hello"),
    "post-then-connect": (POST, REQUEST_DECLINES["connect"]),
    "http10-then-te": (HTTP10_KEEP_ALIVE, REQUEST_DECLINES["transfer-encoding-gzip"]),
    "crlf-after-body": (POST, b"\r\n" + GET),
}


@pytest.mark.parametrize(("served", "declined"), list(PIPELINES.values()), ids=list(PIPELINES))
def test_pipelined_requests_declined_mid_stream(served: bytes, declined: bytes) -> None:
    data = served + declined
    for cuts in every_cut(data):
        requests_agree(data, cuts)
    assert requests_agree(served).parser.declined is False
    assert requests_agree(data).parser.declined is True


RESPONSE_PIPELINES = {
    "200-then-chunked": OK_200 + CHUNKED_200,
    "200-then-100-then-200": OK_200 + b"HTTP/1.1 100 Continue\r\n\r\n" + OK_200,
    "204-then-close-delimited": NO_CONTENT + b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    "304-then-garbage": NOT_MODIFIED + b"SSH-2.0-x\r\n\r\n",
    "200-then-101": OK_200 + RESPONSE_DECLINES["101-switching"],
}


@pytest.mark.parametrize("data", list(RESPONSE_PIPELINES.values()), ids=list(RESPONSE_PIPELINES))
def test_pipelined_responses_declined_mid_stream(data: bytes) -> None:
    for cuts in every_cut(data):
        responses_agree(data, cuts)
    assert responses_agree(data).parser.declined is True


# ============================================================================================
# 1. Generated agreement (hypothesis)
# ============================================================================================

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
PCHAR = "0123456789abcXYZ-._~:/?[]@!$&'()*+,;=%"
EDGE = ["\t", " ", "   ", ":", "\x7f", "\x80", "\xe9", "\xff", "\x00", "\x01", "\r", "\n",
        '"', ",", "\r\n ", "\r\n\t"]


def latin1(text: str) -> bytes:
    return text.encode("latin-1")


ows = st.sampled_from(["", "", "", " ", "  ", "\t", " \t", "\t \t "])
methods_common = st.sampled_from(["GET", "GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE",
                                  "OPTIONS", "PATCH", "TRACE"])
methods_odd = st.sampled_from(["CONNECT", "PROPFIND", "MKCOL", "PRI", "get", "Get", "GETX",
                               "G\x00T", "", "ACL", "SEARCH", "QUERY", "M-SEARCH", "LINK"])
targets_plain = st.text(PCHAR, max_size=20).map(lambda t: "/" + t)
targets_odd = st.one_of(
    st.tuples(targets_plain, st.sampled_from(['"', "{", "}", "#", " ", "|", "\\", "^", "`",
                                              "<", ">", "\x80", "\xff", "\x00", "\x7f", "\t"]),
              st.text(PCHAR, max_size=5)).map("".join),
    st.sampled_from(["*", "http://h/x", "h:443", "", "//", "/a?b#c", "/%zz", "/%41"]),
)
versions_common = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
versions_odd = st.sampled_from(["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/1.1 ",
                                "HTTP/1", "HTTP/11", "HTTP/1.1x", ""])

connection_tokens = st.sampled_from(["close", "Close", "CLOSE", "keep-alive", "Keep-Alive",
                                     "KEEP-ALIVE", "upgrade", "Upgrade", "x-foo", "te", "",
                                     " ", "close x", "closed"])
connection_values = st.tuples(
    st.lists(st.tuples(ows, connection_tokens, ows).map("".join), min_size=0, max_size=3),
    st.sampled_from([",", ", ", " ,", ",,"]),
).map(lambda t: t[1].join(t[0]))
length_values = st.one_of(st.integers(0, 12).map(str), st.sampled_from(
    ["", "+1", "-1", "1 2", "0x1", "007", "1,1", "1, 1", "999999999999999999",
     "9999999999999999999", "1.0", "\t3"]))
value_plain = st.text(VCHAR + " \t", max_size=16)
value_edgy = st.lists(st.one_of(st.text(VCHAR, max_size=4), st.sampled_from(EDGE)),
                      max_size=5).map("".join)


def fields_of(names: list[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(names), ows, values, ows).map(
        lambda t: f"{t[0]}:{t[1]}{t[2]}{t[3]}")


host_fields = fields_of(["Host", "host", "HOST"], st.sampled_from(
    ["example.com", "h", "h:8080", "[::1]:80", "", "a b", "h\t"]))
length_fields = fields_of(["Content-Length", "content-length"], length_values)
connection_fields = fields_of(["Connection", "connection", "Proxy-Connection", "Keep-Alive"],
                              connection_values)
forwarded_fields = fields_of(
    ["X-Forwarded-For", "x-forwarded-for", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Proto",
     "TE", "Trailer"],
    st.sampled_from(["1.2.3.4", "1.2.3.4, 5.6.7.8", "", "unknown", "https", "trailers"]))
framing_fields = fields_of(
    ["Transfer-Encoding", "transfer-encoding", "Expect", "Upgrade"],
    st.sampled_from(["chunked", "Chunked", "gzip", "gzip, chunked", "chunked, gzip", "identity",
                     "100-continue", "100-Continue", "websocket", "h2c", ""]))
plain_fields = st.tuples(st.text(TCHAR, min_size=1, max_size=10), ows, value_plain, ows).map(
    lambda t: f"{t[0]}:{t[1]}{t[2]}{t[3]}")
edgy_fields = st.one_of(
    st.tuples(st.text(TCHAR, min_size=1, max_size=6), value_edgy).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(st.lists(st.one_of(st.text(TCHAR, max_size=3),
                                 st.sampled_from([" ", "\t", "@", '"', "\x00", "\x80", "\x7f"])),
                       max_size=4).map("".join), value_plain).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(st.sampled_from([" ", "\t"]), value_plain).map("".join),  # obs-fold line
    st.text(TCHAR, min_size=1, max_size=6),  # no colon
)

tame_request_fields = st.one_of(plain_fields, plain_fields, connection_fields, length_fields,
                                host_fields, forwarded_fields)
wild_request_fields = st.one_of(tame_request_fields, framing_fields, edgy_fields)


def declared_framing(lines: list[str]) -> tuple[int | None, bool]:
    """Content-Length (the first valid one) and chunked, as a generator of bodies sees them."""
    length, chunked = None, False
    for line in lines:
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t")
        if name == "content-length" and value.isdigit() and length is None:
            length = min(int(value), 64)
        elif name == "transfer-encoding" and value.lower().endswith("chunked"):
            chunked = True
    return length, chunked


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    chunks = draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3))
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n"
    body += draw(st.sampled_from([b"", b"X-Trailer: t\r\n"])) + b"\r\n"
    return body


@st.composite
def requests(draw: st.DrawFn, wild: bool) -> tuple[bytes, bytes]:
    """One request: (head, body)."""
    method = draw(st.one_of(methods_common, methods_odd) if wild else methods_common)
    target = draw(st.one_of(targets_plain, targets_plain, targets_odd) if wild else targets_plain)
    version = draw(st.one_of(versions_common, versions_odd) if wild else versions_common)
    fields = wild_request_fields if wild else tame_request_fields
    lines = draw(st.lists(fields, max_size=6))
    if draw(st.integers(0, 5)):  # most requests name a Host
        lines.insert(draw(st.integers(0, len(lines))), "Host: " + draw(st.sampled_from(
            ["example.com", "h", "localhost:8080"])))
    if method in ("POST", "PUT", "PATCH") and draw(st.booleans()):
        lines.append(f"Content-Length: {draw(st.integers(0, 20))}")
    head = f"{method} {target} {version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    length, chunked = declared_framing(lines)
    body = b""
    if chunked:
        body = draw(chunked_bodies())
    elif length:
        body = draw(st.binary(min_size=length, max_size=length))
    return latin1(head), body


def streams(messages: st.SearchStrategy[tuple[bytes, bytes]], max_size: int = 3,
            cut_heads: bool = False) -> st.SearchStrategy[bytes]:
    """Messages back to back, the last one perhaps not all here yet: cut in its body, or
    with `cut_heads` anywhere in it (then the C parser holds an unfinished head)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        parts = draw(st.lists(messages, min_size=1, max_size=max_size))
        data = b"".join(head + body for head, body in parts)
        if draw(st.integers(0, 3)) == 0:
            head, body = parts[-1]
            keep = draw(st.integers(0 if cut_heads else len(head), len(head) + len(body)))
            data = data[:len(data) - len(head) - len(body) + keep]
        return data

    return build()


def request_streams(wild: bool, cut_heads: bool = False) -> st.SearchStrategy[bytes]:
    return streams(requests(wild), cut_heads=cut_heads)


limits_strategy = st.fixed_dictionaries({}, optional={
    "max_request_line": st.sampled_from([8, 16, 24, 40, 8192]),
    "max_header_bytes": st.sampled_from([10, 32, 64, 100, 65536]),
    "max_body_bytes": st.sampled_from([None, 0, 3, 10, 1000]),
})

# No explain phase: it traces every line, and a failing example here is already short.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
SETTINGS = settings(max_examples=80, deadline=None, phases=PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(SETTINGS, max_examples=50)


def draw_cuts(data: st.DataObject, length: int) -> list[int]:
    if length < 2:
        return []
    return data.draw(st.lists(st.integers(1, length - 1), max_size=6), label="cuts")


@SETTINGS
@given(request_streams(wild=False), st.data())
def test_generated_fast_shaped_requests_agree(message: bytes, data: st.DataObject) -> None:
    requests_agree(message)
    requests_agree(message, draw_cuts(data, len(message)))


@SETTINGS
@given(request_streams(wild=True), st.data())
def test_generated_wild_requests_agree(message: bytes, data: st.DataObject) -> None:
    requests_agree(message)
    requests_agree(message, draw_cuts(data, len(message)))


@SETTINGS
@given(request_streams(wild=True), limits_strategy, st.data())
def test_generated_requests_agree_under_limits(message: bytes, limits: dict,
                                              data: st.DataObject) -> None:
    requests_agree(message, **limits)
    requests_agree(message, draw_cuts(data, len(message)), **limits)


@settings(max_examples=60, deadline=None, phases=PHASES)
@given(st.binary(max_size=120), st.data())
def test_generated_garbage_requests_agree(garbage: bytes, data: st.DataObject) -> None:
    garbage += b"\r\n\r\n"  # a head that ends: how soon a refusal comes is tested apart
    requests_agree(garbage)
    requests_agree(GET + garbage, draw_cuts(data, len(GET) + len(garbage)))


@SMALL
@given(request_streams(wild=True, cut_heads=True), limits_strategy, st.data())
def test_generated_refusals_come_with_the_same_read(message: bytes, limits: dict,
                                                    data: st.DataObject) -> None:
    for cuts in ([], draw_cuts(data, len(message))):
        pieces = split(message, cuts)
        fast = run_requests(True, pieces, **limits)
        slow = run_requests(False, pieces, **limits)
        assert (fast.events, fast.raised_at) == (slow.events, slow.raised_at), pieces


# -- responses ---------------------------------------------------------------------------------

statuses_common = st.sampled_from([200, 200, 200, 201, 204, 206, 301, 302, 304, 400, 404, 500,
                                   503, 599])
statuses_odd = st.sampled_from([100, 101, 102, 103, 199, 600, 999, 99, 0])
reasons_plain = st.sampled_from(["OK", "Not Found", "", "Some Reason\twith tab", "x"])
reasons_odd = st.sampled_from(["caf\xe9", "a\x00b", "a\x7fb", "\x80"])
response_framing_fields = fields_of(
    ["Transfer-Encoding", "transfer-encoding", "Upgrade"],
    st.sampled_from(["chunked", "Chunked", "gzip", "gzip, chunked", "websocket", "", "identity"]))
tame_response_fields = st.one_of(plain_fields, plain_fields, connection_fields, length_fields,
                                 fields_of(["TE", "Trailer"], st.just("trailers")))
wild_response_fields = st.one_of(tame_response_fields, response_framing_fields, edgy_fields)


@st.composite
def responses(draw: st.DrawFn, wild: bool, head_request: bool = False
              ) -> tuple[bytes, bytes]:
    """One response: (head, body)."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"] +
                                   (["HTTP/1.2", "HTTP/2", "HTTP/1.1 "] if wild else [])))
    status = draw(st.one_of(statuses_common, statuses_odd) if wild else statuses_common)
    reason = draw(st.one_of(reasons_plain, reasons_odd) if wild else reasons_plain)
    status_line = draw(st.sampled_from([f"{version} {status:03d} {reason}"] * 4 +
                                       ([f"{version} {status:03d}"] if wild else [])))
    lines = draw(st.lists(wild_response_fields if wild else tame_response_fields, max_size=6))
    if draw(st.integers(0, 4)):  # most responses are framed by a Content-Length
        lines.insert(draw(st.integers(0, len(lines))),
                     f"Content-Length: {draw(st.integers(0, 20))}")
    head = status_line + "\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    length, chunked = declared_framing(lines)
    body = b""
    if head_request or status < 200 or status in (204, 304):
        pass
    elif chunked:
        body = draw(chunked_bodies())
    elif length is not None:
        body = draw(st.binary(min_size=length, max_size=length))
    else:
        body = draw(st.binary(max_size=20))  # delimited by the end of the stream
    return latin1(head), body


def response_streams(wild: bool, cut_heads: bool = False
                     ) -> st.SearchStrategy[tuple[bytes, bool]]:
    """(bytes, head_request): after a HEAD response, what follows in the same read is
    dropped, so such a response comes alone."""
    return st.one_of(
        streams(responses(wild, head_request=True), max_size=1, cut_heads=cut_heads).map(
            lambda data: (data, True)),
        streams(responses(wild), cut_heads=cut_heads).map(lambda data: (data, False)),
    )


@SETTINGS
@given(response_streams(wild=False), st.data())
def test_generated_fast_shaped_responses_agree(stream: tuple[bytes, bool],
                                               data: st.DataObject) -> None:
    message, head_request = stream
    responses_agree(message, head_request=head_request)
    responses_agree(message, draw_cuts(data, len(message)), head_request=head_request)


@SETTINGS
@given(response_streams(wild=True), st.data())
def test_generated_wild_responses_agree(stream: tuple[bytes, bool], data: st.DataObject) -> None:
    message, head_request = stream
    responses_agree(message, head_request=head_request)
    responses_agree(message, draw_cuts(data, len(message)), head_request=head_request)


@SMALL
@given(response_streams(wild=True), st.data())
def test_generated_response_in_body_agrees_after_every_read(stream: tuple[bytes, bool],
                                                            data: st.DataObject) -> None:
    message, head_request = stream
    pieces = split(message, draw_cuts(data, len(message)))
    fast = run_responses(True, pieces, head_request)
    slow = run_responses(False, pieces, head_request)
    n = min(len(fast.states), len(slow.states))  # refusal timing: tested on its own
    assert [s[1] for s in fast.states[:n]] == [s[1] for s in slow.states[:n]]


@SMALL
@given(response_streams(wild=True, cut_heads=True), st.data())
def test_generated_response_idle_agrees_after_every_read(stream: tuple[bytes, bool],
                                                         data: st.DataObject) -> None:
    message, head_request = stream
    pieces = split(message, draw_cuts(data, len(message)))
    fast = run_responses(True, pieces, head_request)
    slow = run_responses(False, pieces, head_request)
    n = min(len(fast.states), len(slow.states))  # refusal timing: tested on its own
    assert [s[0] for s in fast.states[:n]] == [s[0] for s in slow.states[:n]]


@SMALL
@given(response_streams(wild=True, cut_heads=True), st.data())
def test_generated_response_refusals_come_with_the_same_read(stream: tuple[bytes, bool],
                                                             data: st.DataObject) -> None:
    message, head_request = stream
    for cuts in ([], draw_cuts(data, len(message))):
        pieces = split(message, cuts)
        fast = run_responses(True, pieces, head_request)
        slow = run_responses(False, pieces, head_request)
        assert (fast.events, fast.raised_at) == (slow.events, slow.raised_at), pieces


@settings(max_examples=60, deadline=None, phases=PHASES)
@given(st.binary(max_size=120), st.data())
def test_generated_garbage_responses_agree(garbage: bytes, data: st.DataObject) -> None:
    garbage += b"\r\n\r\n"
    responses_agree(garbage)
    responses_agree(OK_200 + garbage, draw_cuts(data, len(OK_200) + len(garbage)))
