"""GET /status: what the proxy runs and how it is doing, as JSON.

Each worker describes itself (`worker_status`: its config's routes, its upstream servers
with health, pool numbers and the latency of their recent answers); `merge_status` joins the
workers' descriptions into one document: per server, health as the workers see it (healthy
only when every worker sends it traffic), pool numbers summed, recent latency over the
answers of all workers.
"""

from __future__ import annotations

import time
from typing import Any

from veloxy.observe.metrics import quantile

_POOL_KEYS = ("open", "idle", "in_use", "waiting", "created", "reused", "connect_failures",
              "waited", "queue_full", "wait_timeouts")


def routes_of(app: Any) -> list[dict[str, Any]]:
    out = []
    for route, compiled in zip(app.config.routes, app.router.routes, strict=True):
        match = route.match
        out.append({"route": compiled.label, "host": match.host,
                    "path_prefix": match.path_prefix,
                    "methods": list(match.methods) if match.methods else None,
                    "upstream": route.upstream, "strip_prefix": route.strip_prefix})
    return out


def worker_status(app: Any, now: float, started: float) -> dict[str, Any]:
    """This worker's routes and upstreams; `now` and `started` on the loop's clock."""
    upstreams = []
    for name, group in app.groups.items():
        servers = []
        for server in group.servers:
            window, histogram = server.metrics.recent_histogram(now, started)
            servers.append({
                "address": server.metrics.address,
                "name": server.name,
                "weight": server.weight,
                "healthy": server.healthy,
                "ejected": server.ejected,
                "failures": server.failures,
                "active": server.active,
                "pool": server.pool.snapshot(),
                "recent": histogram,
                "window": window,
            })
        upstreams.append({"name": name, "balance": group.config.balance,
                          "servers": servers})
    return {"routes": routes_of(app), "upstreams": upstreams}


def merge_status(docs: list[dict[str, Any]], *, version: str, expected_workers: int,
                 config_source: str | None) -> dict[str, Any]:
    """One /status document from the workers' snapshots (each with a "status" part)."""
    now = time.time()
    docs = sorted(docs, key=lambda d: d["index"])
    started = min((d["started"] for d in docs), default=now)
    upstreams: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for group in doc["status"]["upstreams"]:
            entry = upstreams.setdefault(group["name"], {
                "name": group["name"], "balance": group["balance"], "servers": {}})
            for server in group["servers"]:
                merged = entry["servers"].get(server["address"])
                if merged is None:
                    merged = entry["servers"][server["address"]] = {
                        "address": server["address"], "name": server["name"],
                        "weight": server["weight"], "healthy": True, "healthy_workers": 0,
                        "ejected_workers": 0, "active": 0,
                        "pool": dict.fromkeys(_POOL_KEYS, 0),
                        "_recent": [0.0] * len(server["recent"]), "_window": 0.0}
                merged["healthy"] = merged["healthy"] and server["healthy"] \
                    and not server["ejected"]
                merged["healthy_workers"] += bool(server["healthy"])
                merged["ejected_workers"] += bool(server["ejected"])
                # requests in flight (kept under least_conn, p2c_ewma and adaptive only)
                merged["active"] += server.get("active", 0)
                for key in _POOL_KEYS:
                    merged["pool"][key] += server["pool"].get(key, 0)
                merged["_recent"] = [a + b for a, b in
                                     zip(merged["_recent"], server["recent"], strict=True)]
                merged["_window"] = max(merged["_window"], server["window"])
    for entry in upstreams.values():
        servers = []
        for server in entry["servers"].values():
            histogram, window = server.pop("_recent"), server.pop("_window")
            buckets, total = histogram[:-1], histogram[-1]
            count = int(sum(buckets))
            p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
            server["recent_latency"] = {
                "window_seconds": round(window, 1),
                "responses": count,
                "mean_ms": round(total / count * 1000, 3) if count else None,
                "p50_ms_at_most": None if p50 is None else p50 * 1000,
                "p99_ms_at_most": None if p99 is None else p99 * 1000,
            }
            servers.append(server)
        entry["servers"] = servers
    first = docs[0] if docs else None
    return {
        "version": version,
        "uptime_seconds": round(now - started, 3),
        "config": {"source": config_source,
                   "generations": sorted({d["generation"] for d in docs})},
        "workers": {
            "configured": expected_workers,
            "answering": len(docs),
            "list": [{"index": d["index"], "pid": d["pid"],
                      "uptime_seconds": round(now - d["started"], 3),
                      "config_generation": d["generation"],
                      "last_reload_error": d["last_reload_error"]} for d in docs],
        },
        "routes": first["status"]["routes"] if first else [],
        "upstreams": list(upstreams.values()),
    }
