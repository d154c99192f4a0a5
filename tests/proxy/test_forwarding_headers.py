"""X-Forwarded-For / X-Real-IP / X-Forwarded-Proto / X-Forwarded-Host, and Host kept as is."""

from __future__ import annotations

import pytest

from tests.support.backends import ok_script
from tests.support.client import Client

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


@pytest.fixture(scope="module")
def fwd(module_stack):
    make_backend, start_proxy = module_stack
    backend = make_backend(ok_script(b"fwd"), name="fwd")
    proxy = start_proxy(backend)
    return proxy, backend


def send(proxy, target: str, host: str, headers: list[tuple[str, str]]):
    with Client(proxy.port) as c:
        resp = c.request("GET", target, host=host, headers=headers)
        assert resp.status == 200 and resp.body == b"fwd", resp


def test_forwarded_for_appended_and_host_kept(fwd):
    proxy, backend = fwd
    send(proxy, "/fwd-1", "app.example.com:8080", [("X-Forwarded-For", "1.2.3.4")])
    head = backend.find("/fwd-1").head
    assert head.get("x-forwarded-for") == b"1.2.3.4, 127.0.0.1", head.raw
    assert head.get_all("x-real-ip") == [b"127.0.0.1"], head.raw
    assert head.get_all("x-forwarded-proto") == [b"http"], head.raw
    assert head.get_all("x-forwarded-host") == [b"app.example.com:8080"], head.raw
    assert head.get_all("host") == [b"app.example.com:8080"], head.raw


def test_forwarded_for_set_when_absent(fwd):
    proxy, backend = fwd
    send(proxy, "/fwd-2", "plain.example", [])
    head = backend.find("/fwd-2").head
    assert head.get_all("x-forwarded-for") == [b"127.0.0.1"], head.raw
    assert head.get_all("x-forwarded-host") == [b"plain.example"], head.raw
    assert head.get_all("host") == [b"plain.example"], head.raw


def test_forwarded_for_several_lines_combined_in_order(fwd):
    proxy, backend = fwd
    send(proxy, "/fwd-3", "a.example", [("X-Forwarded-For", "1.2.3.4"),
                                        ("X-Forwarded-For", "5.6.7.8")])
    head = backend.find("/fwd-3").head
    # One line or several, the combined value (RFC 9110 §5.3) must list hops in order.
    assert head.get("x-forwarded-for") == b"1.2.3.4, 5.6.7.8, 127.0.0.1", head.raw


def test_client_forwarding_claims_replaced(fwd):
    """X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host describe this hop: the proxy sets
    them itself instead of passing on what the client claimed."""
    proxy, backend = fwd
    send(proxy, "/fwd-4", "real.example", [("X-Real-IP", "6.6.6.6"),
                                           ("X-Forwarded-Proto", "https"),
                                           ("X-Forwarded-Host", "evil.example")])
    head = backend.find("/fwd-4").head
    assert head.get_all("x-real-ip") == [b"127.0.0.1"], head.raw
    assert head.get_all("x-forwarded-proto") == [b"http"], head.raw
    assert head.get_all("x-forwarded-host") == [b"real.example"], head.raw
