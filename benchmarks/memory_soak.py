"""Memory over a long TLS soak: does veloxy's RSS stay flat, and if not, where does it go?

Starts `veloxy origin` and one veloxy worker with a TLS listener (a trustme certificate,
ALPN h2 and http/1.1; or a cleartext `h2c: true` listener with --h2c), then for --duration:

- steady load, rate-limited well below saturation (a memory test, not a speed test):
  `veloxy bench [--h2 -m 10] -c 10 -R RATE https://...` (HTTP/2 or HTTP/1.1 keep-alive);
- connection churn: every second `h2load -n K -c K -m 1 [--h1]`, K new TLS connections that
  each make one request and close (per-connection state is where a leak would hide);
- every --interval seconds a probe thread *inside* the veloxy process (this script's `probe`
  sub-command wraps `python -m veloxy serve`) writes one JSON line: VmRSS and smaps_rollup
  Anonymous, glibc's mallinfo2 (bytes in use, free bytes the allocator keeps, mmapped bytes),
  CPython's allocated blocks, tracemalloc's current size (only with --tracemalloc: it slows
  every allocation), the live GC-tracked objects per type and OpenSSL's server session cache
  (SSLContext.session_stats() of every context in the process).

At the end, idle, the probe runs gc.collect() (objects in reference cycles wait for the
collector: an h2 connection refers to itself through its frame dispatch table) and lists the
connection objects still alive (none, when nothing leaks), then calls malloc_trim(0) once and
samples again: the RSS it gives back is what the allocator held in freed memory. The table
and the verdict (RSS growth after the warm-up, <= 10% is flat) go to stdout; --json keeps
every sample.

    python benchmarks/memory_soak.py --protocol h2 --duration 10m     # the real run
    python benchmarks/memory_soak.py --protocol h1 --duration 10m
    python benchmarks/memory_soak.py --protocol h2 --duration 40s --interval 5s   # smoke
    python benchmarks/memory_soak.py --env MALLOC_ARENA_MAX=1 --loop asyncio ...  # variants

Needs h2load (Debian: nghttp2-client) for the churn (skipped with a message without it).
Results and the runs behind them: docs/BENCHMARKS.md, "Memory over TLS soaks".
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from veloxy.lab.procs import stop_all  # noqa: E402

FLAT_LIMIT = 0.10  # issue 13: <= 10% RSS growth after warm-up


# -- inside the veloxy process -----------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _status_kib(pid: int | str, field: str, name: str = "status") -> int:
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def sample_self(top_types: int = 12) -> dict[str, Any]:
    """One sample of this process's memory, as the probe writes it."""
    s: dict[str, Any] = {"t": time.time(),
                         "rss_kib": _status_kib("self", "VmRSS"),
                         "anon_kib": _status_kib("self", "Anonymous", "smaps_rollup"),
                         "py_blocks": sys.getallocatedblocks()}
    libc = _libc()
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _Mallinfo2
        mi = libc.mallinfo2()
        s["malloc"] = {"in_use_kib": mi.uordblks // 1024, "free_kib": mi.fordblks // 1024,
                       "arena_kib": mi.arena // 1024, "mmap_kib": mi.hblkhd // 1024,
                       "top_releasable_kib": mi.keepcost // 1024}
    import tracemalloc

    if tracemalloc.is_tracing():
        s["tracemalloc_kib"] = tracemalloc.get_traced_memory()[0] // 1024
    counts: collections.Counter[str] = collections.Counter()
    sessions: list[dict[str, int]] = []
    for obj in gc.get_objects():
        kind = type(obj)
        counts[kind.__qualname__] += 1
        if kind is ssl.SSLContext:
            stats = obj.session_stats()
            sessions.append({k: stats[k] for k in ("number", "accept", "hits", "misses",
                                                   "cache_full")})
    s["objects"] = sum(counts.values())
    s["types"] = dict(counts.most_common(top_types))
    s["type_counts"] = dict(counts)
    s["ssl_sessions"] = sessions
    return s


def tracemalloc_on() -> bool:
    import tracemalloc

    return tracemalloc.is_tracing()


def probe_main(out: str, interval: float, veloxy_args: list[str]) -> int:
    """`python memory_soak.py probe OUT INTERVAL -- serve ...`: veloxy with a sampling thread.

    Why a thread in the process: the Python heap, the live objects and malloc's own books
    are only visible from inside; the thread holds the GIL a few ms per sample."""
    if os.environ.get("VELOXY_SOAK_TRACEMALLOC") == "1":
        import tracemalloc

        tracemalloc.start()
    trim_flag = Path(out + ".trim")
    snapshot_after = float(os.environ.get("VELOXY_SOAK_SNAPSHOT_AFTER", "0"))
    first: list[Any] = []  # the tracemalloc snapshot at the end of the warm-up
    born = time.monotonic()

    def loop() -> None:
        with open(out, "a", encoding="utf-8") as fh:
            next_at = time.monotonic()
            while True:
                if trim_flag.exists():
                    # garbage first: objects in reference cycles wait for the collector,
                    # which an idle process does not run; what stays alive is kept
                    unreachable = gc.collect()
                    before = sample_self()
                    libc = _libc()
                    libc.malloc_trim(0)
                    after = sample_self()
                    after["trimmed_from_kib"] = before["rss_kib"]
                    after["gc_collected"] = unreachable
                    after["kept_types"] = {k: v for k, v in after.pop("type_counts").items()
                                           if k.startswith(("H2", "Bounded", "SSL", "Server",
                                                            "Upstream", "_SSL"))}
                    if first:
                        import tracemalloc

                        diff = tracemalloc.take_snapshot().compare_to(first[0], "lineno")
                        after["tracemalloc_growth"] = [
                            f"{d.size_diff / 1024:+.0f} KiB {d.count_diff:+d} blocks "
                            f"{d.traceback}" for d in diff[:15]]
                    fh.write(json.dumps({"trim": after}) + "\n")
                    fh.flush()
                    trim_flag.unlink()
                if (snapshot_after and not first and time.monotonic() - born >= snapshot_after
                        and tracemalloc_on()):
                    import tracemalloc

                    first.append(tracemalloc.take_snapshot())
                if time.monotonic() >= next_at:
                    fh.write(json.dumps(sample_self()) + "\n")
                    fh.flush()
                    next_at += interval
                time.sleep(0.2)

    threading.Thread(target=loop, name="memory-soak-probe", daemon=True).start()
    import runpy

    sys.argv = ["veloxy", *veloxy_args]
    try:
        runpy.run_module("veloxy", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


# -- the harness ----------------------------------------------------------------------------------


def parse_seconds(text: str) -> float:
    from veloxy.config.values import parse_duration

    return float(parse_duration(text))


def _wait_listening(proc: subprocess.Popen[str], prefix: str, timeout: float = 30) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"listening on \S+:(\d+)", line)
        if line.startswith(prefix) and m:
            threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                             daemon=True).start()  # keep draining so the child never blocks
            return int(m.group(1))
    proc.kill()
    raise SystemExit(f"{prefix!r} did not start: {''.join(seen)[-2000:]}")


def _env(loop: str | None, extra: list[str], src: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src or str(REPO / "src"),
                                                    env.get("PYTHONPATH")) if p)
    if loop:
        env["VELOXY_LOOP"] = loop
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env {item!r}: expected NAME=VALUE")
        env[key] = value
    return env


def _churn(url: str, per_second: int, h1: bool, stop: threading.Event,
           tally: dict[str, int]) -> None:
    """Every second: `per_second` new connections, one request each, then closed."""
    argv = ["h2load", "-n", str(per_second), "-c", str(per_second), "-m", "1", "-t", "1"]
    if h1:
        argv.append("--h1")
    while not stop.is_set():
        started = time.monotonic()
        out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=60).stdout
        m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", out)
        if m:
            tally["connections"] += per_second
            tally["succeeded"] += int(m.group(2))
            tally["failed"] += int(m.group(3)) + int(m.group(4))
        else:
            tally["runs_unparsed"] += 1
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def run(opts: argparse.Namespace) -> dict[str, Any]:
    import trustme

    duration = parse_seconds(opts.duration)
    interval = parse_seconds(opts.interval)
    warmup = parse_seconds(opts.warmup) if opts.warmup else min(120.0, duration * 0.2)
    tmp = Path(tempfile.mkdtemp(prefix="veloxy-soak-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    env = _env(opts.loop, opts.env, opts.src)
    procs: list[subprocess.Popen[str]] = []
    samples_path = tmp / "samples.jsonl"
    try:
        origin = subprocess.Popen([sys.executable, "-m", "veloxy", "origin", "--listen",
                                   "127.0.0.1:0"], env=_env(None, []), text=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        procs.append(origin)
        origin_port = _wait_listening(origin, "veloxy origin listening on")
        listener = ("{address: \"127.0.0.1:0\", h2c: true}" if opts.h2c else
                    f"{{address: \"127.0.0.1:0\", tls: {{cert: {tmp}/cert.pem, "
                    f"key: {tmp}/key.pem}}}}")
        config = tmp / "veloxy.yaml"
        config.write_text(f"""listen: [{listener}]
workers: 1
routes: [{{upstream: o}}]
upstreams: {{o: {{servers: ["http://127.0.0.1:{origin_port}"]}}}}
{opts.extra_config or ''}
""")
        proxy = subprocess.Popen(
            [sys.executable, __file__, "probe", str(samples_path), str(interval), "--",
             "serve", "--config", str(config), "--log-level", "warning"],
            env=dict(env, VELOXY_SOAK_TRACEMALLOC="1" if opts.tracemalloc else "0",
                     VELOXY_SOAK_SNAPSHOT_AFTER=str(warmup)),
            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        procs.append(proxy)
        port = _wait_listening(proxy, "veloxy listening on")
        scheme = "http" if opts.h2c else "https"
        url = f"{scheme}://127.0.0.1:{port}/?size={opts.payload}"
        bench = [sys.executable, "-m", "veloxy", "bench", url, "-c", str(opts.connections),
                 "-p", "1", "-R", str(opts.rate), "-d", f"{duration:g}s", "--timeout", "5s",
                 "--json", str(tmp / "bench.json")]
        if scheme == "https":
            bench += ["--ca", str(tmp / "ca.pem")]
            ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        if opts.protocol == "h2":
            bench += ["--h2", "-m", str(opts.streams)]
        stop = threading.Event()
        tally: collections.Counter[str] = collections.Counter()
        churner = None
        churn_note = ""
        if opts.churn and not shutil.which("h2load"):
            churn_note = "no churn: h2load is not installed"
        elif opts.churn and opts.h2c and opts.protocol == "h1":
            churn_note = "no churn: an h2c listener with HTTP/1.1 load churns nothing over TLS"
        elif opts.churn:
            churner = threading.Thread(target=_churn, args=(
                url, opts.churn, opts.protocol == "h1", stop, tally), daemon=True)
        started = time.time()
        load = subprocess.Popen(bench, env=_env(None, []), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(load)
        if churner:
            churner.start()
        load_out, _ = load.communicate(timeout=duration + 120)
        stop.set()
        if churner:
            churner.join(70)
        time.sleep(interval + 1)  # one idle sample after the load
        trim_flag = Path(str(samples_path) + ".trim")
        trim_flag.touch()
        for _ in range(100):
            if not trim_flag.exists():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        samples, trim = [], None
        for line in samples_path.read_text().splitlines():
            row = json.loads(line)
            if "trim" in row:
                trim = row["trim"]
            else:
                samples.append(row)
        bench_doc: dict[str, Any] = {}
        try:
            bench_doc = json.loads((tmp / "bench.json").read_text())
        except (OSError, ValueError):
            pass
        return {"opts": {k: v for k, v in vars(opts).items() if k != "func"},
                "started": started, "warmup_s": warmup, "samples": samples, "trim": trim,
                "churn": dict(tally), "churn_note": churn_note,
                "bench": {"completed": bench_doc.get("requests"),
                          "requests_per_s": bench_doc.get("requests_per_s"),
                          "errors": (bench_doc.get("errors") or {}).get("total")},
                "bench_tail": load_out[-600:] if not bench_doc else ""}
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """RSS growth from the end of the warm-up to the end of the load (the last sample taken
    under load), its slope, and where the allocator stands."""
    samples = result["samples"]
    t0 = result["started"]
    loaded = [s for s in samples if s["t"] - t0 <= parse_seconds(result["opts"]["duration"])
              + 0.5 * parse_seconds(result["opts"]["interval"])]
    after = [s for s in loaded if s["t"] - t0 >= result["warmup_s"]] or loaded[-1:]
    base, last = after[0], loaded[-1]
    growth = (last["rss_kib"] - base["rss_kib"]) / base["rss_kib"] if base["rss_kib"] else 0.0
    slope = 0.0
    if len(after) >= 2:
        xs = [(s["t"] - t0) / 60 for s in after]
        ys = [s["rss_kib"] / 1024 for s in after]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0
    grown_types = {}
    first_counts, last_counts = base.get("type_counts", {}), last.get("type_counts", {})
    for name, n in last_counts.items():
        d = n - first_counts.get(name, 0)
        if d > 50:
            grown_types[name] = d
    return {"rss_start_mib": round(samples[0]["rss_kib"] / 1024, 1),
            "rss_after_warmup_mib": round(base["rss_kib"] / 1024, 1),
            "rss_end_mib": round(last["rss_kib"] / 1024, 1),
            "growth_pct": round(100 * growth, 1), "slope_mib_per_min": round(slope, 2),
            "flat": growth <= FLAT_LIMIT,
            "grown_types": dict(sorted(grown_types.items(), key=lambda kv: -kv[1])[:8])}


def report(result: dict[str, Any]) -> str:
    o = result["opts"]
    t0 = result["started"]
    lines = [f"memory soak: {o['protocol']} over {'h2c' if o['h2c'] else 'TLS'}, "
             f"{o['duration']}, -c {o['connections']} -R {o['rate']}"
             + (f" -m {o['streams']}" if o["protocol"] == "h2" else "")
             + f", churn {o['churn']} new connections/s, loop {o['loop'] or 'default'}, "
             f"env {' '.join(o['env']) or '-'}",
             "",
             "| t (s) | RSS MiB | anon MiB | malloc in use MiB | malloc free MiB | mmap MiB "
             "| other anon MiB | py blocks | GC objects | SSL sessions cached |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in result["samples"]:
        m = s.get("malloc", {})
        contexts = s.get("ssl_sessions", [])
        cached = f"{sum(x['number'] for x in contexts)} ({len(contexts)} contexts)"
        lines.append(f"| {s['t'] - t0:.0f} | {s['rss_kib'] / 1024:.1f} | "
                     f"{s['anon_kib'] / 1024:.1f} | {m.get('in_use_kib', 0) / 1024:.1f} | "
                     f"{m.get('free_kib', 0) / 1024:.1f} | {m.get('mmap_kib', 0) / 1024:.1f} | "
                     f"{(s['anon_kib'] - m.get('arena_kib', 0) - m.get('mmap_kib', 0)) / 1024:.1f}"
                     " | "
                     f"{s['py_blocks']:,} | {s['objects']:,} | {cached} |"
                     + (f" tracemalloc {s['tracemalloc_kib'] / 1024:.1f} MiB |"
                        if "tracemalloc_kib" in s else ""))
    v = verdict(result)
    trim = result.get("trim")
    lines += ["",
              "(malloc: glibc's books, mallinfo2; other anon: anonymous memory malloc does "
              "not count: CPython's object arenas (256 KiB mmaps), thread stacks)",
              "",
              f"requests: {result['bench']}; churn: {result['churn']} {result['churn_note']}",
              f"RSS {v['rss_start_mib']} MiB at start, {v['rss_after_warmup_mib']} MiB after "
              f"the {result['warmup_s']:.0f} s warm-up, {v['rss_end_mib']} MiB at the end of the "
              f"load: {v['growth_pct']:+.1f}% ({v['slope_mib_per_min']:+.2f} MiB/min) -> "
              + ("FLAT" if v["flat"] else "GROWING") + f" (limit {FLAT_LIMIT:.0%})",
              f"GC-tracked types that grew by > 50 after warm-up: {v['grown_types'] or 'none'}"]
    if trim:
        lines.append(f"idle, gc.collect() found {trim.get('gc_collected')} unreachable objects; "
                     f"connection objects alive after it: {trim.get('kept_types') or 'none'}")
        lines.append(f"malloc_trim(0) when idle: RSS {trim['trimmed_from_kib'] / 1024:.1f} -> "
                     f"{trim['rss_kib'] / 1024:.1f} MiB (the allocator held "
                     f"{(trim['trimmed_from_kib'] - trim['rss_kib']) / 1024:.1f} MiB of freed "
                     "memory)")
    for line in (trim or {}).get("tracemalloc_growth", []):
        lines.append(f"  tracemalloc growth after warm-up: {line}")
    if result.get("bench_tail"):
        lines.append(f"generator output: {result['bench_tail']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        sep = argv.index("--")
        return probe_main(argv[1], float(argv[2]), argv[sep + 1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=["h2", "h1"], default="h2",
                   help="steady load over HTTP/2 (-m streams) or HTTP/1.1 keep-alive")
    p.add_argument("--h2c", action="store_true",
                   help="a cleartext h2c listener instead of TLS (to compare)")
    p.add_argument("--duration", default="10m")
    p.add_argument("--interval", default="15s", help="between samples")
    p.add_argument("--warmup", default=None,
                   help="growth is measured from here (default: 20%% of the run, <= 2m)")
    p.add_argument("--rate", type=int, default=1000, help="steady requests/s (open loop)")
    p.add_argument("--connections", "-c", type=int, default=10)
    p.add_argument("--streams", "-m", type=int, default=10)
    p.add_argument("--churn", type=int, default=20,
                   help="new connections per second, one request each (0: none)")
    p.add_argument("--payload", type=int, default=1024, help="response body bytes")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default=None)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="for the veloxy process (MALLOC_ARENA_MAX=1, ...); repeatable")
    p.add_argument("--extra-config", default="",
                   help="YAML appended to the veloxy config (e.g. a tuning: block)")
    p.add_argument("--src", default=None,
                   help="run the proxy from this source tree (e.g. an older commit's src/, "
                        "for before/after); default: this repository's")
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace Python allocations in veloxy (slower)")
    p.add_argument("--json", default=None, help="write every sample here")
    opts = p.parse_args(argv)
    result = run(opts)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(result['started']))}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}")
    print(report(result))
    if opts.json:
        for s in result["samples"][:-1]:  # every type's count: only the idle sample keeps it
            s.pop("type_counts", None)
        Path(opts.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
