"""Parsed message heads: plain data handed from the parser to the connection's application.

Header fields are kept in arrival order with their original case, minus the hop-by-hop
fields (h1/rules.py), which are summarised in typed attributes instead. They are stored
flat, already in wire form: `fields` is [name, b": ", value, b"\r\n", name, ...], and
`wire` is the same joined (b"Name: value\r\n..."), which is what forwarding a head
sends. Formatting pairs (`b"%s: %s\r\n" % pair`) costs a formatting call per header;
the join costs one call for the whole head. `headers` gives (name, value) pairs for the
slow paths (route matching on a header, tests).

A head has one of the two forms to begin with and makes the other on first use: the
Python parsers build `fields` field by field, the C fast lane (h1/_fastpath.c) builds
`wire` in one piece, and most heads it makes are forwarded without ever being split.
Neither form is changed once the head is handed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Headers = list[tuple[bytes, bytes]]
SEP = b": "
CRLF = b"\r\n"


class _Derived:
    """An attribute computed on first use and then stored on the instance (a non-data
    descriptor: the instance's own value wins). functools.cached_property without its
    per-access lock, which costs on 3.11's hot path."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self._compute = compute
        self._name = compute.__name__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._compute(obj)
        # setattr, not obj.__dict__[...]: touching __dict__ turns CPython's compact
        # per-instance values into a real dict, which every later access pays for
        setattr(obj, self._name, value)
        return value


def _fields_of(head: Any) -> list[bytes]:
    """`fields` from `wire` (lines "Name: value\r\n", as the C fast lane writes them)."""
    fields: list[bytes] = []
    for line in head.wire.split(CRLF)[:-1]:
        name, _, value = line.partition(SEP)
        fields += (name, SEP, value, CRLF)
    return fields


def _wire_of(head: Any) -> bytes:
    return b"".join(head.fields)


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
        self.fields = []

    # Descriptors typed as the values they give: an instance's own value wins (see _Derived).
    fields: list[bytes] = _Derived(_fields_of)  # type: ignore[assignment]  # a descriptor typed as the value it gives
    wire: bytes = _Derived(_wire_of)  # type: ignore[assignment]  # a descriptor typed as the value it gives

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
        self.fields = []

    # Descriptors typed as the values they give: an instance's own value wins (see _Derived).
    fields: list[bytes] = _Derived(_fields_of)  # type: ignore[assignment]  # a descriptor typed as the value it gives
    wire: bytes = _Derived(_wire_of)  # type: ignore[assignment]  # a descriptor typed as the value it gives

    @property
    def headers(self) -> Headers:
        return pairs(self.fields)

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"
