"""TLS and HTTP/2 helpers for tests: certificates made with trustme at test time, Python ssl
clients, a small blocking HTTP/2 client on the h2 package, and proxies with TLS listeners.

Every socket operation has a timeout; nothing here mocks the network.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import trustme

from tests.support.client import Client
from tests.support.proc import VeloxyProcess

TIMEOUT = 5.0


@dataclass
class CertFiles:
    cert: Path
    key: Path


@dataclass
class Pki:
    """A CA and certificates it issued, written as PEM files under `root`."""

    root: Path
    ca: trustme.CA
    ca_file: Path
    certs: dict[str, CertFiles] = field(default_factory=dict)

    def issue(self, label: str, *names: str) -> CertFiles:
        leaf = self.ca.issue_cert(*names)
        files = CertFiles(self.root / f"{label}.cert.pem", self.root / f"{label}.key.pem")
        leaf.cert_chain_pems[0].write_to_path(str(files.cert))
        for pem in leaf.cert_chain_pems[1:]:
            pem.write_to_path(str(files.cert), append=True)
        leaf.private_key_pem.write_to_path(str(files.key))
        self.certs[label] = files
        return files

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


def make_pki(root: Path, name: str = "ca") -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = root / f"{name}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(root, ca, ca_file)


def tls_connect(port: int, ctx: ssl.SSLContext, server_hostname: str | None,
                timeout: float = TIMEOUT) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def peer_names(sock: ssl.SSLSocket) -> set[str]:
    """DNS names of the certificate the server presented (parsed without verification)."""
    der = sock.getpeercert(binary_form=True)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def http1_get(sock: ssl.SSLSocket, target: str = "/", host: str = "test.local",
              timeout: float = TIMEOUT) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one keep-alive GET on a TLS socket, read by the black-box
    suite's strict client."""
    response = Client.over(sock, timeout).request("GET", target, host)
    return response.status, response.raw_head, response.body


class H2Client:
    """A blocking HTTP/2 client over a socket (TLS with ALPN h2, or cleartext h2c)."""

    def __init__(self, sock: socket.socket, timeout: float = TIMEOUT) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.conn.increment_flow_control_window(16 << 20)
        self.events: list[h2.events.Event] = []
        self.responses: dict[int, dict] = {}
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                authority: str = "test.local", end: bool = True,
                headers: list[tuple[str, str]] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "https"),
                (":authority", authority), *(headers or [])]
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in hdrs],
                               end_stream=end and not body)
        self.responses[sid] = {"status": None, "headers": [], "body": bytearray(),
                               "ended": False, "reset": None}
        if body:
            self._send_body(sid, body)
        self.flush()
        return sid

    def _send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.read_once()
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(piece), end_stream=end and not view)
        self.flush()

    def read_once(self) -> list[h2.events.Event]:
        data = self.sock.recv(1 << 16)
        if not data:
            self.closed = True
            raise ConnectionError("server closed the connection")
        events = self.conn.receive_data(data)
        for ev in events:
            self.events.append(ev)
            sid = getattr(ev, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                r["headers"] = ev.headers
                r["status"] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                if r is not None:
                    r["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r["reset"] = ev.error_code
        self.flush()
        return events

    def wait(self, sids: list[int], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.responses[s]["ended"] or self.responses[s]["reset"] is not None
                      for s in sids):
            if time.monotonic() > deadline:
                raise TimeoutError("streams not finished")
            self.read_once()

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for ev in self.events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                return ev
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def h2_connect(port: int, pki: Pki | None, timeout: float = TIMEOUT) -> H2Client:
    """HTTP/2 over TLS with ALPN h2 (pki given), or h2c with prior knowledge (pki None)."""
    if pki is None:
        return H2Client(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    sock = tls_connect(port, pki.client_context(["h2"]), "localhost", timeout)
    assert sock.selected_alpn_protocol() == "h2"
    return H2Client(sock)


def start_tls_proxy(config: dict, tmp_path: Path, loop: str, listeners: int,
                    started: list[VeloxyProcess], env: dict | None = None) -> VeloxyProcess:
    """`veloxy serve --config` with `config`; waits for `listeners` listening lines."""
    import yaml

    path = tmp_path / f"veloxy-{len(started)}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = VeloxyProcess(["serve", "--config", str(path)], loop, env=env)
    started.append(proc)
    proc.wait_ready()
    deadline = time.monotonic() + 10
    while len(proc.listeners) < listeners and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(proc.listeners) >= listeners, proc.describe()
    return proc


def stop_all(started: list[VeloxyProcess]) -> list[str]:
    problems = []
    for proc in started:
        if proc.stopped:
            continue
        try:
            proc.stop()
        except AssertionError as exc:
            problems.append(str(exc))
    return problems
