"""TLS toward upstreams: https:// servers verified by default, per-group CA, server name
and insecure_skip_verify; pooled TLS connections reused. The upstream is a scripted
backend speaking TLS (Python's ssl) on 127.0.0.1."""

from __future__ import annotations

import ssl

import pytest

from tests.support.backends import ScriptedBackend
from tests.support.client import Client, get
from tests.support.tls import start_tls_proxy
from tests.support.wire import Reader
from tests.tls.conftest import base_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


def tls_backend(pki, label: str = "up") -> ScriptedBackend:
    """A keep-alive HTTP/1.1 backend behind TLS with a certificate for upstream.test only."""
    files = pki.issue(label, "upstream.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.cert), str(files.key))

    def script(conn) -> None:
        conn.sock.settimeout(5)
        try:
            conn.sock = ctx.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError):
            conn.backend.event("handshake-failed").set()
            return
        conn.reader = Reader(conn.sock, log=conn.received)
        while True:
            req = conn.read_request()
            if req is None:
                return
            body = f"tls upstream saw {req.target} on connection {conn.index}".encode()
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return ScriptedBackend(script, name="tls-backend")


def test_https_upstreams(pki, veloxy_loop, tmp_path, proxies):
    """Verification on by default; the group's CA and server name; insecure_skip_verify;
    pooled TLS connections reused."""
    backend = tls_backend(pki)
    url = f"https://127.0.0.1:{backend.port}"
    timeouts = {"connect": "2s", "response_header": "5s", "read": "5s"}
    groups = {
        "verified": {"servers": [url], "timeouts": timeouts,
                     "tls": {"ca": str(pki.ca_file), "server_name": "upstream.test"}},
        # the system trust store does not know the test CA
        "system": {"servers": [url], "timeouts": timeouts},
        # the right CA, but the URL's host (127.0.0.1) is not in the certificate
        "ca": {"servers": [url], "timeouts": timeouts, "tls": {"ca": str(pki.ca_file)}},
        "skip": {"servers": [url], "timeouts": timeouts,
                 "tls": {"insecure_skip_verify": True}},
    }
    config = base_config(url, ["127.0.0.1:0"])
    config["upstreams"] = groups
    config["routes"] = [{"match": {"path_prefix": f"/{name}/"}, "upstream": name}
                        for name in groups]
    try:
        proxy = start_tls_proxy(config, tmp_path, veloxy_loop, 1, proxies)
        with Client(proxy.port) as client:
            for i in range(5):
                resp = client.request("GET", f"/verified/r{i}")
                assert resp.status == 200
                assert resp.body == f"tls upstream saw /verified/r{i} on connection 0".encode()
        assert backend.accepted == 1  # one TLS connection, reused from the pool
        for name, expected, why in (("system", 502, b"unable to get local issuer"),
                                    ("ca", 502, b"IP address mismatch"),
                                    ("skip", 200, b"tls upstream saw /skip/x")):
            resp = get(proxy.port, f"/{name}/x")
            assert resp.status == expected, (name, resp)
            assert why in resp.body, resp.body
    finally:
        for p in proxies:
            p.stop()
        backend.close()
