#!/usr/bin/env python3
"""Instructions per proxied request of the real server, by number of client connections.

Wall-clock CPU figures on a shared 2-core machine are noisy; instruction counts are not. This
runs `python -m veloxy serve` under `valgrind --tool=callgrind` in front of a one-worker nginx
origin (stub_status on), and for each connection count:

1. `wrk -t1 -c N` runs for `--duration` seconds (all N connections open first);
2. after `--settle` seconds, the callgrind counters are zeroed (`callgrind_control -z`) and the
   origin's request counter read;
3. `--window` seconds later, the counters are dumped (`callgrind_control -d`) and the origin's
   counter read again.

Instructions in the window ÷ requests the origin answered in it = instructions per proxied
request, with start-up, accepts and wrk's connection set-up outside the window. Periodic work
(the deadline sweeper's tick, the accept catch-up) costs per second, not per request, and under
callgrind the server runs ~50x slower, so it weighs ~50x more per request here than at full
speed: `callgrind_annotate` on the dump files separates it (`--annotate` prints the top
functions of each dump).

    python benchmarks/callgrind_conns.py --conns 64,1000 \
        --config benchmarks/configs/veloxy-pool1024.yaml
    python benchmarks/callgrind_conns.py --conns 64 --close      # Connection: close per request

Only 127.0.0.1 is contacted; every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
from veloxy.lab.peers import nginx_origin_conf, nginx_proxy_conf  # noqa: E402
from veloxy.lab.procs import (  # noqa: E402
    free_port,
    stop_all,
    tree_pids,
)

HOST = "127.0.0.1"
STUB = "/__stub"
BODY = ("veloxy benchmark origin body " * 4)[:99] + "\n"


def stub_requests(port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{port}{STUB}", timeout=5) as r:
        text = r.read().decode()
    # "Active connections: N\nserver accepts handled requests\n A H R\n..."
    return int(text.splitlines()[2].split()[2])


def total_ir(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


PERF_EVENTS = ("raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_wait",
               "syscalls:sys_enter_epoll_pwait",
               "syscalls:sys_enter_epoll_ctl", "syscalls:sys_enter_write",
               "syscalls:sys_enter_writev", "syscalls:sys_enter_read",
               "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto",
               "syscalls:sys_enter_accept4", "syscalls:sys_enter_close",
               "syscalls:sys_enter_setsockopt", "syscalls:sys_enter_getsockname",
               "syscalls:sys_enter_getpeername", "syscalls:sys_enter_ioctl",
               "syscalls:sys_enter_fcntl", "context-switches")


def cpu_ticks(root: int) -> tuple[int, int]:
    user = system = 0
    for pid in tree_pids(root):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def perf_window(args: argparse.Namespace, pid: int, oport: int, n: int) -> None:
    """Without valgrind: syscalls, loop iterations and user/sys CPU per request."""
    r0 = stub_requests(oport)
    t0 = cpu_ticks(pid)
    pids = ",".join(str(p) for p in tree_pids(pid))
    out = subprocess.run(["perf", "stat", "-x,", "-p", pids, "-e", ",".join(PERF_EVENTS),
                          "--", "sleep", str(args.window)], capture_output=True, text=True)
    t1 = cpu_ticks(pid)
    reqs = stub_requests(oport) - 1 - r0
    counts = {}
    for line in out.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] in PERF_EVENTS:
            counts[parts[2]] = float(parts[0]) if parts[0][:1].isdigit() else float("nan")
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    cells = " | ".join(f"{counts.get(e, float('nan')) / reqs:.3f}" for e in PERF_EVENTS)
    print(f"| {n} | {reqs} | {(t1[0] - t0[0]) * tick_us / reqs:.1f} | "
          f"{(t1[1] - t0[1]) * tick_us / reqs:.1f} | {cells} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", default="64,1000")
    p.add_argument("--config", type=Path, help="veloxy config template ({upstream} replaced)")
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--settle", type=float, default=12.0)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--close", action="store_true", help="Connection: close on every request")
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("--path", default="/")
    p.add_argument("--size", type=int, default=0, metavar="BYTES",
                   help="the origin answers /?size=BYTES with that many bytes (use with "
                   "--path '/?size=BYTES')")
    p.add_argument("--annotate", type=int, default=0, metavar="N",
                   help="print the top N functions (inclusive) of each dump")
    p.add_argument("--perf", action="store_true",
                   help="no valgrind: perf stat syscall counts and user/sys CPU per request")
    p.add_argument("--rate", type=int, default=0,
                   help="open loop at this total rate (veloxy bench -R) instead of wrk: the "
                   "same requests/s at every connection count, one request per wake-up")
    p.add_argument("--nginx", action="store_true",
                   help="measure nginx as the proxy instead of veloxy (with --perf)")
    p.add_argument("--cache-sim", action="store_true",
                   help="simulate a 32 KiB L1d and this box's 1 MiB per-core L2 as the last level")
    p.add_argument("--outdir", type=Path, default=None)
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = p.parse_args()
    for tool in (("perf",) if args.perf else ("valgrind", "callgrind_control")) + ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required")
    work = Path(tempfile.mkdtemp(prefix="cg-conns-"))
    outdir = args.outdir or work
    outdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        try:
            run(args, work, outdir, procs, stack)
        finally:
            stop_all(procs)
    return 0


def run(args: argparse.Namespace, work: Path, outdir: Path,
        procs: list[subprocess.Popen[bytes]], stack: contextlib.ExitStack) -> None:
    if True:
        oport, pport = free_port(), free_port()
        (work / "origin.conf").write_text(nginx_origin_conf(
            work, oport, BODY, STUB, sized=(args.size,) if args.size else ()))
        procs.append(subprocess.Popen(
            ["taskset", "-c", "0", "nginx", "-p", str(work), "-e", str(work / "o.err"),
             "-c", str(work / "origin.conf")], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        argv = [sys.executable, "-m", "veloxy", "serve", "--listen", f"{HOST}:{pport}",
                "--workers", "1"]
        upstream = f"http://{HOST}:{oport}"
        if args.nginx:  # the same measures of nginx as the proxy, for comparison (--perf)
            (work / "proxy.conf").write_text(nginx_proxy_conf(work, pport, oport, 2048))
            argv = ["nginx", "-p", str(work), "-e", str(work / "p.err"), "-c",
                    str(work / "proxy.conf")]
        elif args.config:
            conf = work / "veloxy.yaml"
            conf.write_text(args.config.read_text().replace("{upstream}", upstream))
            argv += ["--config", str(conf)]
        else:
            argv += ["--upstream", upstream]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        for item in args.env:
            k, _, v = item.partition("=")
            env[k] = v
        out_pattern = outdir / "callgrind.out.%p"
        prefix = [] if args.perf else ["valgrind", "--tool=callgrind", "--dump-instr=no",
                                       f"--callgrind-out-file={out_pattern}",
                                       *(["--cache-sim=yes", "--D1=32768,8,64",
                                          "--LL=1048576,16,64"] if args.cache_sim else [])]
        err_file = stack.enter_context((work / "server.err").open("wb"))
        server = subprocess.Popen(
            ["taskset", "-c", "1", *prefix, *argv],
            stdout=subprocess.DEVNULL, stderr=err_file, env=env)
        procs.append(server)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://{HOST}:{pport}/", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start: "
                                     + (work / "server.err").read_text()) from None
                time.sleep(1)
        stub_requests(oport)
        url = f"http://{HOST}:{pport}{args.path}"
        if args.perf:
            print("| connections | requests | user µs/req | sys µs/req | "
                  + " | ".join(PERF_EVENTS) + " (per request) |")
            print("|---:|---:|---:|---:|" + "---:|" * len(PERF_EVENTS))
        else:
            print("| connections | requests in window | Ir in window | Ir/request | dump |")
            print("|---:|---:|---:|---:|---|")
        for n in [int(x) for x in args.conns.split(",")]:
            if args.rate:
                wrk = ["taskset", "-c", "0", sys.executable, "-m", "veloxy", "bench", "-p", "1",
                       "-c", str(n), "-R", str(args.rate), "-d", f"{int(args.duration)}s",
                       "--timeout", "30s", url]
            else:
                wrk = ["taskset", "-c", "0", "wrk", "-t1", f"-c{n}",
                       f"-d{int(args.duration)}s", "--timeout", "30s", url]
            for h in args.header:
                wrk += ["-H", h]
            if args.close:
                wrk += ["--close"] if args.rate else ["-H", "Connection: close"]
            w = subprocess.Popen(wrk, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            procs.append(w)
            time.sleep(args.settle)
            if args.perf:
                perf_window(args, server.pid, oport, n)
                w.wait()
                time.sleep(2)
                continue
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                           capture_output=True)
            r0 = stub_requests(oport)
            time.sleep(args.window)
            before = set(outdir.glob(f"callgrind.out.{server.pid}*"))
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                           capture_output=True)
            r1 = stub_requests(oport) - 1  # our first stub request
            dumps = sorted(set(outdir.glob(f"callgrind.out.{server.pid}*")) - before)
            w.wait()
            wrk_out = w.stdout.read().decode() if w.stdout else ""
            if "Socket errors" in wrk_out or "Non-2xx" in wrk_out:
                print(wrk_out, file=sys.stderr)
            reqs = r1 - r0
            dump = dumps[-1]
            ir = total_ir(dump)
            print(f"| {n} | {reqs} | {ir} | {ir // max(1, reqs)} | {dump} |", flush=True)
            if args.annotate:
                ann = subprocess.run(["callgrind_annotate", "--inclusive=no",
                                      "--threshold=99", str(dump)],
                                     capture_output=True, text=True).stdout
                lines = [ln for ln in ann.splitlines() if re.match(r"\s*[\d,]+ ", ln)]
                print("\n".join(lines[: args.annotate + 1]))
            time.sleep(2)


if __name__ == "__main__":
    raise SystemExit(main())
