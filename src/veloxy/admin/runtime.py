"""One serving process's operations side: metrics sources, reload, the admin listener.

`WorkerRuntime` is attached to a `veloxy serve` process (or to each worker) by the command
line through `server.serve(..., attach=...)`. It

- registers the sources read when /metrics is scraped: the client connections of the
  listeners, the process's numbers, the loop monitor, the reload counters (the per-request
  handles are bound by the proxy itself, proxy/app.py);
- reloads the config on SIGHUP (admin/reload.py), and with `serve --watch` when the file
  changes (admin/watch.py): one process watches (the only one, or worker 0) and reloads as
  POST /reload does, so with workers the supervisor and every worker follow the file;
- with workers, answers its siblings' snapshot requests on its control socket
  (admin/control.py);
- serves the admin listener, when configured (admin/app.py): every worker accepts on it,
  and the one that takes a request speaks for all.

POST /reload with workers goes through the supervisor, so that one path (SIGHUP) reloads
every worker and also the config the supervisor gives to workers it starts later: the
worker that took the request checks the file first (an invalid one is answered at once,
nothing is signalled), then sends SIGHUP to the supervisor, which forwards it to every
worker, and waits until each has reloaded to answer with each one's result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from veloxy import __version__
from veloxy.admin import control
from veloxy.admin.app import AdminApp
from veloxy.admin.reload import Reloader
from veloxy.admin.status import merge_status, worker_status
from veloxy.admin.watch import POLL_INTERVAL, ConfigFileWatch
from veloxy.config import Config
from veloxy.net.server import ConnectionRegistry, ServerConnection, ServerLimits
from veloxy.net.timers import sweeper_for
from veloxy.observe.metrics import merge, render
from veloxy.observe.process import LoopMonitor, process_numbers

log = logging.getLogger("veloxy.admin")

#: How long POST /reload waits for every worker to report its reload.
RELOAD_WAIT = 10.0


class WorkerRuntime:
    def __init__(self, app: Any, *, load: Callable[[], Config] | None, limits: ServerLimits,
                 admin_socket: socket.socket | None = None, index: int = 0, count: int = 1,
                 control_dir: str | None = None, supervisor: int | None = None,
                 watch_path: str | None = None) -> None:
        """`app`: the ProxyApp. `load`: re-reads the config as at start-up (None: flags
        only). With workers: this worker's `index` of `count`, the directory of the control
        sockets, and the supervisor's pid. `watch_path`: the config file to follow
        (`serve --watch`); watched by worker 0 only."""
        self.app = app
        self.index = index
        self.count = count
        self._limits = limits
        self._admin_socket = admin_socket
        self._control_dir = control_dir
        self._supervisor = supervisor
        self.reloader = Reloader(app, load)
        self.started = time.time()
        self._servers: list[asyncio.Server] = []
        self._admin_registry = ConnectionRegistry()
        self._downstream: ConnectionRegistry | None = None
        self._monitor: LoopMonitor | None = None
        self._loop_started = 0.0
        self._reload_lock = asyncio.Lock()
        self._watch_path = watch_path if index == 0 else None
        self._watch_task: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------

    async def start(self, downstream: ConnectionRegistry) -> None:
        loop = asyncio.get_running_loop()
        metrics = self.app.metrics
        metrics.downstream.append(downstream)
        self._downstream = downstream
        self._loop_started = loop.time()
        self._monitor = LoopMonitor(loop, metrics.tick)
        self._monitor.start()
        metrics.collectors += [process_numbers, self._monitor.numbers, self.reloader.numbers]
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload_here)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            pass  # no SIGHUP (Windows): POST /reload only
        if self._control_dir is not None:
            path = control.socket_path(self._control_dir, self.index)
            self._servers.append(await control.serve_control(path, self.snapshot))
        if self._admin_socket is not None:
            sweeper = sweeper_for(loop)
            admin = AdminApp(self)
            registry = self._admin_registry

            def factory() -> ServerConnection:
                return ServerConnection(admin, self._limits, sweeper, registry)

            self._servers.append(await loop.create_server(factory, sock=self._admin_socket))
        if self._watch_path is not None:
            self._watch_task = loop.create_task(self._follow(ConfigFileWatch(self._watch_path)))

    async def _follow(self, watch: ConfigFileWatch) -> None:
        """`serve --watch`: reload whenever the file changes. An invalid file is refused and
        logged with its key paths by the reload itself; the next change is tried again."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if watch.changed() and not self.stopping:
                    code, result = await self.reload()
                    if code >= 500:
                        log.error("reload after a config file change: %s", result)
            except Exception:  # the watch must outlive any one failure
                log.exception("watching %s failed; still watching", watch.path)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._watch_task is not None:
            self._watch_task.cancel()
        try:
            loop.remove_signal_handler(signal.SIGHUP)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            pass
        for server in self._servers:
            server.close()
        for conn in list(self._admin_registry.connections):
            conn.abort()
        if self._monitor is not None:
            self._monitor.close()
        if self._control_dir is not None:
            try:
                os.unlink(control.socket_path(self._control_dir, self.index))
            except OSError:
                pass

    @property
    def stopping(self) -> bool:
        """A graceful stop has begun: the proxy's listeners no longer accept."""
        return self._downstream is not None and self._downstream.closing

    # -- numbers ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's numbers and status, JSON-able (what a sibling asks for)."""
        now = asyncio.get_running_loop().time()
        reloader = self.reloader
        return {
            "index": self.index,
            "pid": os.getpid(),
            "started": self.started,
            "generation": reloader.generation,
            "reloads": reloader.ok + reloader.errors,
            "last_reload_error": reloader.last_error,
            "metrics": self.app.metrics.snapshot(),
            "status": worker_status(self.app, now, self._loop_started),
        }

    async def gather(self) -> list[dict[str, Any]]:
        """Every worker's snapshot that arrives in time, this one's first."""
        own = self.snapshot()
        if self._control_dir is None or self.count <= 1:
            return [own]
        paths = [control.socket_path(self._control_dir, i) for i in range(self.count)
                 if i != self.index]
        return [own, *await control.fetch_all(paths)]

    async def metrics_text(self) -> str:
        return render(merge(doc["metrics"] for doc in await self.gather()))

    async def status(self) -> dict[str, Any]:
        return merge_status(await self.gather(), version=__version__,
                            expected_workers=self.count, config_source=self.app.config.source)

    # -- reload ----------------------------------------------------------------------------

    def reload_here(self) -> dict[str, Any]:
        """Reload this process (SIGHUP, or POST /reload without workers)."""
        return self.reloader.reload()

    async def reload(self) -> tuple[int, dict[str, Any]]:
        """POST /reload: (HTTP status, JSON body)."""
        async with self._reload_lock:
            if self._supervisor is None or self.count <= 1:
                result = self.reload_here()
                return (200 if result["ok"] else 400), result
            _, error = self.reloader.check()
            if error is not None:  # nothing is signalled; counted as this worker's
                self.reloader.refused(error)
                return 400, {"ok": False, "error": error}
            before = {doc["index"]: doc["reloads"] for doc in await self.gather()}
            if os.getppid() != self._supervisor:
                return 500, {"ok": False, "error": "the supervisor process is gone"}
            os.kill(self._supervisor, signal.SIGHUP)  # it forwards SIGHUP to every worker
            deadline = time.monotonic() + RELOAD_WAIT
            docs: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                docs = await self.gather()
                if all(doc["reloads"] > before.get(doc["index"], -1) for doc in docs) \
                        and len(docs) >= len(before):
                    break
            else:
                return 504, {"ok": False, "error": f"not every worker reported its reload "
                             f"within {RELOAD_WAIT:g}s", "workers": _results(docs)}
            results = _results(docs)
            ok = all(result["error"] is None for result in results)
            return (200 if ok else 500), {"ok": ok, "workers": results}


def _results(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": doc["index"], "pid": doc["pid"], "generation": doc["generation"],
             "error": doc["last_reload_error"]} for doc in sorted(docs, key=lambda d: d["index"])]
