"""What counting costs: instructions per proxied request with and without the per-request
metrics bookkeeping (issue 5: it must stay under 10% of the proxy's CPU per request).

"Without" is this tree with the bookkeeping taken out (a copy of src/ with the edits in
OFF_EDITS undone: the exchange's two clock reads, its stores and `_record` call, the
client connection's byte counts); "with" is the tree as it is. Each side runs the hot path
of benchmarks/hotpath.py (in-memory transports, one GET and its response per request)
under valgrind's callgrind, counting only inside `map()` (--toggle-collect=map_next), which
drives the measured requests: start-up is left out, and the count is repeatable to a few
instructions however busy the machine is.

    python benchmarks/metrics_cost.py [--requests 2000] [--variant minimal|browser|both]

Needs valgrind; about 2-4 minutes per variant (the two sides run in parallel). Access log
and tracing are off, as by default: what is measured is what every request pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (file, text with the bookkeeping, text without it)
OFF_EDITS = [
    ("src/veloxy/proxy/exchange.py", '''        self.started = monotonic()
        app = self._app
        head = self.head
        if app.tracer is not None:
            self.trace = app.tracer.start(head.fields)
        if app.access_log is not None:
            self._bytes_mark = self.down.bytes_out
''', '''        app = self._app
        head = self.head
'''),
    ("src/veloxy/proxy/forward.py", "        status = self.status = head.status\n",
     "        status = head.status\n"),
    ("src/veloxy/proxy/forward.py", "        log_exchange(self, self.status)\n"
     "        self.down.finish(keep_alive=not self._close_after)",
     "        self.down.finish(keep_alive=not self._close_after)"),
    ("src/veloxy/net/server.py", "        self.bytes_in += len(data)\n", ""),
    ("src/veloxy/net/server.py",
     "        self.bytes_out += len(data)\n        self.transport.write",
     "        self.transport.write"),
    ("src/veloxy/net/server.py", "        self._registry.accepted += 1\n", ""),
]


def make_off_tree(target: Path) -> None:
    shutil.copytree(REPO / "src", target / "src")
    for name, on, off in OFF_EDITS:
        path = target / name
        text = path.read_text()
        if text.count(on) != 1:
            raise SystemExit(f"{name}: the code changed, update OFF_EDITS ({on[:60]!r}...)")
        path.write_text(text.replace(on, off))


async def drive(requests: int, browser: bool) -> None:
    """hotpath's wiring; the measured requests run inside map()."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import hotpath

    wiring = hotpath.Wiring(browser)
    down, upstream = wiring.down, wiring.upstream
    request, response = wiring.request, wiring.response
    for _ in range(1000):  # warm up (a for loop: not counted)
        down.data_received(request)
        upstream.data_received(response)
    wiring.up_transport.written.clear()
    wiring.down_transport.written.clear()

    def one(_: int) -> None:
        down.data_received(request)
        upstream.data_received(response)

    list(map(one, range(requests)))
    assert len(wiring.down_transport.written) == requests == len(wiring.up_transport.written)


def count(tree: Path, requests: int, variant: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONHASHSEED": "0"}
        subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=map_next",
                        f"--callgrind-out-file={out}", os.path.realpath(sys.executable),
                        __file__, "--drive", str(requests), variant],
                       env=env, check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no total in callgrind's output")


def per_request(tree: Path, requests: int, variant: str) -> float:
    return (count(tree, requests + 1, variant) - count(tree, 1, variant)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--variant", choices=["minimal", "browser", "both"], default="both")
    parser.add_argument("--drive", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        from veloxy.net import loop

        loop.run(drive(int(args.drive[0]), args.drive[1] == "browser"))
        return
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp)
        make_off_tree(off)
        variants = ["minimal", "browser"] if args.variant == "both" else [args.variant]
        for variant in variants:
            with ThreadPoolExecutor(2) as pool:
                with_metrics = pool.submit(per_request, REPO, args.requests, variant)
                without = pool.submit(per_request, off, args.requests, variant)
                on, base = with_metrics.result(), without.result()
            print(f"{variant:8} without metrics {base:9,.0f}  with {on:9,.0f} instructions "
                  f"per request: +{on - base:,.0f} ({(on - base) / base:+.1%})")


if __name__ == "__main__":
    main()
