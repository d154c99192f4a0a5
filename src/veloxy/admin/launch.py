"""`veloxy serve`'s operations side, as the command line wires it into run_servers.

`ProxyOps` holds what outlives one serving process: the current config (re-read on SIGHUP
by the supervisor, so a worker it restarts after a reload gets the new one), how to load
it again, the admin address (reserved and bound like a listener, so each worker gets an
SO_REUSEPORT socket for it) and, with workers, the private directory of the control
sockets. `attach(admin_socket)` gives server.serve the hook that starts a WorkerRuntime in
the serving process.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from veloxy import workers as workers_mod
from veloxy.admin.reload import merge_for_reload
from veloxy.admin.runtime import WorkerRuntime
from veloxy.config import Config
from veloxy.errors import ConfigError
from veloxy.net.listen import format_address
from veloxy.net.server_connection import ConnectionRegistry

log = logging.getLogger("veloxy.admin")


class ProxyOps:
    def __init__(self, config: Config, load: Callable[[], Config] | None, workers: int,
                 announce: Callable[[str, str], None], watch_path: str | None = None) -> None:
        """`watch_path`: the config file `serve --watch` follows (reloaded when it changes)."""
        self.config = config
        self._watch_path = watch_path
        self._load = load
        self._workers = workers
        self._announce = announce
        self.control_dir: str | None = None
        self._own_dir: str | None = None  # made here, removed here

    # -- addresses ----------------------------------------------------------------------------

    def extra_addresses(self) -> list[tuple[str, int]]:
        """Addresses served beside the proxy's listeners: the admin listener, if any."""
        admin = self.config.admin
        return [] if admin is None else [(admin.host, admin.port)]

    # -- the supervisor -----------------------------------------------------------------------

    def __enter__(self) -> ProxyOps:
        # A spawned worker gets the supervisor's directory in its handoff (`adopt`).
        if (self._workers > 1 and self.config.admin is not None
                and not workers_mod.is_spawned_worker()):
            self.control_dir = self._own_dir = tempfile.mkdtemp(prefix="veloxy-control-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def handoff(self) -> dict[str, Any]:
        """What a spawned worker takes over from the supervisor (workers.Handoff.extra): the
        config as last reloaded, and the control sockets' directory."""
        return {"config": self.config, "control_dir": self.control_dir}

    def adopt(self, handoff: dict[str, Any]) -> None:
        """In a spawned worker: the supervisor's `handoff()`."""
        self.config = handoff["config"]
        self.control_dir = handoff["control_dir"]

    def supervisor_reload(self) -> None:
        """SIGHUP in the supervisor: the config for workers started from now on."""
        if self._load is None:
            return
        try:
            loaded = self._load()
        except (ConfigError, OSError) as exc:
            log.error("supervisor: config not reloaded: %s",
                      exc.render() if isinstance(exc, ConfigError) else exc)
            return
        self.config, _ = merge_for_reload(self.config, loaded)

    # -- each serving process -----------------------------------------------------------------

    def attach(self, admin_socket: socket.socket | None
               ) -> Callable[[Any, ConnectionRegistry], Awaitable[Callable[[], Awaitable[None]]]]:
        """server.serve's `attach` hook for this process."""

        async def attach(app: Any, registry: ConnectionRegistry
                         ) -> Callable[[], Awaitable[None]]:
            info = workers_mod.current
            runtime = WorkerRuntime(
                app, load=self._load, limits=self.config.limits, admin_socket=admin_socket,
                index=info.index if info else 0, count=info.count if info else 1,
                control_dir=self.control_dir, supervisor=info.supervisor if info else None,
                watch_path=self._watch_path)
            await runtime.start(registry)
            if admin_socket is not None and info is None:
                self._announce(format_address(admin_socket), "veloxy admin")
            return runtime.close

        return attach
