"""HTTP/2 conformance: h2spec (strict mode, every group) over TLS and on an `h2c: true`
listener, and the answer to a bad connection preface, byte by byte: GOAWAY(PROTOCOL_ERROR)
to bytes meant as HTTP/2, HTTP/1.1 400 to a malformed HTTP/1.1 request on the same listener.
h2spec runs with the C lanes (h1/_fastpath.c, http2/_hpack.c) and without them.

h2spec is not packaged for Debian or PyPI; it is looked for in $VELOXY_H2SPEC, then on
PATH, then at ../shared/tools/h2spec beside the repository (see that directory's README)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from hyperframe.frame import Frame, GoAwayFrame

from tests.support.tls import start_tls_proxy, tls_connect
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_ERROR = 1


def find_h2spec() -> tuple[str | None, str]:
    """(path, "") or (None, why it is not there)."""
    explicit = os.environ.get("VELOXY_H2SPEC")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"VELOXY_H2SPEC={explicit} is not an executable file"
    on_path = shutil.which("h2spec")
    if on_path:
        return on_path, ""
    beside = REPO.parent / "shared" / "tools" / "h2spec"
    if os.access(beside, os.X_OK):
        return str(beside), ""
    return None, (f"h2spec not found: not in $VELOXY_H2SPEC, not on PATH, not at {beside} "
                  "(see ../shared/tools/README.md)")


H2SPEC, MISSING = find_h2spec()
needs_h2spec = pytest.mark.skipif(H2SPEC is None, reason=MISSING)


@pytest.fixture(scope="module")
def stack(pki, origin, veloxy_loop, tmp_path_factory):
    config = base_config(f"http://127.0.0.1:{origin.port}",
                         [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}])
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("h2spec"), veloxy_loop, 2, [])
    yield proxy
    proxy.stop()


def tls_port(proxy) -> int:
    return proxy.listeners[0][1]


def h2c_port(proxy) -> int:
    return proxy.listeners[1][1]


def run_h2spec(port: int, tls: bool, tmp_path: Path) -> None:
    assert H2SPEC is not None
    report = tmp_path / f"h2spec-{'tls' if tls else 'h2c'}.xml"
    args = [H2SPEC, "-S", "-h", "127.0.0.1", "-p", str(port), "-o", "5",
            "--junit-report", str(report)]
    if tls:
        args += ["-t", "-k"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=90)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    # h2spec marks a failed case with U+00D7
    failures = [line for line in out.stdout.splitlines() if "\u00d7" in line]
    assert out.returncode == 0 and " 0 failed" in summary and " 0 skipped" in summary, (
        summary + "\n" + "\n".join(failures) + "\n" + out.stderr[-2000:])
    assert report.exists()


@needs_h2spec
def test_h2spec_strict_over_tls(stack, tmp_path):
    run_h2spec(tls_port(stack), True, tmp_path)


@needs_h2spec
def test_h2spec_strict_on_the_h2c_listener(stack, tmp_path):
    run_h2spec(h2c_port(stack), False, tmp_path)


@needs_h2spec
def test_h2spec_strict_without_the_c_lanes(pki, origin, veloxy_loop, tmp_path):
    """The same, with the Python fallbacks alone (VELOXY_PURE_PYTHON=1: hpack's decoder and
    encoder instead of http2/_hpack.c's lane), as on a machine where it was not built."""
    config = base_config(f"http://127.0.0.1:{origin.port}",
                         [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}])
    proxy = start_tls_proxy(config, tmp_path, f"{veloxy_loop}+python", 2, [])
    try:
        run_h2spec(tls_port(proxy), True, tmp_path)
        run_h2spec(h2c_port(proxy), False, tmp_path)
    finally:
        proxy.stop()


def _read_to_close(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def _frames(data: bytes) -> list[Frame]:
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    assert not data, "a partial frame at the end"
    return frames


def _goaway_after(sock: socket.socket, sent: bytes) -> GoAwayFrame:
    sock.sendall(sent)
    frames = _frames(_read_to_close(sock))
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert len(goaways) == 1 and frames[-1] is goaways[0], frames
    return goaways[0]


@pytest.mark.parametrize("sent", [
    b"INVALID CONNECTION PREFACE\r\n\r\n",     # h2spec's 3.5/2: no HTTP/1.x version
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\rQ",        # the preface, wrong in its last byte
    b"PRI * HTTP/1.1\r\nHost: x\r\n\r\n",       # "PRI " is never an HTTP/1.1 request here
])
def test_h2c_listener_answers_bytes_meant_as_http2_with_goaway(stack, sent):
    with socket.create_connection(("127.0.0.1", h2c_port(stack)), timeout=5) as sock:
        goaway = _goaway_after(sock, sent)
    assert goaway.error_code == PROTOCOL_ERROR and goaway.last_stream_id == 0


def test_h2c_listener_answers_a_malformed_http11_request_with_400(stack):
    with socket.create_connection(("127.0.0.1", h2c_port(stack)), timeout=5) as sock:
        sock.sendall(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]


def test_h2c_listener_waits_for_a_request_line_in_pieces(stack):
    with socket.create_connection(("127.0.0.1", h2c_port(stack)), timeout=5) as sock:
        for piece in (b"GE", b"T /?size=3 HT", b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            sock.sendall(piece)
        data = _read_to_close(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: 3\r\n" in data.lower(), data


def test_tls_sends_goaway_before_closing_on_a_bad_preface(stack, pki):
    sock = tls_connect(tls_port(stack), pki.client_context(["h2"]), "localhost", 5)
    try:
        assert sock.selected_alpn_protocol() == "h2"
        goaway = _goaway_after(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        sock.close()
    assert goaway.error_code == PROTOCOL_ERROR
