"""OpenTelemetry export (config `tracing.otel`): a real OTLP/HTTP receiver on 127.0.0.1 takes
the spans a real veloxy sends, decoded with the exporter's own protobuf classes."""

from __future__ import annotations

import asyncio
import gzip
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="the otel extra is not installed (pip install -e '.[test]' brings it)")

from tests.observe.test_accesslog_tracing import PARENT_ID, TRACE_ID, TRACEPARENT_RE  # noqa: E402
from tests.support.backends import ok_script  # noqa: E402
from tests.support.client import Client  # noqa: E402
from tests.support.config import prefix_routes, proxy_config, write_config  # noqa: E402
from tests.support.proc import child_env  # noqa: E402

pytestmark = pytest.mark.timeout(30)

SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """A collector's OTLP/HTTP traces endpoint: keeps every span POSTed to /v1/traces, with
    its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, object]] = []
        self.paths: list[str] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._cond:
                    receiver.paths.append(self.path)
                    for resource_spans in request.resource_spans:
                        resource = {a.key: _value(a.value)
                                    for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans += [(resource, s) for s in scope_spans.spans]
                    receiver._cond.notify_all()
                reply = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[dict, object]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.spans) < n and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def attributes(span) -> dict[str, object]:
    return {a.key: _value(a.value) for a in span.attributes}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.process
def test_span_per_request(start_proxy, make_backend, receiver):
    backend = make_backend(ok_script(b"hello"))
    config = proxy_config({"default": backend, "dead": f"http://127.0.0.1:{closed_port()}"},
                          routes=prefix_routes({"/app/": "default", "/dead/": "dead"}))
    config["tracing"] = {"otel": {"endpoint": receiver.endpoint, "service_name": "edge-test"}}
    # The SDK's batch delay (5 s by default), through its own environment variable.
    proxy = start_proxy(config=config, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    with Client(proxy.port) as c:
        unsampled = c.request("GET", "/app/unsampled", headers=[
            ("traceparent", f"00-{'1' * 32}-{PARENT_ID}-00")])
        kept = c.request("GET", "/app/kept?q=1&sig=secret", headers=[
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("User-Agent", "tester/1.0")],
            host="shop.example:8443")
        fresh = c.request("POST", "/app/fresh", body=b"x")
        missing = c.request("GET", "/nowhere")
    with Client(proxy.port) as c:
        dead = c.request("GET", "/dead/x")
    assert (unsampled.status, kept.status, fresh.status, missing.status) == (200, 200, 200, 404)
    assert dead.status in (502, 503)
    upstream = {r.target: r for r in backend.wait_requests(3)}
    sent = {}  # target -> (trace id, span id) of the traceparent the backend got
    for target, request in upstream.items():
        m = TRACEPARENT_RE.match(request.head.get("traceparent").decode())
        assert m, target
        sent[target] = (m.group(1), m.group(2))

    got = receiver.wait(4)
    time.sleep(0.2)  # an unexpected fifth span (the unsampled trace's) would show by now
    assert len(receiver.spans) == 4, [s.name for _, s in receiver.spans]
    assert set(receiver.paths) == {"/v1/traces"}
    by_path = {attributes(span)["url.path"]: (resource, span) for resource, span in got}
    assert set(by_path) == {"/app/kept", "/app/fresh", "/nowhere", "/dead/x"}
    for resource, span in by_path.values():
        assert resource["service.name"] == "edge-test"
        assert span.kind == SERVER
        assert 0 < span.start_time_unix_nano < span.end_time_unix_nano
        assert span.end_time_unix_nano - span.start_time_unix_nano < 5e9
        assert abs(span.end_time_unix_nano / 1e9 - time.time()) < 30

    # The client's trace: its trace id, its span as parent, ours as sent upstream.
    _, span = by_path["/app/kept"]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.span_id.hex() == sent["/app/kept?q=1&sig=secret"][1]
    assert span.name == "GET /app/"
    attrs = attributes(span)
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.query"] == "q=1&sig=REDACTED"
    assert attrs["url.scheme"] == "http"
    assert (attrs["server.address"], attrs["server.port"]) == ("shop.example", 8443)
    assert attrs["client.address"] == attrs["network.peer.address"] == "127.0.0.1"
    assert attrs["client.port"] == attrs["network.peer.port"] > 0
    assert attrs["network.protocol.version"] == "1.1"
    assert attrs["user_agent.original"] == "tester/1.0"
    assert attrs["http.route"] == "/app/"
    assert attrs["http.response.status_code"] == 200
    assert attrs["veloxy.upstream.address"] == f"127.0.0.1:{backend.port}"
    assert "error.type" not in attrs and span.status.code != STATUS_ERROR

    # A trace veloxy started: a root span whose ids are the ones sent upstream.
    _, span = by_path["/app/fresh"]
    assert (span.trace_id.hex(), span.span_id.hex()) == sent["/app/fresh"]
    assert span.parent_span_id == b""
    attrs = attributes(span)
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 200
    assert "url.query" not in attrs

    # No route: no http.route; a 4xx is not an error of the server.
    _, span = by_path["/nowhere"]
    attrs = attributes(span)
    assert span.name == "GET" and "http.route" not in attrs
    assert attrs["http.response.status_code"] == 404 and "veloxy.upstream.address" not in attrs
    assert "error.type" not in attrs and span.status.code != STATUS_ERROR
    assert len(span.trace_id) == 16 and span.trace_id not in (
        bytes.fromhex(TRACE_ID), bytes(16))

    # The upstream refused the connection: a 5xx, an error.
    _, span = by_path["/dead/x"]
    attrs = attributes(span)
    assert attrs["http.response.status_code"] == dead.status
    assert attrs["error.type"] == str(dead.status) and span.status.code == STATUS_ERROR
    assert attrs["http.route"] == "/dead/"


@pytest.mark.process
def test_pending_spans_flushed_on_stop(start_proxy, make_backend, receiver):
    """With the SDK's default 5 s batch delay, the spans still arrive when veloxy stops
    gracefully at once: every worker's close() flushes what it has pending."""
    backend = make_backend(ok_script(b"hi"))
    config = proxy_config(backend)
    config["tracing"] = {"otel": {"endpoint": receiver.endpoint}}
    proxy = start_proxy(config=config, workers=2)  # each worker exports its own spans
    for _ in range(4):  # new connections: both workers are likely to take some
        with Client(proxy.port) as c:
            assert c.request("GET", "/one").status == 200
    assert receiver.spans == []
    started = time.monotonic()
    proxy.stop()  # strict: exit code 0 within 5 s, no stray exception
    assert time.monotonic() - started < 4
    spans = receiver.wait(4, timeout=1)
    assert [attributes(s)["url.path"] for _, s in spans] == ["/one"] * 4
    assert {resource["service.name"] for resource, _ in spans} == {"veloxy"}


@pytest.mark.process
def test_sample_ratio_zero_exports_only_client_sampled_traces(start_proxy, make_backend,
                                                              receiver):
    backend = make_backend(ok_script(b"hi"))
    config = proxy_config(backend)
    config["tracing"] = {"otel": {"endpoint": receiver.endpoint, "sample_ratio": 0}}
    proxy = start_proxy(config=config, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    with Client(proxy.port) as c:
        assert c.request("GET", "/own").status == 200
        assert c.request("GET", "/client", headers=[
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")]).status == 200
    upstream = {r.target: r for r in backend.wait_requests(2)}
    # The ratio's decision travels upstream as the sampled flag.
    assert upstream["/own"].head.get("traceparent").decode().endswith("-00")
    assert upstream["/client"].head.get("traceparent").decode().endswith("-01")
    spans = receiver.wait(1)
    time.sleep(0.2)
    assert [attributes(s)["url.path"] for _, s in receiver.spans] == ["/client"]
    assert spans[0][1].trace_id.hex() == TRACE_ID


@pytest.mark.process
def test_missing_extra_is_a_clear_config_error(tmp_path):
    """Without the otel packages, `veloxy check` names the key and the install command.
    (The packages are hidden from the child interpreter the way Python itself marks a
    module as unavailable: None in sys.modules.)"""
    path = write_config(tmp_path / "otel.yaml", {
        "routes": [{"upstream": "app"}],
        "upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}},
        "tracing": {"otel": {"endpoint": "http://127.0.0.1:4318/v1/traces"}}})
    hide = ("import sys; sys.modules['opentelemetry.sdk'] = None; "
            "sys.modules['opentelemetry.exporter'] = None; "
            "from veloxy.cli import main; raise SystemExit(main(['check', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", hide, str(path)], capture_output=True,
                            text=True, timeout=20, env=child_env(None))
    assert result.returncode != 0, result
    assert "tracing.otel: OpenTelemetry export needs the otel extra" in result.stderr
    assert "opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http" in result.stderr
    assert "pip install 'veloxy[otel]'" in result.stderr
    # With the packages there, the same file is valid.
    ok = subprocess.run([sys.executable, "-m", "veloxy", "check", str(path)],
                        capture_output=True, text=True, timeout=20, env=child_env(None))
    assert ok.returncode == 0, ok.stderr


def test_reload_keeps_an_unchanged_export_and_replaces_a_changed_one(receiver):
    """In-process: a reload that leaves tracing.otel as it was keeps the running export
    (its queue and thread); one that changes it starts a new one and closes the old."""
    from veloxy.config import parse_config
    from veloxy.net.timers import sweeper_for
    from veloxy.proxy.app import ProxyApp

    def config(otel: dict | None, prefix: str = "/") -> object:
        data: dict = {"routes": [{"match": {"path_prefix": prefix}, "upstream": "app"}],
                      "upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}}}
        if otel is not None:
            data["tracing"] = {"otel": otel}
        return parse_config(data)

    async def run() -> None:
        sweeper = sweeper_for(asyncio.get_running_loop())
        app = ProxyApp(config({"endpoint": receiver.endpoint}), sweeper)
        first = app.otel
        assert first is not None and app.tracer is not None
        app.reload(config({"endpoint": receiver.endpoint}, prefix="/v2/"))
        assert app.otel is first and not first.closed
        app.reload(config({"endpoint": receiver.endpoint, "service_name": "other"}))
        second = app.otel
        assert second is not None and second is not first and first.closed
        app.reload(config(None))
        assert app.otel is None and app.tracer is None and second.closed
        app.close()
        sweeper.close()

    asyncio.run(run())
