"""What the OpenTelemetry export costs when it is off (issue 5: "no cost when it is off"):
instructions per proxied request with and without its hook in the logging phase
(`proxy/logging_phase.py`, `log_exchange`).

"Without" is this tree with the hook taken out (a copy of src/ with HOOK replaced by
ORIGINAL, the code before the export existed); "with" is a copy of the tree as it is. Both
run the hot path of benchmarks/hotpath.py under callgrind exactly as metrics_cost.py does
(counting only inside the `map()` that drives the measured requests, the difference of a
N+1- and a 1-request run), with tracing and the export off, as by default.

    python benchmarks/otel_cost.py [--requests 2000] [--variant minimal|browser|both]

Needs valgrind; about 3 minutes per variant (the two sides run in parallel).

With it on, what one span costs the event loop's thread (timed, no valgrind; needs the
otel extra): `SpanExport.span` against the SDK's own Tracer path (start_span/end) with the
same attributes, interleaved, the processor's thread parked so that only the loop's share
is timed; and the trace context's `Tracer.start`, which `tracing: {}` pays either way:

    python benchmarks/otel_cost.py --span
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import metrics_cost  # beside this file (sys.path above)

REPO = metrics_cost.REPO
FORWARD = "src/veloxy/proxy/logging_phase.py"

HOOK = """    if app.access_log is not None:
        _access_log(x, app.access_log, status, now)
    if app.otel is not None:  # all that the OpenTelemetry export costs when off
        _span(x, app.otel, status, now)
"""
ORIGINAL = """    if app.access_log is not None:
        _access_log(x, app.access_log, status, now)
"""


def make_trees(target: Path) -> tuple[Path, Path]:
    with_hook, without = target / "with", target / "without"
    for tree in (with_hook, without):  # copies: the tree may be edited while this runs
        shutil.copytree(REPO / "src", tree / "src")
    path = without / FORWARD
    text = path.read_text()
    if text.count(HOOK) != 1:
        raise SystemExit(f"{FORWARD}: the code changed, update HOOK")
    path.write_text(text.replace(HOOK, ORIGINAL))
    return with_hook, without


def span_cost(rounds: int = 15, spans: int = 1000) -> None:
    import os
    import time

    for name in ("SCHEDULE_DELAY", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE"):
        os.environ[f"OTEL_BSP_{name}"] = "100000000"  # nothing is exported while timing
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    from veloxy.observe.otel import SpanExport
    from veloxy.observe.tracing import Tracer

    endpoint = "http://127.0.0.1:9/v1/traces"  # never reached
    fields = [b"Host", b": ", b"example.com", b"\r\n"]
    tracer = Tracer()
    traces = [tracer.start(fields) for _ in range(spans)]
    ours = SpanExport(endpoint, "veloxy", "0")
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint)))
    sdk_tracer, root = provider.get_tracer("veloxy"), Context()
    attributes = {"http.request.method": "GET", "url.path": "/index.html",
                  "url.query": "id=42", "url.scheme": "http", "server.address": "example.com",
                  "client.address": "127.0.0.1", "client.port": 40000,
                  "network.peer.address": "127.0.0.1", "network.peer.port": 40000,
                  "network.protocol.version": "1.1", "http.route": "/",
                  "http.response.status_code": 200, "veloxy.upstream.address": "127.0.0.1:9"}

    def run_ours() -> None:
        for trace in traces:
            ours.span(trace, start_ns=1, end_ns=2, method=b"GET", target=b"/index.html?id=42",
                      scheme="http", host=b"example.com", peer=("127.0.0.1", 40000),
                      version="1.1", status=200, route="/", upstream="127.0.0.1:9",
                      error=None, user_agent=None)

    def run_sdk() -> None:
        for _ in traces:
            span = sdk_tracer.start_span("GET /", root, SpanKind.SERVER, dict(attributes),
                                         start_time=1)
            span.end(2)

    def run_tracer() -> None:
        for _ in traces:
            tracer.start(fields)

    cases = {"SpanExport.span": run_ours, "SDK start_span/end": run_sdk,
             "Tracer.start": run_tracer}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) / spans * 1e6)
    for name, values in times.items():
        values.sort()
        print(f"{name:20} best {values[0]:6.1f} µs  median {values[len(values) // 2]:6.1f} µs "
              f"per span ({rounds} rounds of {spans})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--variant", choices=["minimal", "browser", "both"], default="both")
    parser.add_argument("--span", action="store_true",
                        help="time one span on the loop's thread instead (otel extra)")
    args = parser.parse_args()
    if args.span:
        span_cost()
        return
    with tempfile.TemporaryDirectory() as tmp:
        with_hook, without = make_trees(Path(tmp))
        variants = ["minimal", "browser"] if args.variant == "both" else [args.variant]
        for variant in variants:
            with ThreadPoolExecutor(2) as pool:
                on = pool.submit(metrics_cost.per_request, with_hook, args.requests, variant)
                off = pool.submit(metrics_cost.per_request, without, args.requests, variant)
                hooked, base = on.result(), off.result()
            print(f"{variant:8} without the hook {base:9,.1f}  with {hooked:9,.1f} "
                  f"instructions per request: {hooked - base:+,.1f} "
                  f"({(hooked - base) / base:+.3%})", flush=True)


if __name__ == "__main__":
    main()
