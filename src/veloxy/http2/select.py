"""HTTP/1.1 or HTTP/2, per connection, decided once before the first request.

- TLS listeners: the handshake is done when the protocol's connection_made runs, so the
  protocol ALPN selected is known; `AlpnSelect` hands the transport to an HTTP/2 connection
  or to the usual HTTP/1.1 ServerConnection (transport.set_protocol) and steps aside.
- Cleartext listeners with h2c: `PrefaceSniff` reads until the first bytes either are the
  HTTP/2 connection preface ("PRI * HTTP/2.0...", RFC 9113 §3.4, prior knowledge) or cannot
  be, then hands over with those bytes. Bytes that are neither the preface nor an HTTP/1.x
  request line (no " HTTP/" version in the first line, or "PRI " gone wrong) were meant as
  HTTP/2: the HTTP/2 connection answers them with GOAWAY(PROTOCOL_ERROR), which an HTTP/2
  client understands (RFC 9113 §3.4), where an HTTP/1.1 400 would read as a broken frame.
  A malformed HTTP/1.x request still gets its HTTP/1.1 400.

Cleartext listeners without h2c never see these classes: their connections go straight to
ServerConnection, so the HTTP/1.1 hot path pays nothing for HTTP/2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from veloxy.http2.connection import H2ServerConnection
from veloxy.net.timers import NEVER

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Every HTTP/1.x request line ends with its version (RFC 9112 §3).
HTTP1_VERSION = b" HTTP/"
#: Bytes read without a line end before they go to HTTP/1.1 anyway (whose parser answers a
#: request line that long with its own status).
MAX_SNIFF = 16 * 1024


class _Handover(asyncio.Protocol):
    """Common part: build the real protocol and give it the transport."""

    def __init__(self, make_h1: Callable[[], asyncio.Protocol],
                 make_h2: Callable[[bytes], asyncio.Protocol]) -> None:
        self._make_h1 = make_h1
        self._make_h2 = make_h2
        self._transport: asyncio.Transport | None = None
        self._next: asyncio.Protocol | None = None

    def _hand_over(self, protocol: asyncio.Protocol, data: bytes = b"",
                   feed_data: bool = False) -> None:
        transport = self._transport
        assert transport is not None
        self._next = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if feed_data and data and not transport.is_closing():
            protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before a hand-over: nothing to undo; after it, the loop tells the new protocol


class AlpnSelect(_Handover):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a server protocol is handed a Transport
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if chosen == "h2":
            self._hand_over(self._make_h2(b""))
        else:
            self._hand_over(self._make_h1())


class PrefaceSniff(_Handover):
    def __init__(self, make_h1: Callable[[], asyncio.Protocol],
                 make_h2: Callable[[bytes], asyncio.Protocol], sweeper: Any,
                 timeout: float) -> None:
        super().__init__(make_h1, make_h2)
        self._buffer = b""
        self._sweeper = sweeper
        self._timeout = timeout
        self.deadline = NEVER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a server protocol is handed a Transport
        self.deadline = self._sweeper.now + self._timeout  # limits.header_timeout
        self._sweeper.add(self)

    def on_deadline(self, now: float) -> None:
        self.deadline = NEVER
        if self._next is None and self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._sweeper.discard(self)
        buffer = self._buffer + data
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            self._buffer = buffer  # could still be the preface: wait for more
            self._sweeper.add(self)
            return
        if not buffer.startswith(b"PRI "):
            line = _first_line(buffer)
            if line is None and len(buffer) < MAX_SNIFF:
                self._buffer = buffer  # the request line is not whole yet
                self._sweeper.add(self)
                return
            if line is None or HTTP1_VERSION in line:
                self._buffer = b""
                self._hand_over(self._make_h1(), buffer, feed_data=True)
                return
        self._buffer = b""
        # The preface, or bytes meant as one: the h2 connection feeds them itself (and
        # answers a bad preface with GOAWAY).
        self._hand_over(self._make_h2(buffer))

    def eof_received(self) -> bool:
        return False  # closes the connection: nothing was asked

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.discard(self)
        super().connection_lost(exc)


def _first_line(buffer: bytes) -> bytes | None:
    """The first line that is not empty (empty lines before a request are allowed), or
    None while it is not whole."""
    start = 0
    while buffer[start:start + 1] in (b"\r", b"\n"):  # (b"" at the end: not in the tuple)
        start += 1
    end = buffer.find(b"\n", start)
    return None if end < 0 else buffer[start:end]


def protocol_factory(app: Any, limits: Any, http2: Any, sweeper: Any, registry: Any,
                     h1_class: Callable[..., asyncio.Protocol], *, tls: Any = None,
                     h2c: bool = False) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of one TLS or h2c listener."""

    scheme = b"http" if tls is None else b"https"

    def make_h1() -> asyncio.Protocol:
        return h1_class(app, limits, sweeper, registry, scheme=scheme)

    def make_h2(initial: bytes) -> asyncio.Protocol:
        return H2ServerConnection(app, limits, http2, sweeper, registry, initial,
                                  scheme=scheme)

    if tls is not None:
        if not tls.http2:
            return make_h1
        return lambda: AlpnSelect(make_h1, make_h2)
    if h2c:
        return lambda: PrefaceSniff(make_h1, make_h2, sweeper, limits.header_timeout)
    return make_h1
