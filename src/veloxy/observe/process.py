"""The serving process's own numbers: CPU, memory, descriptors, and event-loop lag.

Read when scraped (`process_numbers`), except the loop lag, which a `LoopMonitor` measures
with one timer per loop every `INTERVAL` seconds: the callback is due at a known time, and
how late it runs is how long the loop was busy with something else (a long callback, a
burst of connections). The same tick advances the metrics' latency window (WINDOW).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from veloxy.observe.metrics import WINDOW, Snapshot

#: Seconds between two lag samples.
INTERVAL = 0.5

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: When this process started, seconds since the epoch (taken at import, close enough).
STARTED = time.time()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        pass
    try:  # not Linux: the peak instead of the current value (ru_maxrss: KiB on BSD)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except ImportError:  # Windows
        return 0


def _open_fds() -> int:
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(path)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return 0


def process_numbers() -> Snapshot:
    times = os.times()
    return {
        "process_cpu_seconds_total": [[[], times.user + times.system]],
        "process_resident_memory_bytes": [[[], _rss_bytes()]],
        "process_open_fds": [[[], _open_fds()]],
        "process_start_time_seconds": [[[], STARTED]],
    }


class LoopMonitor:
    """Measures the loop's lag every INTERVAL and calls `on_window` every WINDOW seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_window: Callable[[float], None] | None = None) -> None:
        self._loop = loop
        self._on_window = on_window
        self.lag = 0.0
        self._due = 0.0
        self._next_window = loop.time() + WINDOW
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._due = self._loop.time() + INTERVAL
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lag = max(0.0, now - self._due)
        if self._on_window is not None and now >= self._next_window:
            self._next_window = now + WINDOW
            self._on_window(now)
        self._due = now + INTERVAL
        self._handle = self._loop.call_at(self._due, self._tick)

    def numbers(self) -> Snapshot:
        return {"veloxy_event_loop_lag_seconds": [[[], self.lag]]}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
