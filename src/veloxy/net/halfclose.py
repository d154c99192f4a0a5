"""Half-closing a transport: shared by both sides of a tunnel."""

from __future__ import annotations

import asyncio


def half_close(transport: asyncio.BaseTransport | None) -> None:
    """Send FIN and keep reading (the peer may still be sending). Transports that cannot
    half-close (some TLS and Windows pipe transports) are closed instead."""
    if transport is None or transport.is_closing():
        return
    # Duck-typed: uvloop's transports are not subclasses of asyncio.WriteTransport.
    if transport.can_write_eof():  # type: ignore[attr-defined]  # duck-typed: uvloop's transports are not WriteTransports
        transport.write_eof()  # type: ignore[attr-defined]  # duck-typed, as above
    else:
        transport.close()
