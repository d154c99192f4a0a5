"""The life of one serving process: listeners, the application, signals, graceful shutdown.

`serve()` runs until SIGTERM or SIGINT, then stops accepting, closes idle keep-alive
connections at once, lets in-flight requests finish within shutdown_timeout, aborts what is
left and returns. Used by `veloxy serve` (one process, or each worker of workers.py) and by
`veloxy origin`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from veloxy.net.listen import format_address
from veloxy.net.server import Application, ConnectionRegistry, ServerConnection, ServerLimits
from veloxy.net.timers import sweeper_for

log = logging.getLogger("veloxy")


async def serve(
    sockets: list[socket.socket],
    make_app: Callable[[Any], Application],
    limits: ServerLimits,
    *,
    announce: Callable[[str], None] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve on listening `sockets` until a stop signal; `make_app(sweeper)` builds the app.

    `announce(address)` is called per listener once it accepts connections, and `ready()`
    once all are accepting.
    """
    loop = asyncio.get_running_loop()
    sweeper = sweeper_for(loop)
    app = make_app(sweeper)
    registry = ConnectionRegistry()

    def factory() -> ServerConnection:
        return ServerConnection(app, limits, sweeper, registry)

    servers = [await loop.create_server(factory, sock=sock, backlog=4096) for sock in sockets]
    stop = asyncio.Event()
    _install_stop_signals(loop, stop)
    for sock in sockets:
        if announce is not None:
            announce(format_address(sock))
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        await _shutdown(servers, registry, limits, app)
        sweeper.close()


async def _shutdown(servers: list[asyncio.Server], registry: ConnectionRegistry,
                    limits: ServerLimits, app: Application) -> None:
    for server in servers:
        server.close()  # stop accepting; open connections are ours to close
    registry.begin_shutdown()
    timeout = getattr(limits, "shutdown_timeout", 30.0)
    if registry.drained is not None and registry.connections:
        try:
            async with asyncio.timeout(timeout):
                await registry.drained.wait()
        except TimeoutError:
            log.warning("shutdown_timeout (%gs) passed: closing %d connections",
                        timeout, len(registry.connections))
    for conn in list(registry.connections):
        conn.abort()
    close = getattr(app, "close", None)
    if close is not None:
        close()
    await asyncio.sleep(0)  # let the transports' close callbacks run


def _install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows' loops have no add_signal_handler: fall back to signal.signal, which
            # runs the handler between bytecodes of the main thread.
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))


def announce_listening(address: str, what: str = "veloxy") -> None:
    """The line tools and tests wait for: `veloxy listening on HOST:PORT`."""
    sys.stderr.write(f"{what} listening on {address}\n")
    sys.stderr.flush()


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="veloxy[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
