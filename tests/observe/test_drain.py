"""limits.shutdown_delay: after SIGTERM the proxy goes on serving for the delay while
/healthz says 503 and every answer closes its connection, so that a balancer takes it out and
kept-alive clients leave before anything is closed under them."""

from __future__ import annotations

import signal
import time

import pytest

from tests.observe.conftest import admin_port
from tests.support.backends import ok_script
from tests.support.client import Client, get
from tests.support.config import proxy_config

pytestmark = [pytest.mark.timeout(40), pytest.mark.process]

DELAY_S = 1.5


def test_shutdown_delay_drains_before_closing(start_proxy, make_backend) -> None:
    backend = make_backend(ok_script(b"A"))
    config = proxy_config(backend, limits={"shutdown_delay": f"{DELAY_S}s"})
    proxy = start_proxy(config={**config, "admin": "127.0.0.1:0"})
    admin = admin_port(proxy)
    kept = Client(proxy.port, timeout=5)
    try:
        first = kept.request("GET", "/1")
        assert first.status == 200 and first.header("connection") != "close"
        assert get(admin, "/healthz").status == 200
        proxy.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        deadline = sent + 1.0
        while get(admin, "/healthz").status != 503:
            assert time.monotonic() < deadline, "/healthz still 200 after SIGTERM"
            time.sleep(0.02)
        time.sleep(0.3)
        # The idle kept-alive connection was left open: its next request is answered, and
        # the answer closes it.
        again = kept.request("GET", "/2")
        assert again.status == 200 and again.body == b"A"
        assert again.header("connection") == "close"
        # New connections are still accepted during the delay, one request each.
        fresh = get(proxy.port, "/3", timeout=5)
        assert fresh.status == 200 and fresh.header("connection") == "close"
        assert time.monotonic() - sent < DELAY_S, "the checks above took longer than the delay"
        proxy.expect_exit(DELAY_S + 5, 0)
        assert time.monotonic() - sent >= DELAY_S
    finally:
        kept.close()
