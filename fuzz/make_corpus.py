"""Writes the seed corpora: fuzz/corpus/h1 (h1_differential.py), fuzz/corpus/h2
(h2_server.py) and fuzz/corpus/hpack (hpack_differential.py). Run after changing a seed:
python fuzz/make_corpus.py

H1 seeds follow h1_differential.py's layout (flags byte, split byte, wire bytes): browser and
API heads, pipelining, chunked bodies, 1xx/101/204/304 and HEAD responses, and the shapes of
request smuggling: Content-Length with Transfer-Encoding, duplicate Content-Length,
obs-fold, bare LF, NUL, over-long lines. H2 seeds follow h2_server.py's (a settings byte,
then client frames after the preface); HPACK seeds hpack_differential.py's.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent

REQUEST, RESPONSE, HEAD_RESPONSE, NO_FINISH = 0, 1, 3, 16

BROWSER = (b"GET /search?q=veloxy&lang=en HTTP/1.1\r\nHost: www.example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
           b"Firefox/128.0\r\n"
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Referer: https://www.example.com/\r\nConnection: keep-alive\r\n"
           b"Cookie: session=abc123; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
API_POST = (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\n"
            b"Content-Type: application/json\r\n"
            b"Authorization: Bearer abc.def.ghi\r\nContent-Length: 17\r\n\r\n{\"name\": \"thing\"}")
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
CHUNKED_POST = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

REQUESTS = {
    "get": GET,
    "browser": BROWSER,
    "api-post": API_POST,
    "pipelined": GET + API_POST + BROWSER,
    "chunked": CHUNKED_POST,
    "http10": b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
    "close-then-more": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET,
    "upgrade": (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\nframes"),
    "expect": (b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
               b"abc"),
    "cl-te": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"),
    "te-cl": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Length: 3\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
    "duplicate-cl": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                     b"Content-Length: 2\r\n\r\nab"),
    "cl-list": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nab",
    "te-not-last": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                    b"0\r\n\r\n"),
    "te-obfuscated": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n  b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare-lf-mixed": b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: h\r\n\r\n",
    "nul-value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "nul-target": b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n",
    "long-target": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "long-header": b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 70000 + b"\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200))
                    + b"\r\n",
    "hop-by-hop": (b"GET /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Gone\r\n"
                   b"X-Gone: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                   b"X-Forwarded-For: 1.2.3.4\r\n\r\n"),
    "absolute-form": b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
    "connect": b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    "chunk-ext-bad": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5;\x01\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-huge": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"fffffffffffffffff\r\n"),
    "http09": b"GET /\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
RESPONSES = {
    "200": OK,
    "200-empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "404-empty": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" + OK,
    "api-json": (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /i/1\r\n"
                 b"Cache-Control: no-store\r\nContent-Length: 11\r\n\r\n{\"id\": 1}\r\n"),
    "pipelined": OK + b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"
                 + b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 120\r\n\r\n" + OK,
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    "100-then-200": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    "103-then-200": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK,
    "101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nws"),
    "204": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 120\r\n\r\n",
    "close-delimited": b"HTTP/1.1 200 OK\r\n\r\nabc",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "close-then-more": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokXX",
    "cl-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\n"),
    "duplicate-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
    "nul": b"HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 1\r\n\r\nx",
    "long-header": b"HTTP/1.1 200 OK\r\nX: " + b"v" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    "no-reason": b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
    "status-999": b"HTTP/1.1 999 Odd\r\nContent-Length: 1\r\n\r\nx",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
}


def h1_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, wire in REQUESTS.items():
        seeds[f"req-{name}"] = bytes([REQUEST, 0]) + wire
        if len(wire) > 4096:
            continue  # (the big ones once: they make the corpus heavy)
        seeds[f"req-{name}-split"] = bytes([REQUEST, 7]) + wire
        seeds[f"req-{name}-small-limits"] = bytes([REQUEST | 4, 3]) + wire
    for name, wire in RESPONSES.items():
        seeds[f"resp-{name}"] = bytes([RESPONSE, 0]) + wire
        if len(wire) > 4096:
            continue
        seeds[f"resp-{name}-split"] = bytes([RESPONSE, 5]) + wire
        seeds[f"resp-{name}-head"] = bytes([HEAD_RESPONSE, 2]) + wire
    return seeds


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) \
        + struct.pack(">I", stream) + payload


DATA, HEADERS, PRIORITY, RST, SETTINGS, PING, GOAWAY, WINDOW, CONTINUATION = \
    0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, PADDED = 1, 4, 8


def hpack_get(path: bytes = b"/") -> bytes:
    """:method GET, :scheme http, :path, :authority h (literal without indexing)."""
    def literal(name: bytes, value: bytes) -> bytes:
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return b"\x82\x86" + literal(b":path", path) + literal(b":authority", b"h")


def h2_seeds() -> dict[str, bytes]:
    settings = frame(SETTINGS, 0, 0, b"")
    get = frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_get())
    post = (frame(HEADERS, END_HEADERS, 3, b"\x83\x86" + hpack_get()[2:])
            + frame(DATA, 0, 3, b"hello") + frame(DATA, END_STREAM, 3, b""))
    return {
        "get": b"\x00" + settings + get,
        "post": b"\x00" + settings + post,
        "two-streams": b"\x00" + settings + get + frame(HEADERS, END_STREAM | END_HEADERS, 3,
                                                        hpack_get(b"/2")),
        "continuation": b"\x00" + settings + frame(HEADERS, END_STREAM, 1, hpack_get()[:6])
                        + frame(CONTINUATION, END_HEADERS, 1, hpack_get()[6:]),
        "ping-window": b"\x01" + settings + frame(PING, 0, 0, b"12345678")
                       + frame(WINDOW, 0, 0, b"\x00\x01\x00\x00") + get,
        "rst": b"\x00" + settings + frame(HEADERS, END_HEADERS, 1, hpack_get())
               + frame(RST, 0, 1, b"\x00\x00\x00\x08"),
        "goaway": b"\x00" + settings + get
                  + frame(GOAWAY, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
        "padded": b"\x00" + settings + frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1,
                                             b"\x03" + hpack_get() + b"\x00\x00\x00"),
        "priority": b"\x00" + settings + frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10") + get,
        "settings-flood": b"\x02" + settings * 50,
        "bad-preface-frame": b"\x00" + frame(DATA, 0, 0, b"x"),
    }


def hpack_seeds() -> dict[str, bytes]:
    """hpack_differential.py's layout: a flags byte, then length-prefixed header blocks, as
    hpack's Encoder writes them for h2load's request, a browser's, and tables small enough
    to evict."""
    from hpack import Encoder, NeverIndexedHeaderTuple

    h2load = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
              (b":authority", b"127.0.0.1:8443"), (b"user-agent", b"h2load nghttp2/1.52.0")]
    browser = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"),
               (b":path", b"/search?q=veloxy"), (b"accept", b"text/html,*/*;q=0.8"),
               (b"accept-language", b"en-US,en;q=0.5"), (b"cookie", b"session=abc123"),
               NeverIndexedHeaderTuple(b"authorization", b"Bearer abc.def")]

    def blocks(headers: list, times: int, table: int = 4096, huffman: bool = True) -> bytes:
        encoder = Encoder()
        if table != 4096:
            encoder.header_table_size = table
        out = b""
        for i in range(times):
            block = encoder.encode([*headers, (b"x-n", b"%d" % i)], huffman=huffman)
            out += bytes([len(block)]) + block
        return out

    return {
        "h2load": b"\x00" + blocks(h2load, 3),
        "browser": b"\x00" + blocks(browser, 2),
        "plain-literals": b"\x00" + blocks(browser, 2, huffman=False),
        "evicting": b"\x01" + blocks(browser, 4, table=256),
        "tiny-table": b"\x02" + blocks(h2load, 3, table=64),
        "list-limit": b"\x0c" + blocks(browser, 1),
    }


def write(directory: Path, seeds: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for name, data in seeds.items():
        digest = hashlib.sha1(data).hexdigest()[:8]
        (directory / f"{name}-{digest}").write_bytes(data)


if __name__ == "__main__":
    write(HERE / "corpus" / "h1", h1_seeds())
    write(HERE / "corpus" / "h2", h2_seeds())
    write(HERE / "corpus" / "hpack", hpack_seeds())
