"""Malformed or oversized requests: the exact 4xx, the connection closed, nothing upstream.

One proxy per loop serves every case (a module-scoped fixture keeps the suite fast); each
case compares what the backend had received before and after it.
"""

from __future__ import annotations

import time

import pytest

from tests.support.backends import ok_script
from tests.support.client import Client
from tests.support.config import proxy_config

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]

LIMITS = {"max_request_line": 1024, "max_header_bytes": 4096, "max_body_bytes": 1024,
          "header_timeout": "1s", "idle_timeout": "5s"}

H = b"Host: test.local\r\n"
TLS_CLIENT_HELLO = (b"\x16\x03\x01\x00\xc4\x01\x00\x00\xc0\x03\x03" + bytes(range(32))
                    + b"\x00\x00\x20" + bytes(range(0x20, 0x40)) + b"\x01\x00" + b"\x00" * 120)

# (id, bytes sent, expected status, strict) — strict: not one byte may reach the backend.
# Non-strict cases are errors found in the body, after a streaming proxy may already have
# sent the head: then the offending bytes must not reach the backend.
CASES = [
    ("content-length-with-transfer-encoding",
     b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, True),
    ("differing-content-lengths",
     b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400, True),
    ("differing-content-length-list",
     b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400, True),
    ("negative-content-length",
     b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, True),
    ("invalid-chunk-size",
     b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     400, False),
    ("space-in-header-name", b"GET /x HTTP/1.1\r\n" + H + b"Bad Name: x\r\n\r\n", 400, True),
    ("control-char-in-header-name", b"GET /x HTTP/1.1\r\n" + H + b"X\x01: y\r\n\r\n", 400, True),
    ("space-before-colon", b"GET /x HTTP/1.1\r\n" + H + b"X-Foo : bar\r\n\r\n", 400, True),
    ("control-char-in-header-value",
     b"GET /x HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400, True),
    ("nul-in-header-value", b"GET /x HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, True),
    ("obs-fold", b"GET /x HTTP/1.1\r\n" + H + b"X-A: a\r\n folded\r\n\r\n", 400, True),
    ("bare-cr-in-header", b"GET /x HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400, True),
    ("missing-host", b"GET /x HTTP/1.1\r\nX-A: a\r\n\r\n", 400, True),
    ("duplicate-host", b"GET /x HTTP/1.1\r\n" + H + b"Host: other.local\r\n\r\n", 400, True),
    ("tls-client-hello", TLS_CLIENT_HELLO, 400, True),
    ("request-line-too-long",
     b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, True),
    ("head-too-large",
     b"GET /x HTTP/1.1\r\n" + H + b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"p" * 50)
                                           for i in range(100)) + b"\r\n", 431, True),
    ("content-length-over-max-body",
     b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 2048\r\n\r\n", 413, True),
    ("chunked-body-over-max-body",
     b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n800\r\n" + b"Z" * 2048
     + b"\r\n0\r\n\r\n", 413, False),
]


@pytest.fixture(scope="module")
def guarded(module_stack):
    make_backend, start_proxy = module_stack
    backend = make_backend(ok_script(b"should not happen"), name="guarded")
    proxy = start_proxy(config=proxy_config(backend, limits=LIMITS))
    return proxy, backend


def assert_rejected(proxy, backend, data: bytes, status: int, strict: bool,
                    timeout: float = 3.0) -> float:
    before = backend.received()
    started = time.monotonic()
    with Client(proxy.port, timeout=timeout) as c:
        c.send(data)
        resp = c.read_response(timeout=timeout)
        elapsed = time.monotonic() - started
        assert resp.raw_head.startswith(b"HTTP/1.1 %d" % status), (
            f"expected {status}, got {resp}")
        assert c.wait_closed(2.0), f"connection left open after {status}"
    time.sleep(0.03)  # anything forwarded would have arrived by now
    leaked = backend.received()[len(before):]
    if strict:
        assert leaked == b"", f"the bad request reached the backend: {leaked[:300]!r}"
    else:
        body_start = data.index(b"\r\n\r\n") + 4
        offending = data[body_start:][:64]
        assert offending not in leaked, f"the bad body reached the backend: {leaked[:300]!r}"
    return elapsed


@pytest.mark.parametrize("data,status,strict", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_rejected(guarded, data, status, strict):
    proxy, backend = guarded
    assert_rejected(proxy, backend, data, status, strict)


def test_incomplete_head_times_out_with_408(guarded):
    proxy, backend = guarded
    elapsed = assert_rejected(proxy, backend, b"GET /slowloris HTTP/1.1\r\n" + H + b"X-A: b",
                              408, True, timeout=5.0)
    assert 0.8 <= elapsed <= 3.0, f"408 after {elapsed:.2f}s with header_timeout: 1s"


def test_good_request_still_served(guarded):
    """The same proxy forwards a valid request: the cases above failed for their bytes."""
    proxy, backend = guarded
    with Client(proxy.port) as c:
        resp = c.request("GET", "/fine")
    assert resp.status == 200 and resp.body == b"should not happen"
    assert backend.find("/fine")
