"""The request an exchange sends upstream, and the forwarding fields in it, written once.

`forwarding_fields` is the one definition of what a proxy adds (Go's
`ProxyRequest.SetXForwarded`): X-Forwarded-For keeps the chain the client sent and appends
the client's address; X-Real-IP, X-Forwarded-Proto (the listener's scheme) and
X-Forwarded-Host are ours alone (the client's own were dropped by the parser, h1/rules.py).
`Forwarding.h1_fields` renders them for an HTTP/1.1 upstream (wire form; forward.py puts
the head together) and `h2_request_headers` for an HTTP/2 one (an h2c group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veloxy.http2.headers import CONNECTION_SPECIFIC

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead
    from veloxy.observe.tracing import Trace

Field = tuple[bytes, bytes]

#: Cached renderings of the forwarding fields (Forwarding.cache) are dropped
#: wholesale past this many, so a flood of client addresses cannot grow the cache.
CACHE_LIMIT = 4096


def forwarding_fields(forwarded_for: bytes | None, client_ip: bytes, scheme: bytes,
                      host: bytes | None) -> list[Field]:
    """The forwarding fields of a request from `client_ip` that came with
    X-Forwarded-For `forwarded_for` (joined) and Host `host`, on a listener of `scheme`."""
    chain = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
    fields = [(b"X-Forwarded-For", chain), (b"X-Real-IP", client_ip),
              (b"X-Forwarded-Proto", scheme)]
    if host is not None:
        fields.append((FORWARDED_HOST, host))
    return fields


FORWARDED_HOST = b"X-Forwarded-Host"
#: forwarding_fields' last field up to its value, in wire form: the HTTP/1.1 cache leaves
#: it out (a key per Host would hash a new bytes object per request), and forward.py
#: appends it.
FORWARDED_HOST_PREFIX = FORWARDED_HOST + b": "


def _wire(fields: list[Field]) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in fields])


class Forwarding:
    """One worker's forwarding fields (ProxyApp.forwarding), rendered for HTTP/1.1 and
    HTTP/2 upstreams.

    For HTTP/1.1 a rendering is cached per (client address, scheme) when the client sent no
    X-Forwarded-For (most do not): the exchange looks the cache up inline (forward.py) and
    a cached bytes object is then the whole cost, with X-Forwarded-Host appended."""

    def __init__(self) -> None:
        #: scheme -> client address -> the fields but X-Forwarded-Host, in wire form (two
        #: lookups by bytes whose hashes are cached cost less than one by a new tuple).
        self.cache: dict[bytes, dict[bytes, bytes]] = {}

    def h1_fields(self, forwarded_for: bytes | None, client_ip: bytes, scheme: bytes) -> bytes:
        """The fields but X-Forwarded-Host in wire form, cached when the client sent no
        X-Forwarded-For (see the class docstring)."""
        data = _wire(forwarding_fields(forwarded_for, client_ip, scheme, None))
        if forwarded_for is None:
            cache = self.cache.setdefault(scheme, {})
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[client_ip] = data
        return data


#: What `Forwarding.cache.get(scheme, NO_CACHE)` gives for a scheme not cached yet.
NO_CACHE: dict[bytes, bytes] = {}


def h2_request_headers(head: RequestHead, path: bytes, authority: bytes, client_ip: bytes,
                       scheme: bytes, trace: Trace | None,
                       upstream_scheme: bytes = b"http") -> list[Field]:
    """The header list sent to an HTTP/2 upstream (h2c, or h2 with `upstream_scheme`
    https): pseudo-fields, the client's
    end-to-end fields (names lowercased, as HTTP/2 requires; connection-specific ones
    dropped, RFC 9113 §8.2.2; the trace context's traceparent when tracing), `te: trailers`
    (gRPC servers require it), then the forwarding fields."""
    headers = [(b":method", head.method), (b":scheme", upstream_scheme),
               (b":authority", authority), (b":path", path)]
    fields = head.fields if trace is None else trace.fields
    for i in range(0, len(fields), 4):
        name = fields[i].lower()
        if name != b"host" and name not in CONNECTION_SPECIFIC:
            headers.append((name, fields[i + 2]))
    headers.append((b"te", b"trailers"))
    headers += [(name.lower(), value) for name, value in
                forwarding_fields(head.forwarded_for, client_ip, scheme, head.host)]
    return headers
