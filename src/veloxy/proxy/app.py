"""The proxy as an Application of net.server: one per worker, holding the router and the
upstream groups, and the per-request work that does not belong to one exchange (building
the upstream request head)."""

from __future__ import annotations

from veloxy.config import Config
from veloxy.h1.head import RequestHead
from veloxy.net.server import ServerConnection
from veloxy.net.timers import DeadlineSweeper
from veloxy.proxy.forward import ProxyExchange
from veloxy.proxy.router import Router
from veloxy.upstream.group import Group


class ProxyApp:
    def __init__(self, config: Config, sweeper: DeadlineSweeper, *, scheme: bytes = b"http"
                 ) -> None:
        self.config = config
        self.groups = {name: Group(group, sweeper) for name, group in config.upstreams.items()}
        for group in self.groups.values():
            group.start()  # health checks and DNS refresh, where configured
        self.router = Router(config.routes, self.groups)
        self._scheme = scheme
        self._forwarding_cache: dict[bytes, bytes] = {}

    def start_exchange(self, conn: ServerConnection, head: RequestHead) -> ProxyExchange:
        return ProxyExchange(self, conn, head)

    def upstream_request_head(self, head: RequestHead, target: bytes, client_ip: bytes) -> bytes:
        """The head sent upstream: the client's end-to-end headers, then ours.

        X-Forwarded-For keeps what the client sent and appends the client's address;
        X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host are ours alone (the client's
        were dropped by the parser). Framing is ours too: Content-Length passes through,
        a chunked body is re-chunked, and Connection is only sent to ask for an upgrade.
        """
        parts = [head.method, b" ", target, b" HTTP/1.1\r\n", *head.fields]
        if head.forwarded_for is None:
            forwarding = self._forwarding_cache.get(client_ip)
            if forwarding is None:
                forwarding = self._forwarding_headers(None, client_ip)
                if len(self._forwarding_cache) > 4096:
                    self._forwarding_cache.clear()
                self._forwarding_cache[client_ip] = forwarding
        else:
            forwarding = self._forwarding_headers(head.forwarded_for, client_ip)
        parts.append(forwarding)
        if head.host is not None:
            parts.append(b"X-Forwarded-Host: " + head.host + b"\r\n")
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if head.upgrade is not None:
            parts.append(b"Connection: Upgrade\r\nUpgrade: " + head.upgrade + b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _forwarding_headers(self, forwarded_for: bytes | None, client_ip: bytes) -> bytes:
        chain = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
        return (b"X-Forwarded-For: " + chain + b"\r\nX-Real-IP: " + client_ip
                + b"\r\nX-Forwarded-Proto: " + self._scheme + b"\r\n")

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
