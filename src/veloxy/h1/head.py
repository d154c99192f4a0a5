"""Parsed message heads: plain data handed from the parser to the connection's application.

Headers are kept as (name, value) byte pairs in arrival order with their original case,
minus the hop-by-hop fields (h1/rules.py), which are summarised in typed attributes instead.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    __slots__ = (
        "chunked",
        "close",
        "content_length",
        "expect_continue",
        "forwarded_for",
        "headers",
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
        self.headers: Headers = []
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

    def header(self, name: bytes) -> bytes | None:
        """First value of an end-to-end header, by lowercase name (slow path: a scan)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method.decode()} {self.target.decode(errors='replace')}>"


class ResponseHead:
    __slots__ = ("chunked", "close", "content_length", "headers", "reason", "status", "upgrade",
                 "version")

    def __init__(self) -> None:
        self.status: int = 0
        self.reason: bytes = b""
        self.version: str = "1.1"
        self.headers: Headers = []
        self.content_length: int | None = None
        self.chunked: bool = False
        self.close: bool = False
        self.upgrade: bytes | None = None

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"
