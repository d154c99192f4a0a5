"""Servers written with a host name: resolved at start-up, then again every dns_ttl, with
servers added and dropped as the answer changes (a headless service scaling up and down).

The resolver is replaced by a table the test edits (the system's cannot be changed from a
test); backends listen on 127.0.0.2 and 127.0.0.3 with one port, as the pods behind a
service do. One test uses the real resolver on "localhost".
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.upstream.harness import Backend, drive, eventually, free_port_on, get, proxy
from veloxy.upstream import discovery

pytestmark = pytest.mark.timeout(60)


def test_a_server_given_by_host_name_is_resolved(run) -> None:
    async def scenario() -> None:
        backend = await Backend("local").start()
        try:
            async with proxy([f"http://localhost:{backend.port}"]) as p:
                assert (await get(p.port)).status == 200
                (server,) = p.group().servers
                assert (server.name, server.host) == ("localhost", "127.0.0.1")
        finally:
            await backend.kill()

    run(scenario())


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The answers the resolver gives, by name; a name missing from it does not resolve."""
    answers: dict[str, list[str]] = {}

    def lookup(host: str, port: int) -> list[str]:
        if discovery.is_ip(host):
            return [host]
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers[host])

    async def resolve(host: str, port: int) -> list[str]:
        return lookup(host, port)

    monkeypatch.setattr(discovery, "resolve_now", lookup)
    monkeypatch.setattr(discovery, "resolve", resolve)
    return answers


def _loopback_port() -> int:
    try:
        return free_port_on(["127.0.0.2", "127.0.0.3"])
    except OSError:
        pytest.skip("127.0.0.2 and 127.0.0.3 are not usable here")


def test_servers_follow_the_dns_answer(run, dns) -> None:
    port = _loopback_port()

    async def scenario() -> None:
        two = await Backend("two", "127.0.0.2").start(port)
        three = await Backend("three", "127.0.0.3").start(port)
        dns["svc.test"] = ["127.0.0.2"]
        try:
            async with proxy([f"http://svc.test:{port}"], dns_ttl="50ms") as p:
                group = p.group()
                assert {r.backend for r in await drive(p.port, 10)} == {"two"}
                dns["svc.test"] = ["127.0.0.2", "127.0.0.3"]  # scaled up
                await eventually(lambda: len(group.servers) == 2)
                responses = await drive(p.port, 20)
                assert all(r.status == 200 for r in responses)
                assert {r.backend for r in responses} == {"two", "three"}
                dropped = group.servers[0]
                dns["svc.test"] = ["127.0.0.3"]  # scaled down
                await eventually(lambda: len(group.servers) == 1)
                assert dropped.pool.closed and dropped.host == "127.0.0.2"
                responses = await drive(p.port, 10)
                assert {(r.status, r.backend) for r in responses} == {(200, "three")}
                del dns["svc.test"]  # the resolver fails: keep what we know
                await asyncio.sleep(0.2)  # a few refresh rounds
                assert [s.host for s in group.servers] == ["127.0.0.3"]
                assert (await get(p.port)).status == 200
        finally:
            await two.kill()
            await three.kill()

    run(scenario())


def test_a_name_that_does_not_resolve_yet_gives_503_until_it_does(run, dns) -> None:
    port = _loopback_port()

    async def scenario() -> None:
        two = await Backend("two", "127.0.0.2").start(port)
        try:
            async with proxy([f"http://later.test:{port}"], dns_ttl="50ms") as p:
                response = await get(p.port)
                assert response.status == 503 and b"did not resolve" in response.body
                dns["later.test"] = ["127.0.0.2"]
                await eventually(lambda: bool(p.group().servers))
                assert (await get(p.port)).status == 200
        finally:
            await two.kill()

    run(scenario())
