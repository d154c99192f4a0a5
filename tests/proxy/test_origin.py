"""The built-in origin (`veloxy origin`) behind the proxy, and the event loop selection.

The origin answers according to its query string (?size=16k&delay=50ms&status=404&
chunked=1&close=1), echoes the request in X-Echo-Method / X-Echo-Path /
X-Echo-Body-Length, and /echo returns the request body verbatim.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.client import Client
from tests.support.proc import RssSampler, loaded_libraries

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

MiB = 1 << 20


@pytest.fixture(scope="module")
def via_proxy(origin, module_stack):
    _, start_proxy = module_stack
    return start_proxy(f"http://127.0.0.1:{origin.port}")


def test_origin_query_string_contract(via_proxy):
    with Client(via_proxy.port, timeout=5) as c:
        r = c.request("GET", "/sized?size=16k")
        assert r.status == 200 and len(r.body) == 16 * 1024, r
        assert r.header("x-echo-method") == "GET", r
        assert r.header("x-echo-path") == "/sized?size=16k", r
        assert r.header("x-echo-body-length") == "0", r

        r = c.request("GET", "/missing?status=404&size=10")
        assert r.status == 404 and len(r.body) == 10, r

        r = c.request("GET", "/chunks?chunked=1&size=100k")
        assert r.status == 200 and len(r.body) == 100 * 1024, r

        started = time.monotonic()
        r = c.request("GET", "/later?delay=300ms&size=1")
        assert r.status == 200 and time.monotonic() - started >= 0.28, r

        body = os.urandom(70_000)
        r = c.request("POST", "/echo", body=body)
        assert r.status == 200 and r.body == body, r
        assert r.header("x-echo-method") == "POST" and r.header("x-echo-body-length") == "70000"

        r = c.request("PUT", "/put?size=3", body=b"abcde")
        assert r.header("x-echo-method") == "PUT" and r.header("x-echo-body-length") == "5", r

    # close=1: the origin ends its connection; the client still gets the whole response, and
    # the proxy opens a new upstream connection for the next request.
    with Client(via_proxy.port, timeout=5) as c:
        r = c.request("GET", "/bye?close=1&size=2k")
        assert r.status == 200 and len(r.body) == 2048, r
        r = c.request("GET", "/again?size=5")
        assert r.status == 200 and len(r.body) == 5, r


def test_origin_large_body_streams_through_proxy(via_proxy):
    """?size=64m read slowly: the proxy's RSS stays bounded (no whole-body buffering)."""
    with Client(via_proxy.port, timeout=30, rcvbuf=65536) as c:
        assert c.request("GET", "/warm?size=1").status == 200
        time.sleep(0.1)
        baseline = via_proxy.rss_kib()
        with RssSampler(via_proxy) as rss:
            c.send(b"GET /big?size=64m HTTP/1.1\r\nHost: test.local\r\n\r\n")
            head = c.read_message(method="HEAD")
            assert head.status == 200 and head.header("content-length") == str(64 * MiB), head
            got = len(c.read_exact(MiB))
            time.sleep(0.5)
            while got < 64 * MiB:
                data = c.reader.read_some(timeout=10, max_bytes=min(MiB, 64 * MiB - got))
                assert data, f"connection closed after {got} bytes"
                got += len(data)
    growth = rss.max_kib - baseline
    assert growth < 24 * 1024, f"proxy RSS grew by {growth} KiB relaying 64 MiB"


def test_event_loop_selection_is_honoured(via_proxy, origin, veloxy_loop):
    """VELOXY_LOOP=uvloop loads uvloop into the serving process; =asyncio does not."""
    with Client(via_proxy.port) as c:
        assert c.request("GET", "/loop?size=1").status == 200
    for proc in (via_proxy, origin):
        maps = "".join(loaded_libraries(pid) for pid in proc.tree())
        name = " ".join(proc.args[:1])
        if veloxy_loop == "uvloop":
            assert "uvloop" in maps, f"VELOXY_LOOP=uvloop but `veloxy {name}` did not load uvloop"
        else:
            assert "uvloop" not in maps, f"VELOXY_LOOP=asyncio but `veloxy {name}` loaded uvloop"
