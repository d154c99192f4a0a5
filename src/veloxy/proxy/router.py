"""Routes compiled once from config; first match wins.

Matching runs per request, and a config may hold hundreds of routes, so the router never
walks them all. It is indexed twice, at load:

1. By host. Routes for an exact host sit in a dict under it, wildcard routes
   ("*.example.com") under their suffix (".example.com"), and routes for any host in one
   list. A request's candidates are its exact host's routes, those of every suffix of its
   host that starts at a dot ("a.b.example.com": ".b.example.com", ".example.com", ".com"),
   and the any-host ones, in config order. Which candidates a host gets depends only on which
   of those keys exist, so the candidate sets are few and each is compiled once, on first
   use, and cached (a Host header an attacker varies cannot grow the cache beyond the
   number of distinct sets the config allows).
2. By path prefix, within a candidate set (`PathIndex`): the prefixes grouped by length, so
   a request costs one slice and one dict lookup per distinct prefix length, not one test
   per route. The first route in config order among those that match wins, as in a scan.

Everything else (methods, headers) is tested only on the routes whose prefix matched. The
common single catch-all route skips all of it. benchmarks/balance_cost.py measures the cost
with hundreds of routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from veloxy.config import Route as RouteConfig
from veloxy.h1.head import RequestHead
from veloxy.observe.metrics import RouteMetrics
from veloxy.upstream.group import Group

if TYPE_CHECKING:
    from veloxy.proxy.admission import Admission


class CompiledRoute:
    __slots__ = ("admission", "exact_host", "group", "headers", "host_suffix", "index", "label",
                 "methods", "metrics", "plain", "prefix", "strip_prefix")

    def __init__(self, config: RouteConfig, group: Group, index: int = 0) -> None:
        match = config.match
        self.group = group
        #: Position in the config: the lower wins when several routes match.
        self.index = index
        self.prefix = match.path_prefix.encode("ascii")
        self.strip_prefix = config.strip_prefix and self.prefix != b"/"
        self.methods = frozenset(m.encode("ascii") for m in match.methods) if match.methods \
            else None
        self.exact_host: bytes | None = None
        self.host_suffix: bytes | None = None
        if match.host is not None:
            host = match.host.encode("idna")
            if host.startswith(b"*."):
                self.host_suffix = host[1:]  # ".example.com"
            else:
                self.exact_host = host
        self.headers = tuple((n.encode("latin-1"), v.encode("latin-1"))
                             for n, v in match.headers)
        #: No method or header condition: host and prefix (checked by the indexes) decide.
        self.plain = self.methods is None and not self.headers
        #: The route's name in metrics and logs: its host and prefix ("api.example.com/v1/",
        #: "/static/"); the Router makes duplicates unique with "#index".
        self.label = (match.host or "") + match.path_prefix
        #: Its request counters (observe/metrics.py); the proxy binds the shared ones.
        self.metrics = RouteMetrics(self.label)
        #: Its rate limit, in-flight cap and load shedding (proxy/admission.py), bound by
        #: the proxy; None (no check, no call per request) when it has none of them.
        self.admission: Admission | None = None

    @property
    def matches_everything(self) -> bool:
        return (self.prefix == b"/" and self.methods is None and self.exact_host is None
                and self.host_suffix is None and not self.headers)

    def matches(self, head: RequestHead, host: bytes | None) -> bool:
        if self.methods is not None and head.method not in self.methods:
            return False
        if not head.target.startswith(self.prefix):
            return False
        if self.exact_host is not None and host != self.exact_host:
            return False
        if self.host_suffix is not None and (host is None or not host.endswith(self.host_suffix)):
            return False
        if self.headers:
            return all(head.header(name) == value for name, value in self.headers)
        return True

    def matches_rest(self, head: RequestHead) -> bool:
        """The conditions besides host and path prefix, which the indexes have checked."""
        if self.methods is not None and head.method not in self.methods:
            return False
        if self.headers:
            return all(head.header(name) == value for name, value in self.headers)
        return True

    def rewrite(self, target: bytes) -> bytes:
        """The upstream request target: the prefix removed when strip_prefix is set."""
        if not self.strip_prefix:
            return target
        rest = target[len(self.prefix):]
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        return rest


class PathIndex:
    """Routes of one candidate set, indexed by path prefix (see the module docstring)."""

    __slots__ = ("_levels",)

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        by_length: dict[int, dict[bytes, list[CompiledRoute]]] = {}
        for route in sorted(routes, key=lambda r: r.index):
            by_length.setdefault(len(route.prefix), {}).setdefault(route.prefix, []).append(route)
        #: (prefix length, {prefix: routes in config order}), shortest first.
        self._levels = sorted(by_length.items())

    def match(self, head: RequestHead) -> CompiledRoute | None:
        target = head.target
        size = len(target)
        best: CompiledRoute | None = None
        for length, prefixes in self._levels:
            if length > size:
                break
            routes = prefixes.get(target[:length])
            if routes is None:
                continue
            for route in routes:
                if best is not None and route.index > best.index:
                    break
                if route.plain or route.matches_rest(head):
                    best = route
                    break
        return best


class Router:
    def __init__(self, routes: Sequence[RouteConfig], groups: Mapping[str, Group]) -> None:
        self.routes = [CompiledRoute(route, groups[route.upstream], index)
                       for index, route in enumerate(routes)]
        seen: set[str] = set()
        for route in self.routes:
            if route.label in seen:
                route.label = f"{route.label}#{route.index}"
            seen.add(route.label)
        self._needs_host = any(
            r.exact_host is not None or r.host_suffix is not None for r in self.routes
        )
        first = self.routes[0] if self.routes else None
        #: The first route takes every request (the common single-route set-up); the
        #: exchange tests it before calling match (one Python call less per request).
        self.catch_all = first if first is not None and first.matches_everything else None
        self._exact: dict[bytes, list[CompiledRoute]] = {}
        self._wild: dict[bytes, list[CompiledRoute]] = {}
        self._any: list[CompiledRoute] = []
        for route in self.routes:
            if route.exact_host is not None:
                self._exact.setdefault(route.exact_host, []).append(route)
            elif route.host_suffix is not None:
                self._wild.setdefault(route.host_suffix, []).append(route)
            else:
                self._any.append(route)
        self._any_index = PathIndex(self._any)
        #: Candidate sets by their key (exact host or None, matching wildcard suffixes).
        self._sets: dict[tuple[bytes | None, tuple[bytes, ...]], PathIndex] = {}
        #: Recent hosts and their candidate set: the per-request lookup.
        self._hosts: dict[bytes, PathIndex] = {}

    def match(self, head: RequestHead) -> CompiledRoute | None:
        if self.catch_all is not None:
            return self.catch_all
        if not self._needs_host or head.host is None:
            return self._any_index.match(head)
        index = self._hosts.get(head.host)
        if index is None:
            index = self._index_for(head.host)
        return index.match(head)

    def _index_for(self, raw_host: bytes) -> PathIndex:
        """The candidate set of a Host header value, built on first use and cached."""
        host = raw_host.lower()
        if host.startswith(b"["):  # IPv6 literal: "[::1]:8080"
            host = host[: host.find(b"]") + 1]
        else:
            colon = host.rfind(b":")
            if colon >= 0:
                host = host[:colon]
        exact = host if host in self._exact else None
        suffixes = tuple(host[dot:] for dot in range(len(host)) if host[dot] == 0x2E
                         and host[dot:] in self._wild)
        key = (exact, suffixes)
        index = self._sets.get(key)
        if index is None:
            routes = list(self._any)
            if exact is not None:
                routes += self._exact[exact]
            for suffix in suffixes:
                routes += self._wild[suffix]
            index = self._sets[key] = PathIndex(routes)
        if len(self._hosts) >= 4096:
            self._hosts.clear()  # bounded: Host headers come from clients
        self._hosts[raw_host] = index
        return index

    def match_by_scan(self, head: RequestHead) -> CompiledRoute | None:
        """The definition the indexes must agree with: the first route that matches, by a
        scan of them all (tests compare the two)."""
        host = None
        if head.host is not None:
            host = head.host.lower()
            if host.startswith(b"["):
                host = host[: host.find(b"]") + 1]
            else:
                colon = host.rfind(b":")
                if colon >= 0:
                    host = host[:colon]
        for route in self.routes:
            if route.matches(head, host):
                return route
        return None
