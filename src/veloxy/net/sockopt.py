"""TCP socket options from `tuning:` (config/model.py): TCP_NODELAY and buffer sizes.

Where each is set, and why there:

* Downstream buffers (SO_RCVBUF/SO_SNDBUF) go on the *listening* socket before listen():
  Linux, the BSDs and Windows copy them to every accepted socket, so they cost nothing per
  connection, and the receive buffer is in place when the SYN-ACK advertises its window.
* Downstream TCP_NODELAY: uvloop and asyncio set it on every accepted TCP socket, so true
  (the default) needs nothing. false must clear it after the loop set it, so it needs one
  setsockopt per connection: `serve()` then uses `NagleServerConnection`, and the default
  path keeps the plain `ServerConnection` with no extra code.
* Upstream (pooled connections): set once per new connection, after the connect (the
  event loop makes the socket), by the pool, and only when something is configured. Linux
  derives the window scale of the SYN from the system maximum (tcp_rmem, rmem_max), not
  from the socket's buffer, so a receive buffer set after the connect is usable in full.

Linux doubles the value given (half of it is bookkeeping) and caps it at
net.core.rmem_max / wmem_max first; `effective_buffers` reads back what the kernel did.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from veloxy.net.server import ServerConnection


class SocketOptions(Protocol):
    """What config.SocketOptions provides (net does not import config)."""

    tcp_nodelay: bool
    recv_buffer: int | None
    send_buffer: int | None


def is_default(options: SocketOptions | None) -> bool:
    """Nothing to set: the socket stays as the loop and the kernel made it."""
    return options is None or (options.tcp_nodelay and options.recv_buffer is None
                               and options.send_buffer is None)


def set_buffers(sock: socket.socket, recv: int | None, send: int | None) -> None:
    """SO_RCVBUF / SO_SNDBUF where given (None leaves the kernel's autotuning on)."""
    if recv is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv)
    if send is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send)


def set_nodelay(sock: socket.socket, on: bool) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)


def nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def effective_buffers(sock: socket.socket) -> tuple[int, int]:
    """(SO_RCVBUF, SO_SNDBUF) as the kernel reports them (doubled on Linux)."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


def _tcp_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


def apply_to_connection(transport: asyncio.BaseTransport, options: SocketOptions) -> None:
    """Set `options` on a connected transport's socket (an upstream connection). Errors
    (a socket closed meanwhile) are ignored: the connection fails on its own."""
    sock = _tcp_socket(transport)
    if sock is None:
        return
    try:
        if not options.tcp_nodelay:
            set_nodelay(sock, False)
        set_buffers(sock, options.recv_buffer, options.send_buffer)
    except OSError:
        pass


class NagleServerConnection(ServerConnection):
    """A client connection with TCP_NODELAY cleared (`tuning.downstream.tcp_nodelay:
    false`): one setsockopt when the connection is made, then the plain protocol."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = _tcp_socket(transport)
        if sock is not None:
            try:
                set_nodelay(sock, False)
            except OSError:
                pass
        super().connection_made(transport)


def server_connection_class(options: SocketOptions | None) -> type[ServerConnection]:
    """The protocol class `serve()` builds per client connection."""
    if options is not None and not options.tcp_nodelay:
        return NagleServerConnection
    return ServerConnection
