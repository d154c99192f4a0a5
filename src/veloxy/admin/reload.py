"""Hot reload: read the config file again, check it, and swap it into the running proxy.

`Reloader.reload()` is what SIGHUP and POST /reload run in each serving process. The file is
loaded exactly as at start-up (the `load` function given by the command line, so --listen,
--workers and --admin still override it), and checked whole: an invalid file changes nothing,
and the error text (every problem with its key path) is logged and returned.

What a reload changes: routes and upstream groups (proxy.app.ProxyApp.reload swaps them
atomically; requests in flight finish on the old ones), and the access log. What needs a
restart: the listeners, workers, the admin address, client limits, tuning and the HTTP/2
settings (they are bound to sockets and processes; TLS certificates are read again through
ProxyApp.reload_hooks); when the file changes them, the running values are kept and the
reload says so in `restart_needed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from veloxy.config import Config
from veloxy.errors import ConfigError

log = logging.getLogger("veloxy.reload")

#: Config keys a running process cannot change: kept from the running config on reload.
RESTART_KEYS = ("listen", "workers", "admin", "limits", "tuning", "http2")


def restart_keys(config: Config) -> tuple[str, ...]:
    """The RESTART_KEYS this version of the config model has (others may add sections)."""
    return tuple(key for key in RESTART_KEYS if key in type(config).model_fields)


def merge_for_reload(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """`loaded` with the keys that need a restart taken from `running`, and those keys
    whose values differ (the file asks for a change that will wait for a restart)."""
    keys = restart_keys(running)
    differ = [key for key in keys if getattr(running, key) != getattr(loaded, key)]
    if differ:
        loaded = loaded.model_copy(update={key: getattr(running, key) for key in keys})
    return loaded, differ


class Reloader:
    """Reloads one process's application from `load()` (raises ConfigError when invalid)."""

    def __init__(self, app: Any, load: Callable[[], Config] | None,
                 on_reloaded: Callable[[Config], None] | None = None) -> None:
        self._app = app
        self._load = load
        self._on_reloaded = on_reloaded
        #: Successful reloads so far: the config generation (0 = the start-up config).
        self.generation = 0
        self.ok = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_reload: float | None = None

    def check(self) -> tuple[Config | None, str | None]:
        """Load and validate the file without applying it: (config, None) or (None, error)."""
        if self._load is None:
            return None, "no config file to reload (started from command-line flags)"
        try:
            return self._load(), None
        except ConfigError as exc:
            return None, exc.render()
        except OSError as exc:
            return None, f"cannot read the config file: {exc.strerror or exc}"

    def reload(self) -> dict[str, Any]:
        """Reload now; a JSON-able result: ok, generation, error or restart_needed."""
        loaded, error = self.check()
        restart_needed: list[str] = []
        if loaded is not None:
            try:
                config, restart_needed = merge_for_reload(self._app.config, loaded)
                self._app.reload(config)
                if self._on_reloaded is not None:
                    self._on_reloaded(config)
            except Exception as exc:  # nothing was swapped in: ProxyApp.reload swaps last
                log.exception("reload failed")
                error = f"reload failed: {exc}"
        self.last_reload = time.time()
        if error is not None:
            self.refused(error)
            return {"ok": False, "generation": self.generation, "error": error}
        self.ok += 1
        self.generation += 1
        self.last_error = None
        if restart_needed:
            log.warning("config reloaded; changes to %s need a restart and were not applied",
                        ", ".join(restart_needed))
        else:
            log.info("config reloaded (generation %d)", self.generation)
        return {"ok": True, "generation": self.generation, "restart_needed": restart_needed}

    def refused(self, error: str) -> None:
        """A reload was refused (the file is invalid): counted, logged, nothing changed."""
        self.errors += 1
        self.last_error = error
        self.last_reload = time.time()
        log.error("config reload refused, running config unchanged:\n%s", error)

    def numbers(self) -> dict[str, list[list[Any]]]:
        return {"veloxy_config_reloads_total": [[["ok"], self.ok], [["error"], self.errors]]}
