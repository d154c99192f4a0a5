"""Routes compiled once from config; first match wins.

Matching runs per request, so the compiled form does the cheap tests first (method set,
path prefix as a bytes startswith) and normalises the Host header only when some route
looks at it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from veloxy.config import Route as RouteConfig
from veloxy.h1.head import RequestHead
from veloxy.upstream.group import Group


class CompiledRoute:
    __slots__ = ("exact_host", "group", "headers", "host_suffix", "methods", "prefix",
                 "strip_prefix")

    def __init__(self, config: RouteConfig, group: Group) -> None:
        match = config.match
        self.group = group
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

    def rewrite(self, target: bytes) -> bytes:
        """The upstream request target: the prefix removed when strip_prefix is set."""
        if not self.strip_prefix:
            return target
        rest = target[len(self.prefix):]
        if not rest.startswith(b"/"):
            rest = b"/" + rest
        return rest


class Router:
    def __init__(self, routes: Sequence[RouteConfig], groups: Mapping[str, Group]) -> None:
        self.routes = [CompiledRoute(route, groups[route.upstream]) for route in routes]
        self._needs_host = any(
            r.exact_host is not None or r.host_suffix is not None for r in self.routes
        )
        first = self.routes[0] if self.routes else None
        #: The first route takes every request (the common single-route set-up).
        self._catch_all = first if first is not None and first.matches_everything else None

    def match(self, head: RequestHead) -> CompiledRoute | None:
        if self._catch_all is not None:
            return self._catch_all
        host = None
        if self._needs_host and head.host is not None:
            host = head.host.lower()
            if host.startswith(b"["):  # IPv6 literal: "[::1]:8080"
                host = host[: host.find(b"]") + 1]
            else:
                colon = host.rfind(b":")
                if colon >= 0:
                    host = host[:colon]
        for route in self.routes:
            if route.matches(head, host):
                return route
        return None
