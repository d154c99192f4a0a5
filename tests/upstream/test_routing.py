"""Routing with indexes (host, then path prefix) must pick exactly what a scan of the routes
in order would: the first match. Hypothesis compares the two on random route tables; the
rest checks wildcard hosts, hundreds of routes, and the 404 through the proxy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.upstream.harness import Client, backends, proxy
from veloxy.config import parse_config
from veloxy.h1.head import RequestHead, flatten
from veloxy.proxy.router import Router

pytestmark = pytest.mark.timeout(60)

ROUTE_HOSTS = [None, "a.example.com", "example.com", "*.example.com", "*.a.example.com",
               "other.org", "*.org"]
PREFIXES = ["/", "/a", "/a/", "/ab", "/b/", "/a/b/", "/api/v1/"]
METHODS = [None, ["GET"], ["POST"], ["GET", "HEAD"]]
REQUEST_HOSTS = [None, "a.example.com", "A.Example.COM:8080", "example.com", "x.a.example.com",
                 "b.example.com", "other.org", "www.other.org", "[::1]:80", "example.com."]
TARGETS = ["/", "/a", "/a/x", "/ab", "/abc?q=1", "/b/", "/a/b/c", "/api/v1/users", "/zzz"]


def route_table(routes: list[dict[str, Any]]) -> Router:
    config = parse_config({"routes": routes,
                           "upstreams": {"g": {"servers": ["http://127.0.0.1:9"]}}})
    return Router(config.routes, {"g": object()})  # type: ignore[dict-item]


def request(method: str, target: str, host: str | None, canary: bool) -> RequestHead:
    head = RequestHead()
    head.method = method.encode()
    head.target = target.encode()
    head.host = host.encode() if host is not None else None
    head.fields = flatten([(b"X-Canary", b"1")] if canary else [])
    return head


route_strategy = st.builds(
    lambda host, prefix, methods, canary: {"match": {
        **({"host": host} if host else {}), "path_prefix": prefix,
        **({"methods": methods} if methods else {}),
        **({"headers": {"X-Canary": "1"}} if canary else {})}, "upstream": "g"},
    st.sampled_from(ROUTE_HOSTS), st.sampled_from(PREFIXES), st.sampled_from(METHODS),
    st.booleans())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes=st.lists(route_strategy, min_size=1, max_size=25),
       requests=st.lists(st.tuples(st.sampled_from(["GET", "POST", "HEAD"]),
                                   st.sampled_from(TARGETS), st.sampled_from(REQUEST_HOSTS),
                                   st.booleans()), min_size=1, max_size=10))
def test_indexed_router_picks_what_a_scan_picks(routes, requests) -> None:
    router = route_table(routes)
    for args in requests + requests:  # twice: the second time from the host cache
        head = request(*args)
        assert router.match(head) is router.match_by_scan(head), (args, routes)


def test_wildcard_hosts_match_subdomains_only() -> None:
    router = route_table([{"match": {"host": "*.example.com"}, "upstream": "g"}])
    hits = {host: router.match(request("GET", "/", host, False)) is not None
            for host in ("a.example.com", "a.b.example.com", "example.com", "badexample.com",
                         "A.EXAMPLE.com:443")}
    assert hits == {"a.example.com": True, "a.b.example.com": True, "example.com": False,
                    "badexample.com": False, "A.EXAMPLE.com:443": True}


def test_hundreds_of_routes_first_match_wins() -> None:
    routes = []
    for i in range(300):
        match: dict[str, Any] = {"path_prefix": f"/svc{i}/"}
        if i % 3 == 0:
            match["host"] = f"h{i}.example.com"
        elif i % 3 == 1:
            match["host"] = f"*.t{i}.example.com"
        routes.append({"match": match, "upstream": "g"})
    routes.append({"match": {"path_prefix": "/svc2"}, "upstream": "g"})  # shadowed by svc2/
    routes.append({"upstream": "g"})
    router = route_table(routes)
    cases = [("h297.example.com", "/svc297/x", 297), ("a.t298.example.com", "/svc298/", 298),
             ("any.host", "/svc299/y", 299), ("any.host", "/svc2/", 2),
             ("any.host", "/svc297/x", 300), ("any.host", "/svc198/x", 301),
             ("any.host", "/svc2x", 300),
             (None, "/svc5/", 5), (None, "/nothing", 301)]
    for host, target, expected in cases:
        found = router.match(request("GET", target, host, False))
        assert found is not None and found.index == expected, (host, target, found)


def test_no_route_gives_404_with_a_short_body(run) -> None:
    async def scenario() -> None:
        async with backends("api", "web") as (api, web), proxy(config={
                "routes": [{"match": {"host": "*.example.com", "path_prefix": "/api/"},
                            "upstream": "api", "strip_prefix": True},
                           {"match": {"host": "www.example.org"}, "upstream": "web"}],
                "upstreams": {"api": {"servers": [api.url]}, "web": {"servers": [web.url]}},
        }) as p:
            client = Client(p.port)  # its Host header, test.local, matches no route
            response = await client.request("/api/users")
            assert response.status == 404 and len(response.body) < 100, response
            assert (await client.request("/api/users")).status == 404  # kept alive
            await client.close()
            assert api.hits == 0 and web.hits == 0

    run(scenario())
