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
    __slots__ = (
        "chunked",
        "close",
        "content_length",
        "expect_continue",
        "fields",
        "forwarded_for",
        "host",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method: bytes = b""
        self.target: bytes = b""
        self.version: str = "1.1"
        self.fields: list[bytes] = []
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked: bool = False
        #: The client asked for the connection to end after this exchange (or is HTTP/1.0
        #: without keep-alive).
        self.close: bool = False
        #: The protocol named in Upgrade when the request asks to switch (WebSocket).
        self.upgrade: bytes | None = None
        self.expect_continue: bool = False
        #: The X-Forwarded-For value(s) the client sent, joined; ours is appended to it.
        self.forwarded_for: bytes | None = None

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
    __slots__ = ("chunked", "close", "content_length", "fields", "reason", "status", "upgrade",
                 "version")

    def __init__(self) -> None:
        self.status: int = 0
        self.reason: bytes = b""
        self.version: str = "1.1"
        self.fields: list[bytes] = []
        self.content_length: int | None = None
        self.chunked: bool = False
        self.close: bool = False
        self.upgrade: bytes | None = None

    @property
    def headers(self) -> Headers:
        return pairs(self.fields)

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"
