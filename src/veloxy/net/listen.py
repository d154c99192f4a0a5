"""Listening sockets.

With several worker processes each one binds its own socket to the same address with
SO_REUSEPORT (Linux, the BSDs): the kernel spreads new connections over the workers' accept
queues, with none of the thundering herd of one shared queue. The supervisor reserves the
address first with a socket that is bound but never listens: it resolves port 0 to a real
port for every worker and receives no connections itself.
"""

from __future__ import annotations

import socket

HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT")


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, not yet listening, TCP socket; raises OSError with the address in the text."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: accepted sockets copy it, and the stdlib loop (asyncio's
    # _set_nodelay, Windows' Proactor too) sets TCP_NODELAY only when proto says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if hasattr(socket, "SO_REUSEADDR") and not _windows():
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and HAS_REUSEPORT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {shown}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def listen_socket(host: str, port: int, *, reuse_port: bool = False,
                  backlog: int, recv_buffer: int | None = None,
                  send_buffer: int | None = None) -> socket.socket:
    """A listening socket. Buffer sizes are set before listen(): accepted connections
    inherit them (net/sockopt.py), including those queued before the first accept."""
    sock = bind_socket(host, port, reuse_port=reuse_port)
    try:
        if recv_buffer is not None or send_buffer is not None:
            from veloxy.net.sockopt import set_buffers

            set_buffers(sock, recv_buffer, send_buffer)
        sock.listen(backlog)  # capped by net.core.somaxconn (see `veloxy doctor`)
    except OSError:
        sock.close()
        raise
    return sock


def format_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _windows() -> bool:
    import sys

    return sys.platform == "win32"
