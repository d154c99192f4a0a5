"""Parsed message heads: plain data handed from the parser to the connection's application.

Header fields are kept in arrival order with their original case, minus the hop-by-hop
fields (h1/rules.py), which are summarised in typed attributes instead. They are stored
flat, already in wire form: `fields` is [name, b": ", value, b"\r\n", name, ...], so that
forwarding a head is one `b"".join`. Formatting pairs (`b"%s: %s\r\n" % pair`) cost about
0.35 µs per header; the join costs a tenth of that. `headers` gives (name, value) pairs
for the slow paths (route matching on a header, tests).
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]
SEP = b": "
CRLF = b"\r\n"


def pairs(fields: list[bytes]) -> Headers:
    return list(zip(fields[0::4], fields[2::4], strict=True))


def flatten(headers: Headers) -> list[bytes]:
    fields: list[bytes] = []
    for name, value in headers:
        fields += (name, SEP, value, CRLF)
    return fields


class RequestHead:
    """A request head. Attributes other than `fields` are class-level defaults that the
    parser overrides only when the request says otherwise: most requests set three of
    them, and every attribute store costs on the per-request path."""

    method: bytes = b""
    target: bytes = b""
    version: str = "1.1"
    host: bytes | None = None
    content_length: int | None = None
    chunked: bool = False
    #: The client asked for the connection to end after this exchange (or is HTTP/1.0
    #: without keep-alive).
    close: bool = False
    #: The protocol named in Upgrade when the request asks to switch (WebSocket).
    upgrade: bytes | None = None
    expect_continue: bool = False
    #: The X-Forwarded-For value(s) the client sent, joined; ours is appended to it.
    forwarded_for: bytes | None = None

    def __init__(self) -> None:
        self.fields: list[bytes] = []

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def headers(self) -> Headers:
        return pairs(self.fields)

    def header(self, name: bytes) -> bytes | None:
        """First value of an end-to-end header, by lowercase name (slow path: a scan)."""
        fields = self.fields
        for i in range(0, len(fields), 4):
            if fields[i].lower() == name:
                return fields[i + 2]
        return None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method.decode()} {self.target.decode(errors='replace')}>"


class ResponseHead:
    """A response head; defaults at class level as in RequestHead."""

    status: int = 0
    reason: bytes = b""
    content_length: int | None = None
    chunked: bool = False
    close: bool = False
    upgrade: bytes | None = None

    def __init__(self) -> None:
        self.fields: list[bytes] = []

    @property
    def headers(self) -> Headers:
        return pairs(self.fields)

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"
