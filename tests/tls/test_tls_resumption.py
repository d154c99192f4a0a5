"""TLS session resumption (TLS 1.3 tickets) on a listener with 2 workers.

A ticket is sealed with the ticket key of the context that issued it. In fork mode every
worker inherits the listener's contexts, made before the fork, so a ticket issued by one
worker resumes on the other; in spawn mode each worker builds its own contexts, and the
supervisor hands its key over (tls/ticket_keys.py), with the same result. Which worker holds
a connection is read from /proc: the worker process that has the server side of the TCP
connection open. And tls/ticket_keys.py itself: a key read from one context and set on
another makes the second open the first's tickets."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from tests.support.proc import VeloxyProcess
from tests.support.tls import Pki, http1_get, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener
from veloxy.lab.procs import established_inodes, socket_inodes
from veloxy.tls.ticket_keys import KEY_BYTES, get_ticket_keys, set_ticket_keys

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]

#: Connections tried until both workers have been seen (SO_REUSEPORT spreads them by hash).
TRIES = 40


def _worker_of(proxy: VeloxyProcess, port: int, sock: socket.socket) -> int:
    """The pid of the worker holding the server side of `sock`."""
    client_port = sock.getsockname()[1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        inodes = established_inodes(local_port=port, remote_port=client_port)
        for pid in proxy.children():
            if inodes & socket_inodes([pid]):
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def _connect(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
             ) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except BaseException:
        raw.close()
        raise


def _resumption_by_worker(proxy: VeloxyProcess, pki: Pki) -> dict[str, bool]:
    """Take a ticket from one worker, then offer it on new connections until one lands on
    each worker: {"same": resumed on the issuing worker, "other": on the other one}."""
    port = proxy.port
    ctx = pki.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with _connect(port, ctx, None) as first:
        issuer = _worker_of(proxy, port, first)
        status, _, _ = http1_get(first, "/?size=10")  # tickets come before the answer
        assert status == 200
        session = first.session
        assert session is not None and session.has_ticket, "the server sent no ticket"
        # OpenSSL's default lifetime (SSL_CTX's 7200 s), what docs/config.md states.
        assert session.ticket_lifetime_hint == 7200, session.ticket_lifetime_hint
    seen: dict[str, bool] = {}
    for _ in range(TRIES):
        with _connect(port, ctx, session) as sock:
            worker = _worker_of(proxy, port, sock)
            status, _, _ = http1_get(sock, "/?size=10")
            assert status == 200
            seen.setdefault("same" if worker == issuer else "other", sock.session_reused)
        if len(seen) == 2:
            return seen
    raise AssertionError(f"{TRIES} connections did not reach both workers: {seen}")


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_tickets_resume_across_workers(
        origin: VeloxyProcess, pki: Pki, tmp_path, proxies: list[VeloxyProcess],
        veloxy_loop: str, mode: str) -> None:
    config = base_config(f"http://127.0.0.1:{origin.port}", [tls_listener(pki)],
                         workers=2, workers_mode=mode)
    proxy = start_tls_proxy(config, tmp_path, veloxy_loop, 1, proxies)
    deadline = time.monotonic() + 10
    while len(proxy.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(proxy.children()) == 2, proxy.describe()
    seen = _resumption_by_worker(proxy, pki)
    assert seen == {"same": True, "other": True}, seen
    assert "cannot share the supervisor's ticket key" not in proxy.stderr


def _server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = pki.certs["default"]
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


def _serve_once(ctx: ssl.SSLContext, client: ssl.SSLContext,
                session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """One TLS 1.3 connection over 127.0.0.1 to a server using `ctx`, which writes one byte
    after the handshake (so that the client reads its tickets): (the client's session,
    whether it resumed `session`)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        server_done: list[BaseException] = []

        def serve() -> None:
            try:
                with ctx.wrap_socket(accepted, server_side=True) as tls:
                    tls.sendall(b"!")
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError) as exc:
                server_done.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        sock = client.wrap_socket(raw, server_hostname="localhost", session=session)
        assert sock.recv(1) == b"!"
        result = sock.session, sock.session_reused
        sock.close()
        thread.join(5)
        assert not server_done, server_done
        return result


def test_a_ticket_key_set_through_libssl_opens_the_other_contexts_tickets(pki: Pki) -> None:
    issuer, other = _server_context(pki), _server_context(pki)
    key = get_ticket_keys(issuer)
    assert key is not None and len(key) == KEY_BYTES, "libssl not reached on CPython/Linux"
    assert get_ticket_keys(other) != key  # each context starts with its own random key
    client = pki.client_context()
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    session, _ = _serve_once(issuer, client, None)
    assert session is not None and session.has_ticket
    assert _serve_once(other, client, session)[1] is False
    assert set_ticket_keys(other, key) and get_ticket_keys(other) == key
    assert _serve_once(other, client, session)[1] is True
    with pytest.raises(ValueError, match="80 bytes"):
        set_ticket_keys(other, b"short")
