"""How one worker sees the others: a control socket per worker, asked for a snapshot.

With `workers: N` every worker counts only its own requests, yet one scrape of /metrics
must show the whole process group. Any worker may receive the scrape (the admin listener
is an SO_REUSEPORT socket in each, like the proxy's listeners), so each worker also listens
on a Unix socket of its own, `DIR/worker-INDEX.sock` (DIR: a private directory the
supervisor's command line creates and removes), and answers `snapshot\\n` with its numbers as
one JSON document. The worker serving the scrape asks every other worker at once, merges
what arrives within PEER_TIMEOUT with its own, and renders.

Why this over shared memory: counters with labels that appear at run time (a status code
never seen before, a server added by DNS or a reload) do not fit a fixed shared layout,
and a worker that dies or restarts simply does not answer (`veloxy_workers` says how many
did), with nothing to lock or to repair. A scrape is rare (seconds apart) and costs a
few hundred microseconds per worker; the request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("veloxy.admin")

#: How long a scrape waits for the other workers' snapshots.
PEER_TIMEOUT = 1.0
#: Largest snapshot accepted from a peer (a guard, not a limit met in practice).
MAX_SNAPSHOT = 64 * 1024 * 1024


def socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"worker-{index}.sock")


async def serve_control(path: str, snapshot: Callable[[], dict[str, Any]]) -> asyncio.Server:
    """Listen on the Unix socket `path` and answer each `snapshot` request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT * 5):
                command = (await reader.readline()).strip()
                if command == b"snapshot":
                    writer.write(json.dumps(snapshot()).encode())
                    await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    try:
        os.unlink(path)  # left by the worker this one replaces
    except FileNotFoundError:
        pass
    return await asyncio.start_unix_server(handle, path)


async def fetch_snapshot(path: str) -> dict[str, Any] | None:
    """The snapshot of the worker listening on `path`, or None (gone, slow, restarting)."""
    try:
        async with asyncio.timeout(PEER_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_SNAPSHOT)
            try:
                writer.write(b"snapshot\n")
                data = await reader.read()
            finally:
                writer.close()
        return json.loads(data) if data else None
    except (OSError, TimeoutError, ValueError) as exc:
        log.debug("no snapshot from %s: %s", path, exc)
        return None


async def fetch_all(paths: list[str]) -> list[dict[str, Any]]:
    results = await asyncio.gather(*(fetch_snapshot(path) for path in paths))
    return [result for result in results if result is not None]
