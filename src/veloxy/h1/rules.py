"""HTTP/1.1 header rules for an intermediary, as data with the RFC section beside them.

The parser callbacks look each lowercased header name up in one of the role tables below,
so the per-header cost is one ``bytes.lower()`` and one dict lookup (see net/ and h1/parser.py).
"""

from __future__ import annotations

# RFC 9110 §7.6.1: hop-by-hop fields are meaningful only for a single connection and must
# not be forwarded. Connection names further hop-by-hop fields per message. Keep-Alive and
# Proxy-Connection are obsolete but still sent by old clients (Go's reverseproxy.go strips
# the same list). TE and Trailer: §10.1.4 and §6.6.2; Transfer-Encoding: RFC 9112 §6.1 (we
# re-frame bodies ourselves); Upgrade: RFC 9110 §7.8 (kept only while upgrading).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Roles of request header fields seen by the downstream parser. A name absent from the table
# is end-to-end and forwarded as it came.
KEEP = 0  # never stored in the table; documents the default
DROP = 1  # hop-by-hop without further meaning to us
CONNECTION = 2  # hop-by-hop; its tokens name more hop-by-hop fields and close/keep-alive
TRANSFER_ENCODING = 3  # hop-by-hop; says the body is chunked
UPGRADE = 4  # hop-by-hop unless the request is an upgrade (WebSocket)
HOST = 5  # kept; routing key and X-Forwarded-Host
CONTENT_LENGTH = 6  # kept; framing of the body (the parser already refused duplicates)
EXPECT = 7  # kept; 100-continue is negotiated end to end
FORWARDED_FOR = 8  # replaced: the client's value is kept and ours appended
FORWARDING = 9  # replaced by our own value (X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host)

REQUEST_ROLES: dict[bytes, int] = {
    b"connection": CONNECTION,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"upgrade": UPGRADE,
    b"host": HOST,
    b"content-length": CONTENT_LENGTH,
    b"expect": EXPECT,
    b"x-forwarded-for": FORWARDED_FOR,
    b"x-real-ip": FORWARDING,
    b"x-forwarded-proto": FORWARDING,
    b"x-forwarded-host": FORWARDING,
}

RESPONSE_ROLES: dict[bytes, int] = {
    b"connection": CONNECTION,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"upgrade": UPGRADE,
    b"content-length": CONTENT_LENGTH,
}

# RFC 9110 §9.2.2: methods whose repetition has the same effect as one request; only
# these are retried after a failure that may have reached the upstream application.
IDEMPOTENT_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"}
)

# RFC 9112 §6.3: responses that never carry content whatever their framing headers say.
def status_has_no_body(status: int) -> bool:
    return status < 200 or status == 204 or status == 304


def connection_tokens(value: bytes) -> list[bytes]:
    """The comma-separated, case-insensitive tokens of a Connection header (RFC 9110 §7.6.1)."""
    return [token.strip().lower() for token in value.split(b",") if token.strip()]
