"""The access log: one line per request, written off the event loop.

The loop only formats a line and appends it to a list; every FLUSH_INTERVAL the lines of
that interval are joined and handed to a writer thread through a queue, so a slow disk or
a full pipe (a stalled `| less`) delays the thread, never the loop. If the thread falls
behind by more than MAX_PENDING bytes, further lines are dropped and counted
(`dropped`), rather than let memory grow without bound.

Formats: "combined" (Apache/nginx's combined format) and "json" (one object per line with
time, client, method, path, status, bytes, duration, route, upstream, upstream_duration,
trace_id; durations in seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time

FLUSH_INTERVAL = 0.05
MAX_PENDING = 16 * 1024 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quote(value: bytes | None) -> str:
    """A value for a quoted field of the combined format, escaped as nginx does (\\xHH)."""
    if value is None:
        return "-"
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' and ord(c) < 128
                   else f"\\x{ord(c):02X}" for c in text)


class AccessLog:
    def __init__(self, path: str, format: str = "combined") -> None:
        self.path = path
        self.format = format
        if path == "-":
            self._fd = os.dup(1)  # our own descriptor: closing it leaves stdout alone
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pending = 0  # bytes queued and not yet written (read/written under _lock)
        self._lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self._handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._thread = threading.Thread(target=self._run, name="veloxy-access-log", daemon=True)
        self._thread.start()

    # -- on the loop ---------------------------------------------------------------------------

    def write(self, *, client: bytes, method: bytes, target: bytes, version: str, status: int,
              size: int, duration: float, route: str | None, upstream: str | None,
              upstream_duration: float | None, trace_id: str | None,
              referer: bytes | None = None, user_agent: bytes | None = None) -> None:
        now = time.time()
        if self.format == "json":
            line = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now * 1000) % 1000:03d}Z",
                "client": client.decode("latin-1"),
                "method": method.decode("latin-1"),
                "path": target.decode("latin-1"),
                "status": status,
                "bytes": size,
                "duration": round(duration, 6),
                "route": route,
                "upstream": upstream,
                "upstream_duration": None if upstream_duration is None
                else round(upstream_duration, 6),
                "trace_id": trace_id,
            }, separators=(",", ":"))
        else:
            second = int(now)
            if second != self._second:
                t = time.gmtime(second)
                self._second = second
                self._stamp = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                               f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
            line = (f'{client.decode("latin-1")} - - [{self._stamp}] "{_quote(method)} '
                    f'{_quote(target)} HTTP/{version}" {status} {size or "-"} '
                    f'"{_quote(referer)}" "{_quote(user_agent)}"')
        lines = self._lines
        if not lines:
            self._handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
        lines.append(line)

    def flush(self) -> None:
        """Hand the lines gathered so far to the writer thread."""
        self._handle = None
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "replace")
        count = len(self._lines)
        self._lines = []
        with self._lock:
            if self._pending + len(data) > MAX_PENDING:
                self.dropped += count
                return
            self._pending += len(data)
        self._queue.put(data)

    def close(self, timeout: float = 0.0) -> None:
        """Hand over what is left and stop the thread once it is written (the thread closes
        the file); wait for that at most `timeout` seconds (0: do not wait, as on reload)."""
        if self._handle is not None:
            self._handle.cancel()
        self.flush()
        self._queue.put(None)
        if timeout > 0:
            self._thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                os.close(self._fd)
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                pass  # a closed pipe or a full disk: the lines are lost, the proxy goes on
            with self._lock:
                self._pending -= len(data)
                self.written += len(data)
