"""How many CPUs this process may really use, for `workers: auto`.

Why not `os.cpu_count()`: in a container it reports the host's CPUs. Starting 64 workers under
a 2-CPU quota makes the kernel throttle the whole cgroup every scheduling period (100 ms by
default), and each throttled period shows up as a latency spike at p99 and max: exactly the
numbers veloxy cares about most. So the answer is the smallest of

- the CPUs this process may be scheduled on (`os.sched_getaffinity`, i.e. taskset / cpuset),
- the CFS bandwidth quota of every cgroup on the way to the root: cgroup v2 `cpu.max`
  ("QUOTA PERIOD" or "max PERIOD") or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
  (-1 = no limit).

A fractional quota is rounded down (1.5 CPUs -> 1 worker, never fewer than 1), as Go's
automaxprocs does: one worker always able to run beats two that take turns being throttled.
The cgroup mounts are found through /proc/self/mountinfo, so a cgroup namespace (the container
sees its own cgroup as "/") and a bind-mounted sub-tree both work. Any file that cannot be read
simply means "no limit known".
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from veloxy.config.values import parse_workers

__all__ = ["cgroup_cpu_limit", "resolve_workers", "usable_cpus"]

_PROC_SELF = Path("/proc/self")


def resolve_workers(value: object) -> int:
    """The number of worker processes to start: `value` itself, or usable CPUs for "auto".

    Accepts what the config and the command line accept (an int >= 1, a digit string,
    "auto"); anything else raises ValueError.
    """
    workers = parse_workers(value)
    return usable_cpus() if workers == "auto" else workers


def usable_cpus(proc: Path = _PROC_SELF) -> int:
    """CPUs this process may use: affinity mask, capped by any cgroup CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux (macOS, Windows)
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(proc)
    if limit is not None:
        count = min(count, max(1, math.floor(limit)))
    return max(1, count)


def cgroup_cpu_limit(proc: Path = _PROC_SELF) -> float | None:
    """The tightest CFS quota (in CPUs) over this process's cgroups, or None when unlimited.

    `proc` is the /proc/<pid> directory to read (tests point it at a fake tree).
    """
    try:
        mountinfo = (proc / "mountinfo").read_text()
        memberships = (proc / "cgroup").read_text()
    except OSError:
        return None
    v2_path: str | None = None
    v1_cpu_path: str | None = None
    for line in memberships.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_cpu_path = path
    limits: list[float] = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2_path is not None:
            found = _walk(mount_point, root, v2_path, _read_cpu_max)
        elif fstype == "cgroup" and "cpu" in super_options and v1_cpu_path is not None:
            found = _walk(mount_point, root, v1_cpu_path, _read_cfs_quota)
        else:
            continue
        if found is not None:
            limits.append(found)
    return min(limits) if limits else None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _walk(mount_point: Path, mount_root: str, cgroup_path: str,
          read: Callable[[Path], float | None]) -> float | None:
    """Read the limit in the process's cgroup directory and every parent up to the mount."""
    relative = os.path.relpath(cgroup_path, mount_root) if cgroup_path.startswith(
        mount_root) else "."
    directory = mount_point / relative if not relative.startswith("..") else mount_point
    if not directory.is_dir():
        directory = mount_point
    best: float | None = None
    while True:
        limit = read(directory)
        if limit is not None:
            best = limit if best is None else min(best, limit)
        if directory == mount_point or mount_point not in directory.parents:
            return best
        directory = directory.parent


def _read_cpu_max(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _read_cfs_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
