"""Config files for `veloxy serve --config`, with short timeouts so the suite stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FAST_LIMITS: dict[str, Any] = {
    "max_request_line": 8192,
    "max_header_bytes": 65536,
    "max_body_bytes": None,
    "header_timeout": "5s",
    "idle_timeout": "10s",
    "shutdown_timeout": "3s",
}

FAST_TIMEOUTS: dict[str, str] = {"connect": "2s", "response_header": "5s", "read": "10s"}


def _url(server: Any) -> str:
    return server if isinstance(server, str) else server.url


def proxy_config(upstreams: dict[str, Any] | Any, routes: list[dict] | None = None,
                 limits: dict[str, Any] | None = None,
                 timeouts: dict[str, str] | None = None) -> dict[str, Any]:
    """A config dict. `upstreams`: one server (backend or URL), or {name: server, [servers]
    or {"servers": [...], "timeouts": {...}}}. Without `routes`, everything goes to the
    first upstream."""
    if not isinstance(upstreams, dict):
        upstreams = {"default": upstreams}
    ups = {}
    for name, spec in upstreams.items():
        if isinstance(spec, dict):  # {"servers": [...], "timeouts": {...}}: per-upstream
            servers, own = spec["servers"], spec.get("timeouts", {})
        else:
            servers, own = spec, {}
        if not isinstance(servers, list | tuple):
            servers = [servers]
        ups[name] = {"servers": [_url(s) for s in servers],
                     "timeouts": {**FAST_TIMEOUTS, **(timeouts or {}), **own}}
    if routes is None:
        routes = [{"match": {"path_prefix": "/"}, "upstream": next(iter(ups))}]
    return {
        "listen": ["127.0.0.1:0"],
        "limits": {**FAST_LIMITS, **(limits or {})},
        "routes": routes,
        "upstreams": ups,
    }


def write_config(path: Path, config: dict[str, Any] | str) -> Path:
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    return path


def prefix_routes(prefixes: dict[str, str], default: str | None = None) -> list[dict[str, Any]]:
    """Routes by path prefix, {"/pool/": "pool", ...}, plus an optional catch-all."""
    routes: list[dict[str, Any]] = [{"match": {"path_prefix": prefix}, "upstream": name}
                                    for prefix, name in prefixes.items()]
    if default:
        routes.append({"match": {"path_prefix": "/"}, "upstream": default})
    return routes
