"""`veloxy bench --h2`: HTTP/2 load with -m streams per connection (h2load's semantics).

Against the h2 test backend (tests/support/h2c_backend.py: every request recorded, the most
streams open at once on a connection counted), h2c with prior knowledge and over TLS: counts
exact, -m reached and never passed, the open loop's rate held and its coordinated-omission
correction, RST_STREAM counted as read errors, other statuses apart, the JSON valid. Then
veloxy's own h2c and TLS h2 listeners, and the one-line errors for what cannot be run."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.h2c_backend import H2cBackend
from tests.support.proc import VeloxyProcess, running_origin
from tests.support.tls import Pki, make_pki, start_tls_proxy, stop_all
from tests.tls.conftest import base_config, tls_listener
from veloxy.cli import main
from veloxy.loadgen.report import document
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.schema import validate
from veloxy.loadgen.settings import BenchSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend() -> Iterator[H2cBackend]:
    server = H2cBackend()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = make_pki(tmp_path_factory.mktemp("bench-h2-pki"))
    pki.issue("default", "localhost", "127.0.0.1")
    pki.issue("b", "b.test", "*.w.test")
    return pki


def _server_context(pki: Pki, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.certs["default"].cert, pki.certs["default"].key)
    ctx.set_alpn_protocols(alpn)
    return ctx


def _bench(**kw: object) -> dict:
    doc = document(run_bench(BenchSettings(http2=True, **kw)))  # type: ignore[arg-type]  # BenchSettings' fields
    validate(doc)
    return doc


def test_counts_are_exact_and_m_streams_are_kept_in_flight() -> None:
    server = H2cBackend(delay=0.02)  # answers held 20 ms: every connection fills its streams
    try:
        doc = _bench(url=server.url + "/count", connections=2, streams=5, duration=0.6,
                     processes=1)
    finally:
        server.close()
    got = len(server.requests)
    req = doc["requests"]
    assert req["completed"] > 50
    assert req["sent"] == req["completed"] == got, (req, got)
    assert req["failed"] == req["abandoned"] == 0 and doc["errors"]["total"] == 0
    assert doc["status_codes"] == {"200": got} and doc["latency"]["count"] == got
    # -m 5 reached, never passed, on 2 connections (+1: the pre-flight's).
    assert server.max_streams == 5
    assert server.connections == 2 + 1
    assert all(h[b":path"] == b"/count" and h[b":method"] == b"GET" for h in server.requests)
    assert doc["settings"]["http2"] is True and doc["settings"]["streams"] == 5
    assert doc["bytes_read"] > 0


def test_the_servers_stream_limit_caps_m(backend: H2cBackend) -> None:
    """A server's SETTINGS_MAX_CONCURRENT_STREAMS below -m is obeyed, as h2load does
    (opening more streams would have them refused)."""
    backend.delay = 0.02
    backend.stream_limit = 2
    doc = _bench(url=backend.url + "/", connections=1, streams=6, duration=0.4, processes=1)
    assert backend.max_streams == 2
    assert doc["requests"]["completed"] == len(backend.requests) > 0
    assert doc["errors"]["total"] == 0
    assert backend.connections == 1 + 1  # the pre-flight's and one, never given up


def test_open_loop_holds_its_rate(backend: H2cBackend) -> None:
    doc = _bench(url=backend.url + "/", connections=2, streams=4, rate=300, duration=1.0,
                 processes=1)
    assert doc["rate"]["held"] is True, doc["rate"]
    assert 0.95 * 300 <= doc["requests_per_s"] <= 1.05 * 300
    assert doc["requests"]["completed"] == len(backend.requests)
    assert doc["latency_uncorrected"] is not None and doc["schedule_lag"] is not None
    assert doc["settings"]["mode"] == "open"


def test_open_loop_corrects_when_every_stream_is_busy() -> None:
    """40 req/s due on one connection whose one stream takes 50 ms (20/s at most): requests
    wait for the stream and are timed from their due time. With -m 4 the same load fits."""
    slow = H2cBackend(delay=0.05)
    try:
        one = _bench(url=slow.url + "/", connections=1, streams=1, rate=40, duration=1.0,
                     processes=1)
        four = _bench(url=slow.url + "/", connections=1, streams=4, rate=40, duration=1.0,
                      processes=1)
    finally:
        slow.close()
    p90 = one["latency"]["percentiles"]["90"]
    assert p90 > 3 * one["latency_uncorrected"]["percentiles"]["90"], one["latency"]
    assert p90 > 200_000  # the backlog grows to ~0.5 s over the second
    assert one["rate"]["held"] is False and one["saturated"] is True
    assert four["rate"]["held"] is True, four["rate"]
    assert four["latency"]["percentiles"]["90"] < 100_000


def test_rst_stream_is_a_read_error(backend: H2cBackend) -> None:
    doc = _bench(url=backend.url + "/reset/x", connections=1, streams=3, duration=0.4,
                 processes=1)
    req, err = doc["requests"], doc["errors"]
    assert req["completed"] == 0 and err["read"] == req["failed"] == len(backend.requests) > 0
    assert req["sent"] == req["failed"]


def test_streams_a_server_never_answers_time_out() -> None:
    silent = H2cBackend(delay=30.0)  # speaks HTTP/2, answers nothing within the run
    try:
        doc = _bench(url=silent.url + "/", connections=1, streams=3, duration=0.5,
                     processes=1, timeout=0.2)
    finally:
        silent.close()
    req, err = doc["requests"], doc["errors"]
    assert req["completed"] == 0 and err["timeout"] == req["failed"] >= 3, (req, err)
    assert req["sent"] == req["failed"] and req["abandoned"] == 0
    assert silent.connections >= 1 + 2  # the pre-flight's, then one per timed-out round


def test_other_statuses_are_counted_apart(backend: H2cBackend) -> None:
    backend.status = 503
    doc = _bench(url=backend.url + "/", connections=1, streams=2, duration=0.4, processes=1)
    got = len(backend.requests)
    assert doc["status_codes"] == {"503": got} and doc["errors"]["status"] == got > 0
    assert doc["requests"]["failed"] == 0


@pytest.mark.parametrize("size", [10, 15_000], ids=["small", "beyond the window"])
def test_request_bodies(backend: H2cBackend, size: int) -> None:
    """6 streams of 15,000 bytes pass the server's 64 KiB connection window: the later
    bodies wait for its WINDOW_UPDATEs. (The backend echoes a body in one DATA frame, so
    at most 16 KiB.)"""
    doc = _bench(url=backend.url + "/up", connections=1, streams=6, duration=0.4,
                 processes=1, body=b"b" * size, method="POST")
    got = len(backend.requests)
    assert doc["requests"]["completed"] == got > 0 and doc["errors"]["total"] == 0, doc
    assert all(h[b":method"] == b"POST" and h[b"content-length"] == str(size).encode()
               for h in backend.requests)
    # The backend echoes the body ("echo:" + body) in DATA: every byte of it came back.
    assert doc["bytes_read"] > got * size


def test_tls_alpn_h2_to_the_backend(pki: Pki) -> None:
    server = H2cBackend(tls=_server_context(pki, ["h2"]))
    try:
        doc = _bench(url=server.url + "/", connections=2, streams=2, duration=0.4, processes=1,
                     ca=str(pki.ca_file))
    finally:
        server.close()
    assert doc["requests"]["completed"] == len(server.requests) > 0
    assert set(server.alpn) == {"h2"}


# -- the command line ---------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bench", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("args", "expected"), [
    (["--h2", "--close"], "drop --close"),
    (["--h2", "-H", "Connection: keep-alive"], "RFC 9113"),
    (["-m", "4"], "add --h2"),
    (["--h2", "-m", "0"], "at least 1"),
    (["--h2", "-m", "4", "--streams", "2"], "give one"),
    (["-m", "PUT", "--method", "POST"], "give one"),
    (["--method", "G@T"], "bad method"),
], ids=["close", "connection header", "streams without h2", "zero streams", "both",
        "two methods", "bad method"])
def test_bad_combinations_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                       expected: str) -> None:
    code, out, err = _cli(["http://127.0.0.1:9/", *args], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err, err


def test_script_with_h2_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.py"
    script.write_text("def request(ctx):\n    return {}\n")
    code, _, err = _cli(["http://127.0.0.1:9/", "--h2", "--script", str(script)], capsys)
    assert code == 2 and "drop --h2 or --script" in err and err.count("\n") == 1


def test_m_number_is_streams_and_m_name_is_the_method() -> None:
    import argparse

    from veloxy.loadgen.cli import add_bench_parser, settings_from_args

    parser = argparse.ArgumentParser()
    bench = add_bench_parser(parser.add_subparsers())
    s = settings_from_args(bench.parse_args(["http://127.0.0.1:1/", "--h2", "-m", "10"]))
    assert (s.streams, s.method, s.http2) == (10, "GET", True)
    s = settings_from_args(bench.parse_args(["http://127.0.0.1:1/", "-m", "put"]))
    assert (s.streams, s.method) == (1, "PUT")
    # --method is always the method: a numeric token is legal in RFC 9110, if odd
    s = settings_from_args(bench.parse_args(["http://127.0.0.1:1/", "--h2", "--method", "10",
                                             "-m", "4"]))
    assert (s.streams, s.method) == (4, "10")


def test_an_http11_only_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.backends import BackendStarter, response

    starter = BackendStarter()
    try:
        server = starter.serving(lambda req, conn: response(200, b"ok"))
        code, out, err = _cli([server.url + "/", "--h2", "-c", "1", "-d", "0.2s"], capsys)
    finally:
        starter.close()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "does not speak HTTP/2 with prior knowledge" in err, err


def test_tls_without_h2_in_alpn_is_one_line(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    server = H2cBackend(tls=_server_context(pki, ["http/1.1"]))
    try:
        code, _, err = _cli([server.url + "/", "--h2", "--ca", str(pki.ca_file), "-c", "1",
                             "-d", "0.2s"], capsys)
    finally:
        server.close()
    assert code == 2 and "did not choose h2" in err and "drop --h2" in err, err


# -- veloxy's own listeners ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def veloxy_h2(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """veloxy with a TLS listener (ALPN h2) and an `h2c: true` one, before the origin."""
    started: list[VeloxyProcess] = []
    with running_origin(None) as origin:
        proxy = start_tls_proxy(base_config(f"http://127.0.0.1:{origin.port}",
                                            [tls_listener(pki),
                                             {"address": "127.0.0.1:0", "h2c": True}]),
                                tmp_path_factory.mktemp("bench-h2"), "uvloop", 2, started)
        try:
            yield proxy.listeners[0][1], proxy.listeners[1][1]
        finally:
            assert not stop_all(started)


@pytest.mark.process
@pytest.mark.parametrize("scheme", ["https", "http"], ids=["tls", "h2c"])
def test_veloxys_h2_listeners(veloxy_h2: tuple[int, int], pki: Pki, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    port = veloxy_h2[0] if scheme == "https" else veloxy_h2[1]
    out_file = tmp_path / "run.json"
    extra = ["--ca", str(pki.ca_file)] if scheme == "https" else []
    code, out, err = _cli([f"{scheme}://127.0.0.1:{port}/?size=100", "--h2", "-c", "2", "-m",
                           "4", "-p", "1", "-d", "0.4s", "--json", str(out_file), *extra],
                          capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    validate(doc)
    assert doc["requests"]["completed"] > 0 and doc["requests"]["failed"] == 0, doc["requests"]
    assert doc["errors"]["total"] == 0 and set(doc["status_codes"]) == {"200"}
    assert doc["settings"]["http2"] is True and doc["settings"]["streams"] == 4
    over = "TLS" if scheme == "https" else "h2c"
    assert f"HTTP/2 over {over}, 4 streams each" in out


# -- the HPACK shortcuts are exact --------------------------------------------------------------


def test_the_repeated_block_encoder_writes_what_hpack_writes() -> None:
    """Same bytes as hpack's own Encoder, block by block, through repeats, a new list, a table
    size change and evictions (a small table)."""
    import hpack

    from veloxy.loadgen.h2driver import RepeatedBlockEncoder

    a = [(b":method", b"GET"), (b":path", b"/a"), (b"x-k", b"1" * 40)]
    b = [(b":method", b"GET"), (b":path", b"/b"), (b"x-k", b"2" * 40)]
    ours, theirs = RepeatedBlockEncoder(), hpack.Encoder()
    decoder = hpack.Decoder()
    for step, headers in enumerate([a, a, a, b, a, a, b, b, a]):
        if step == 5:
            ours.header_table_size = theirs.header_table_size = 100  # evicts as it goes
        block = ours.encode(list(headers))
        assert block == theirs.encode(list(headers)), step
        assert decoder.decode(block, raw=True) == headers, step


def test_the_static_block_decoder_reads_what_hpack_reads() -> None:
    """Blocks without indexing (nginx's kind) are remembered; blocks that index are decoded
    every time; both give hpack's own result."""
    import hpack

    from veloxy.loadgen.h2driver import StaticBlockDecoder

    fields = [(b":status", b"200"), (b"server", b"nginx"), (b"date", b"Mon, 07 Dec 2026")]
    plain = hpack.Encoder()
    never = [hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields]
    ours, theirs = StaticBlockDecoder(), hpack.Decoder()
    blocks = [plain.encode(never), plain.encode(never), plain.encode(fields),
              plain.encode(fields), plain.encode(never)]
    StaticBlockDecoder.memo.clear()
    for i, block in enumerate(blocks):
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True) == fields, i
    assert len(StaticBlockDecoder.memo) == 1  # the never-indexed block, once its table was empty


def test_a_generator_connection_remembers_a_bounded_number_of_closed_streams() -> None:
    """h2 alone keeps 2**16 closed streams per connection (~8.5 MiB); a long run must not."""
    import h2.config
    import h2.connection

    from veloxy.loadgen.h2driver import new_h2_connection

    client = new_h2_connection()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                  header_encoding=None))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    total = 1100
    for n in range(total):
        sid = 1 + 2 * n
        client.send_headers(sid, [(b":method", b"GET"), (b":path", b"/"),
                                  (b":scheme", b"http"), (b":authority", b"x")],
                            end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())
    client._open_streams(0)  # h2 moves closed streams to its memory when it counts them
    assert len(client._closed_streams) == 1024 < total
