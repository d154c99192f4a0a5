"""TLS termination: real TLS clients (Python's ssl, curl) against veloxy on 127.0.0.1.

One proxy per event loop serves most tests, with four listeners: cleartext, TLS with two
certificates (SNI), TLS asking for client certificates (mTLS), and TLS whose certificate
files the reload test replaces.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from tests.support.backends import ScriptedBackend, serve
from tests.support.client import get
from tests.support.tls import http1_get, make_pki, peer_names, start_tls_proxy, tls_connect
from tests.tls.conftest import base_config, tls_listener

pytestmark = pytest.mark.timeout(60)


def _echo_head(req, conn):
    body = req.raw_head
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


class Stack:
    def __init__(self, proxy, client_pki, live_pki, live_files) -> None:
        self.proxy = proxy
        self.plain, self.tls, self.mtls, self.live = (port for _, port in proxy.listeners[:4])
        self.client_pki = client_pki
        self.live_pki = live_pki
        self.live_files = live_files


@pytest.fixture(scope="module")
def stack(pki, origin, veloxy_loop, tmp_path_factory):
    root = tmp_path_factory.mktemp("tls-stack")
    client_pki = make_pki(root / "clients", "client-ca")
    live_pki = make_pki(root / "live", "live-ca")
    live_files = live_pki.issue("site", "localhost")
    heads = ScriptedBackend(serve(_echo_head), name="heads")
    config = base_config(f"http://127.0.0.1:{origin.port}", [
        "127.0.0.1:0",
        tls_listener(pki),
        tls_listener(pki, client_ca=str(client_pki.ca_file)),
        {"address": "127.0.0.1:0",
         "tls": {"cert": str(live_files.cert), "key": str(live_files.key)}},
    ])
    config["upstreams"]["heads"] = {"servers": [heads.url]}
    config["routes"] = [{"match": {"path_prefix": "/heads/"}, "upstream": "heads"},
                        {"upstream": "default"}]
    started: list = []
    proxy = start_tls_proxy(config, root, veloxy_loop, 4, started)
    try:
        yield Stack(proxy, client_pki, live_pki, live_files)
        proxy.stop()
    finally:
        if not proxy.stopped:
            proxy.kill()
        heads.close()


@pytest.mark.process
def test_http1_over_tls_and_forwarded_proto(stack, pki):
    with tls_connect(stack.tls, pki.client_context(["http/1.1"]), "localhost") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.selected_alpn_protocol() == "http/1.1"
        for _ in range(2):  # keep-alive on the same TLS connection
            status, _, body = http1_get(sock, "/heads/x")
            assert status == 200
            assert b"X-Forwarded-Proto: https\r\n" in body
    plain = get(stack.plain, "/heads/x")
    assert plain.status == 200 and b"X-Forwarded-Proto: http\r\n" in plain.body


@pytest.mark.parametrize(("server_name", "expected"), [
    ("b.test", {"b.test", "*.w.test"}),
    ("x.w.test", {"b.test", "*.w.test"}),
    ("localhost", {"localhost"}),
    ("other.test", {"localhost"}),     # unknown name: the default certificate
    ("a.b.w.test", {"localhost"}),     # a wildcard covers one label only
    (None, {"localhost"}),             # no SNI at all
])
@pytest.mark.process
def test_sni_picks_the_certificate(stack, pki, server_name, expected):
    ctx = pki.client_context()
    ctx.check_hostname = False  # the names are checked below, against the expectation
    with tls_connect(stack.tls, ctx, server_name) as sock:
        assert peer_names(sock) == expected
        status, _, _ = http1_get(sock, "/?size=5")
        assert status == 200


@pytest.mark.process
def test_alpn_negotiates_h2_and_http11(stack, pki):
    with tls_connect(stack.tls, pki.client_context(["h2", "http/1.1"]), "localhost") as s:
        assert s.selected_alpn_protocol() == "h2"
    with tls_connect(stack.tls, pki.client_context(["http/1.1"]), "localhost") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    with tls_connect(stack.tls, pki.client_context(), "localhost") as s:  # no ALPN
        assert s.selected_alpn_protocol() is None
        assert http1_get(s)[0] == 200


@pytest.mark.process
def test_tls12_modern_cipher_and_session_resumption(stack, pki):
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(stack.tls, ctx, "localhost") as first:
        assert first.version() == "TLSv1.2"
        name, _, _ = first.cipher()
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
        session = first.session
        assert not first.session_reused
    raw = socket.create_connection(("127.0.0.1", stack.tls), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as second:
        assert second.session_reused  # a session ticket from the first handshake
        assert http1_get(second)[0] == 200


@pytest.mark.process
def test_tls11_is_refused(stack, pki):
    ctx = pki.client_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)), \
            tls_connect(stack.tls, ctx, "localhost"):
        pass


@pytest.mark.process
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http11_and_h2(stack, pki):
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "5", flag, "--cacert", str(pki.ca_file),
             "--resolve", f"b.test:{stack.tls}:127.0.0.1",
             "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}",
             f"https://b.test:{stack.tls}/?size=70000"],
            capture_output=True, text=True, timeout=10)
        assert out.stdout == f"{version} 200 70000", out.stderr


@pytest.mark.process
def test_mtls_refuses_a_bad_client_certificate(stack, pki, tmp_path):
    other_pki = make_pki(tmp_path / "others", "other-ca")

    def attempt(issuer) -> int:
        ctx = pki.client_context()
        if issuer is not None:
            issuer.ca.issue_cert("client.test").configure_cert(ctx)
        with tls_connect(stack.mtls, ctx, "localhost") as sock:
            return http1_get(sock, timeout=3)[0]  # TLS 1.3: the refusal shows on first read

    assert attempt(stack.client_pki) == 200
    for issuer in (None, other_pki):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            attempt(issuer)
    # the listeners without client_ca do not ask for one
    with tls_connect(stack.tls, pki.client_context(), "localhost") as sock:
        assert http1_get(sock)[0] == 200


@pytest.mark.process
def test_certificates_reload_on_sighup(stack, tmp_path):
    old = tls_connect(stack.live, stack.live_pki.client_context(), "localhost")
    assert http1_get(old)[0] == 200
    # A new certificate from a new CA replaces the files; SIGHUP.
    new_pki = make_pki(tmp_path / "new", "new-ca")
    leaf = new_pki.ca.issue_cert("localhost", "renewed.test")
    leaf.private_key_pem.write_to_path(str(stack.live_files.key))
    leaf.cert_chain_pems[0].write_to_path(str(stack.live_files.cert))
    stack.proxy.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    names: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with tls_connect(stack.live, new_pki.client_context(), "localhost") as sock:
                names = peer_names(sock)
                assert http1_get(sock)[0] == 200
                break
        except ssl.SSLError:
            time.sleep(0.05)  # the reload has not run yet
    assert names == {"localhost", "renewed.test"}
    # The connection made before the reload keeps working.
    assert http1_get(old)[0] == 200
    old.close()


def _check(tmp_path, text: str) -> tuple[int, str]:
    from veloxy.cli import main

    path = tmp_path / "check.yaml"
    path.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check", str(path)])
    return code, err.getvalue()


def test_check_reports_missing_and_mismatched_files(pki, tmp_path):
    cert, key, b_key = pki.certs["default"].cert, pki.certs["default"].key, pki.certs["b"].key
    tail = """routes: [{upstream: a}]
upstreams: {a: {servers: ["http://127.0.0.1:9001"]}}
"""
    code, err = _check(tmp_path, f"""listen: [{{address: "127.0.0.1:8443",
  tls: {{cert: {tmp_path}/nope.pem, key: {key}}}}}]
""" + tail)
    assert code == 2
    assert f"listen.0.tls.cert: no such file: {tmp_path}/nope.pem" in err
    code, err = _check(tmp_path, f"""listen: [{{address: "127.0.0.1:8443",
  tls: {{cert: {cert}, key: {b_key}}}}}]
""" + tail)
    assert code == 2, err
    assert "listen.0.tls.cert: cannot load certificate" in err
    assert "KEY_VALUES_MISMATCH" in err
    code, err = _check(tmp_path, f"""listen:
  - {{address: "127.0.0.1:8443", tls: {{cert: {cert}, key: {key}}}}}
  - {{address: "127.0.0.1:8080", h2c: true}}
routes: [{{upstream: a}}]
upstreams: {{a: {{servers: ["https://127.0.0.1:9001"], tls: {{ca: {pki.ca_file}}}}}}}
""")
    assert code == 0, err
    code, err = _check(tmp_path, f"""listen: ["127.0.0.1:8080"]
routes: [{{upstream: a}}]
upstreams: {{a: {{servers: ["https://127.0.0.1:9001"], tls: {{ca: {cert}}}}}}}
""")
    assert code == 0, err  # a certificate file is a valid (one-certificate) CA bundle
    code, err = _check(tmp_path, f"""listen: ["127.0.0.1:8080"]
routes: [{{upstream: a}}]
upstreams: {{a: {{servers: ["https://127.0.0.1:9001"], tls: {{ca: {key}}}}}}}
""")
    assert code == 2 and "upstreams.a.tls.ca: cannot load CA bundle" in err, err
