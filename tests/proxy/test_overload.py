"""Overload by connections: veloxy under `ulimit -n 1024` with 3000 clients (issue 14).

A veloxy process runs with RLIMIT_NOFILE 1024 (set in the child before exec) in front of
`veloxy origin`; this test process (its own limit raised) opens 3000 keep-alive clients that
send a request every 300 ms or so, while a separate probe opens a new connection and sends
one request every 200 ms (from 1.5 s on, once the clients' initial burst of connects is
through). With limits.max_connections left to its default ((1024 - 64) // 2
= 480 per worker, net/accept.py) veloxy stops accepting at the cap (the rest wait in the
kernel's queue) and asks kept-alive connections to leave to make room (Connection: close
on their next answer), so:

* the probe is answered every time, within 1 s as a rule (the test says its margin);
* no answer is a 5xx (no upstream connection lacks a descriptor);
* nothing is logged about accept failures.

With a cap set far above what the descriptors allow, accept() fails with EMFILE: veloxy
backs off and logs at most two lines per back-off episode instead of one per failure, and
answers again once the clients are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observe.conftest import admin_port, scrape, value
from tests.support.config import proxy_config, write_config
from tests.support.proc import VeloxyProcess, running_origin

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(60)]

CLIENTS = 3000
NOFILE = 1024
LOAD_SECONDS = 6.0
REQUEST = b"GET /?size=100 HTTP/1.1\r\nHost: t\r\n\r\n"
PROBE = b"GET /?size=10 HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def _room_for_the_clients() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CLIENTS + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} descriptors for its clients; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def limited_proxy(tmp_path: Path, origin: VeloxyProcess,
                  limits: dict[str, object] | None = None) -> Iterator[VeloxyProcess]:
    config = {**proxy_config(f"http://127.0.0.1:{origin.port}",
                             limits={"idle_timeout": "30s", **(limits or {})}),
              "admin": "127.0.0.1:0"}
    path = write_config(tmp_path / "veloxy.yaml", config)
    proc = VeloxyProcess(["serve", "--config", str(path)], None, nofile=NOFILE)
    try:
        yield proc.wait_ready()
    finally:
        if proc.stop(strict=False) is None:
            proc.kill()


class Tally:
    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.connect_errors = 0
        self.lost = 0  # connection closed or reset before an answer (idle close, EMFILE)
        self.asked_to_leave = 0  # answers with Connection: close (making room at the cap)
        self.retried = 0  # kept-alive connection closed while idle: the GET sent again
        self.probes: list[float] = []  # seconds per probe; inf when not answered


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the connection closes after it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    closes = False
    for line in head.split(b"\r\n"):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"connection:") and b"close" in lower:
            closes = True
    await reader.readexactly(length)
    return status, closes


async def _client(port: int, stop_at: float, tally: Tally) -> None:
    """A keep-alive client with 300 ms between requests, which behaves as HTTP clients do
    (RFC 9112 9.3.1): a connection that says Connection: close is left after that answer,
    and a GET whose kept-alive connection closed before any byte of the answer is sent
    again on a new one (`retried`); anything else that fails is `lost`."""
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally.connect_errors += 1
            await asyncio.sleep(0.1)
            continue
        reused = False
        try:
            while time.monotonic() < stop_at:
                writer.write(REQUEST)
                status, closes = await asyncio.wait_for(_read_response(reader), 10)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if closes:
                    tally.asked_to_leave += 1
                    break  # the next request on a new connection
                reused = True
                await asyncio.sleep(0.3)
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                tally.retried += 1  # closed while idle: sent again on a new connection
            else:
                tally.lost += 1
        except (OSError, TimeoutError):
            if reused:
                tally.retried += 1
            else:
                tally.lost += 1
        finally:
            writer.close()


PROBE_SCRIPT = f"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
request = {PROBE!r}
took = []
stop_at = time.monotonic() + seconds
while time.monotonic() < stop_at:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(request)
            data = b""
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        took.append(time.monotonic() - started if data.startswith(b"HTTP/1.1 200") else 1e9)
    except OSError:
        took.append(1e9)
    time.sleep(0.2)
print(json.dumps(took))
"""


def _probe(port: int, seconds: float) -> list[float]:
    """A separate client in its own process (the load's event loop does not delay it):
    a new connection and one request every 200 ms; seconds per answer (1e9: none)."""
    out = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(port), str(seconds)],
                         capture_output=True, timeout=seconds + 15, check=True)
    return list(json.loads(out.stdout))


def _load(port: int) -> Tally:
    tally = Tally()

    async def main() -> None:
        stop_at = time.monotonic() + LOAD_SECONDS
        clients = [asyncio.create_task(_client(port, stop_at, tally)) for _ in range(CLIENTS)]
        # The probe starts once the 3000 connects are through: a connection made in the
        # same millisecond as the burst waits behind all of it in the kernel's queue
        # (about 1 s here, measured), which is the cap working as designed.
        await asyncio.sleep(1.5)
        tally.probes = await asyncio.to_thread(_probe, port, LOAD_SECONDS - 2.0)
        await asyncio.gather(*clients)

    asyncio.run(main())
    return tally


def _accept_log_lines(proc: VeloxyProcess) -> list[str]:
    return [line for line in proc.lines if "accept" in line]


def test_default_cap_keeps_a_probe_answered_within_a_second(tmp_path: Path) -> None:
    with running_origin(None) as origin, limited_proxy(tmp_path, origin) as proxy:
        tally = _load(proxy.port)
        assert sum(tally.statuses.values()) > 1000, tally.statuses
        assert set(tally.statuses) == {200}, tally.statuses  # no 5xx: no descriptor ran out
        # Room is made by closing idle kept-alive connections (a GET on one is sent again,
        # as HTTP clients do), or idle for a moment only, by Connection: close on the next
        # answer; nothing a new connection asked for is lost.
        assert tally.asked_to_leave + tally.retried > 100, vars(tally)
        assert tally.lost == 0, vars(tally)
        assert len(tally.probes) >= 5, (tally.probes, proxy.describe())
        # Every probe is answered, under 1 s as a rule. A probe waits in the kernel's
        # queue behind the connections that came before it while veloxy rotates idle
        # ones out, as fast as the CPU it gets allows: on this shared 2-core machine
        # (load average 7-9 while this was written) a few probes in ten take 1-2.5 s
        # (docs/BENCHMARKS.md, "Overload: connection cap").
        median = sorted(tally.probes)[len(tally.probes) // 2]
        assert median < 1.0 and max(tally.probes) < 2.5, (
            f"probe latencies {tally.probes}\n" + proxy.describe())
        assert _accept_log_lines(proxy) == []
        assert not any("Too many open files" in line for line in proxy.lines)
        metrics = scrape(admin_port(proxy))
        assert value(metrics, "veloxy_downstream_connections_max") == (NOFILE - 64) // 2
        assert value(metrics, "veloxy_downstream_connection_limit_reached_total") >= 1
        assert value(metrics, "veloxy_downstream_accept_backoffs_total") == 0
        assert value(metrics, "veloxy_downstream_connections_released_total") >= \
            tally.asked_to_leave + tally.retried


def test_emfile_backs_off_with_a_line_per_episode(tmp_path: Path) -> None:
    """A cap the descriptors cannot hold: EMFILE on accept. Back-offs, not a log flood,
    and veloxy answers as before once the clients are gone."""
    with running_origin(None) as origin, \
            limited_proxy(tmp_path, origin, {"max_connections": 5000}) as proxy:
        _load(proxy.port)
        lines = _accept_log_lines(proxy)
        started = [line for line in lines if "not accepting for" in line]
        assert started, "EMFILE never happened: the test does not test the back-off\n" \
            + proxy.describe()
        assert len(lines) <= 2 * len(started), lines
        assert len(lines) <= 2 * (LOAD_SECONDS / 0.1 + 2), lines  # at most one per back-off
        time.sleep(1.2)  # the longest back-off
        probes = _probe(proxy.port, 0.1)
        assert probes and probes[0] < 1.0, proxy.describe()
        metrics = scrape(admin_port(proxy))
        assert value(metrics, "veloxy_downstream_accept_backoffs_total") >= len(started)
