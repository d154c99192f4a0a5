"""The life of one serving process: listeners, the application, signals, graceful shutdown.

`serve()` runs until SIGTERM or SIGINT, then drains for limits.shutdown_delay (still
accepting, /healthz 503, every response closing its connection), stops accepting, closes idle
keep-alive connections at once, lets in-flight requests finish within shutdown_timeout,
aborts what is left and returns. Used by `veloxy serve` (one process, or each worker of
workers.py) and by `veloxy origin`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from veloxy.config import DEFAULT_BACKLOG
from veloxy.net.accept import Acceptor, default_max_connections, descriptor_limit
from veloxy.net.listen import format_address
from veloxy.net.server_connection import (
    Application,
    ConnectionRegistry,
    ServerConnection,
    ServerLimits,
)
from veloxy.net.sockopt import server_connection_class
from veloxy.net.timers import sweeper_for

log = logging.getLogger("veloxy")

#: How long a closing TLS connection waits for the client's close_notify (asyncio's default,
#: 30 s, would hold a graceful shutdown that long for every client that never answers).
SSL_SHUTDOWN_TIMEOUT = 0.5


async def serve(
    sockets: list[socket.socket],
    make_app: Callable[[Any], Application],
    limits: ServerLimits,
    *,
    announce: Callable[[str], None] | None = None,
    ready: Callable[[], None] | None = None,
    tuning: Any = None,
    attach: Callable[[Any, ConnectionRegistry], Awaitable[Callable[[], Awaitable[None]]]]
    | None = None,
    tls: Sequence[Any] | None = None,
    h2c: Sequence[bool] | None = None,
    http2: Any = None,
) -> None:
    """Serve on listening `sockets` until a stop signal; `make_app(sweeper)` builds the app.

    Per socket, `tls` gives its tls.listener.ServerTLS (None: cleartext) and `h2c` whether it
    also takes HTTP/2 with prior knowledge; `http2` is config.Http2Settings. A reload
    (SIGHUP) reads the TLS listeners' certificates again (`_reload_certificates_on`).

    `attach(app, registry)`, when given, starts what runs beside the app (metrics sources,
    reload on SIGHUP, the admin listener: admin/runtime.py) once the listeners exist, and
    returns the coroutine function that stops it after the graceful shutdown.

    `announce(address)` is called per listener once it accepts connections, and `ready()`
    once all are accepting. `tuning` (config.Tuning, optional) gives the listen backlog,
    the client sockets' TCP_NODELAY and the GC settings applied before the first accept.
    """
    loop = asyncio.get_running_loop()
    sweeper = sweeper_for(loop)
    app = make_app(sweeper)
    registry = ConnectionRegistry()
    backlog = tuning.backlog if tuning is not None else DEFAULT_BACKLOG
    conn_class = server_connection_class(tuning.downstream if tuning is not None else None)

    # A partial, not a closure: the loop calls it for every new connection, and a partial
    # makes the protocol without a Python frame of its own.
    factory: Callable[[], ServerConnection] = functools.partial(
        conn_class, app, limits, sweeper, registry)

    # veloxy accepts itself, capped at limits.max_connections: see net/accept.py.
    acceptor = Acceptor(loop, registry, max_connections=max_connections(limits),
                        backlog=backlog)
    for index, sock in enumerate(sockets):
        sock.listen(backlog)  # (again: the backlog is tuning's, also for given sockets)
        sock.setblocking(False)
        listener_tls = tls[index] if tls else None
        if listener_tls is None and not (h2c and h2c[index]):
            acceptor.watch(sock, factory)
            continue
        _watch_secure(acceptor, app, limits, http2, sweeper, registry, conn_class, sock,
                      listener_tls, bool(h2c and h2c[index]))
    await acceptor.start()
    if tls and any(tls):
        _reload_certificates_on(loop, app, list(tls), own_signal=attach is None)
    detach = await attach(app, registry) if attach is not None else None
    if tuning is not None:
        apply_gc(tuning.gc)
        apply_malloc(tuning.malloc_mmap_threshold)
    stop = asyncio.Event()
    _install_stop_signals(loop, stop)
    for sock in sockets:
        if announce is not None:
            announce(format_address(sock))
    if ready is not None:
        ready()
    try:
        await stop.wait()
        await _drain(registry, getattr(limits, "shutdown_delay", 0.0))
    finally:
        await _shutdown(acceptor, registry, limits, app)
        if detach is not None:
            await detach()
        sweeper.close()


async def _drain(registry: ConnectionRegistry, delay: float) -> None:
    """limits.shutdown_delay: go on serving for `delay` seconds while telling everyone to go.

    `registry.closing` is what /healthz reads (503 from now on) and what makes a connection
    accepted from now on serve one request; each open connection answers its next request
    with Connection: close. Idle keep-alive connections are deliberately left open: closing
    one races with a request the client may be sending on it, which would then fail; the
    client's next request gets its answer and the close. What is still open after `delay`
    goes through the shutdown proper (begin_shutdown). (A ConnectionRegistry.begin_drain()
    in net/server_connection.py would be this function's natural home.)"""
    if delay <= 0:
        return
    registry.closing = True
    for conn in list(registry.connections):
        if isinstance(conn, ServerConnection):
            conn.keep_alive = False
        else:
            conn.close_when_done()  # HTTP/2: GOAWAY, the protocol's own race-free way out
    log.info("draining for %gs before the shutdown (limits.shutdown_delay)", delay)
    await asyncio.sleep(delay)


def max_connections(limits: Any) -> int:
    """limits.max_connections, or its default sized from RLIMIT_NOFILE (net/accept.py)."""
    configured = getattr(limits, "max_connections", None)
    if configured is not None:
        return int(configured)
    nofile = descriptor_limit()
    return default_max_connections(nofile) if nofile is not None else 1 << 30


async def _shutdown(acceptor: Acceptor, registry: ConnectionRegistry,
                    limits: ServerLimits, app: Application) -> None:
    acceptor.stop()  # stop accepting, close the listeners; open connections are ours to close
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


def _watch_secure(acceptor: Acceptor, app: Application, limits: ServerLimits, http2: Any,
                  sweeper: Any, registry: ConnectionRegistry, conn_class: Any,
                  sock: socket.socket, listener_tls: Any, h2c: bool) -> None:
    """A TLS listener (HTTP/1.1 or HTTP/2 by ALPN, X-Forwarded-Proto https) or a cleartext
    one that also takes h2c: their connections pick a protocol first (http2/select.py)."""
    from veloxy.http2.select import protocol_factory

    if http2 is None:
        from veloxy.config import Http2Settings

        http2 = Http2Settings()
    factory = protocol_factory(app, limits, http2, sweeper, registry, conn_class,
                               tls=listener_tls, h2c=h2c)
    options: dict[str, Any] = {} if listener_tls is None else {
        "ssl": listener_tls.context, "ssl_handshake_timeout": limits.header_timeout,
        "ssl_shutdown_timeout": SSL_SHUTDOWN_TIMEOUT}
    acceptor.watch(sock, factory, **options)


def _reload_certificates_on(loop: asyncio.AbstractEventLoop, app: Any, contexts: list[Any],
                            *, own_signal: bool) -> None:
    """Read the TLS certificates again on every reload of the app (ProxyApp.reload_hooks,
    run by admin/reload.py on SIGHUP and POST /reload) and, when nothing else handles
    SIGHUP here (`own_signal`), on SIGHUP directly. New handshakes get the new
    certificates; established connections keep theirs."""
    from veloxy.tls.listener import reload_all

    hooks = getattr(app, "reload_hooks", None)
    if hooks is not None:
        hooks.append(lambda: reload_all(contexts))
    if own_signal:
        try:
            loop.add_signal_handler(signal.SIGHUP, reload_all, contexts)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            pass  # no SIGHUP (Windows)


def apply_gc(settings: Any) -> None:
    """`tuning.gc` in this process: a larger generation-0 threshold, then gc.freeze() of
    everything alive now. Called once start-up is done (listeners, app and pools built):
    by `serve` in every serving process, and by the supervisor before it forks workers.
    Logs what the collector now reports, so the effect is visible in the process's log."""
    if settings is None or (settings.gen0_threshold is None and not settings.freeze_after_start):
        return
    if settings.gen0_threshold is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gen0_threshold, gen1, gen2)
    if settings.freeze_after_start:
        gc.collect()
        gc.freeze()
    log.info("gc: thresholds %s, %d objects frozen", gc.get_threshold(),
             gc.get_freeze_count())


#: mallopt's parameter number for the mmap threshold (glibc's malloc.h).
M_MMAP_THRESHOLD = -3


def apply_malloc(mmap_threshold: int | None) -> None:
    """`tuning.malloc_mmap_threshold` in this process: a fixed glibc mmap threshold (no more
    rising to the largest block freed). Logs it; warns and does nothing where the C
    library has no mallopt (musl, macOS, Windows)."""
    if mmap_threshold is None:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
    except (OSError, AttributeError):
        log.warning("tuning.malloc_mmap_threshold: this C library has no mallopt: ignored")
        return
    if ok != 1:
        log.warning("tuning.malloc_mmap_threshold: mallopt refused %d: ignored", mmap_threshold)
        return
    log.info("malloc: mmap threshold %d bytes", mmap_threshold)


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
