"""First-request latency when many connections open at once against a busy server.

wrk opens all its connections at the start of a run; against a server whose accept loop
falls behind, the last connections' first requests wait in the kernel's accept queue and wrk
reports them as timeouts (or hides them in the tail). This tool shows that directly: it opens
N connections at once, sends a request on each as soon as it connects, keeps every connection
busy in a closed loop for the run, and reports, per run, the latency of first requests apart
from the rest, and the requests still unanswered at the end.

    python benchmarks/connection_burst.py 127.0.0.1:8080 --connections 1000 --runs 4

What it found (docs/BENCHMARKS.md, "Accepting under load"): uvloop's libuv accepts one
connection per loop iteration, so a burst against a loaded server drained at a few dozen
connections a second; net/accept.py now accepts in batches itself.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time


def one_run(host: str, port: int, connections: int, seconds: float) -> dict[str, float]:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    start = time.perf_counter()
    for index in range(connections):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            pass
        socks.append(sock)
        # [index, sent at, requests answered]; sent at 0.0 until connected
        selector.register(sock, selectors.EVENT_WRITE, [index, 0.0, 0])
    first: list[float] = []
    later: list[float] = []
    end = start + seconds
    while time.perf_counter() < end:
        for key, _events in selector.select(0.1):
            sock, state = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            if state[1] == 0.0:  # connected: first request
                try:
                    sock.send(request)
                except OSError:  # refused or reset while queued
                    selector.unregister(sock)
                    continue
                state[1] = time.perf_counter()
                selector.modify(sock, selectors.EVENT_READ, state)
                continue
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(sock)
                continue
            now = time.perf_counter()
            (first if state[2] == 0 else later).append(now - state[1])
            state[2] += 1
            try:
                sock.send(request)  # one response per read: small responses fit in one
            except OSError:
                selector.unregister(sock)
                continue
            state[1] = now
    now = time.perf_counter()
    unanswered = sum(1 for key in selector.get_map().values()
                     if key.data[1] and now - key.data[1] > 1.0)
    never = sum(1 for key in selector.get_map().values() if key.data[2] == 0)
    for sock in socks:
        sock.close()
    first.sort()
    later.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))] * 1e3 if values else 0.0

    return {"requests": len(first) + len(later), "first_p50_ms": pct(first, 0.5),
            "first_max_ms": pct(first, 1.0), "later_p99_ms": pct(later, 0.99),
            "over_1s": sum(1 for v in first + later if v > 1.0) + unanswered,
            "never_answered": never}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", help="HOST:PORT of the server under test")
    parser.add_argument("--connections", "-c", type=int, default=1000)
    parser.add_argument("--seconds", "-d", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    print(f"{'run':>3} {'requests':>9} {'first p50':>10} {'first max':>10} "
          f"{'later p99':>10} {'>1s':>5} {'never':>6}")
    for run in range(1, args.runs + 1):
        r = one_run(host or "127.0.0.1", int(port), args.connections, args.seconds)
        print(f"{run:>3} {r['requests']:>9.0f} {r['first_p50_ms']:>8.0f}ms "
              f"{r['first_max_ms']:>8.0f}ms {r['later_p99_ms']:>8.0f}ms "
              f"{r['over_1s']:>5.0f} {r['never_answered']:>6.0f}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
