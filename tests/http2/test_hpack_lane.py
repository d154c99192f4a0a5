"""The C HPACK lane (http2/_hpack.c through hpack_lane.LaneDecoder and LaneEncoder) against
hpack itself.

Whatever the block, LaneDecoder must give what hpack's Decoder gives from the same state:
the same header list (values, and HeaderTuple or NeverIndexedHeaderTuple for each), or the
same exception (class and message), and afterwards the same dynamic table (entries, size,
limits). Blocks come from hpack's Encoder (plain and Huffman literals, never-indexed
fields, dynamic tables small enough to evict, table size updates), from mutations of such
blocks (cut, bytes changed), and from random bytes; both decoders see the same sequence of
blocks, so a difference in table state shows in the blocks that follow.

LaneEncoder must write the bytes hpack's Encoder writes for the same header lists, and
leave the same table (entries, size, pending size changes), table size changes between
blocks included.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hypothesis import given, settings
from hypothesis import strategies as st

from veloxy.http2 import hpack_lane
from veloxy.http2.hpack_lane import LaneDecoder, LaneEncoder, use_lane

pytestmark = pytest.mark.skipif(hpack_lane._hpack is None, reason="the C lane is not built")

STATIC_NAMES = sorted({name for name, _ in HeaderTable.STATIC_TABLE})
STATIC_VALUES = sorted({value for _, value in HeaderTable.STATIC_TABLE if value})

names = st.one_of(st.sampled_from(STATIC_NAMES), st.binary(max_size=40),
                  st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).map(str.encode))
values = st.one_of(st.sampled_from(STATIC_VALUES), st.binary(max_size=120),
                   st.sampled_from([b"", b"GET", b"/", b"h2load nghttp2/1.52.0", b"x" * 3000]))
fields = st.tuples(names, values, st.booleans()).map(
    lambda f: NeverIndexedHeaderTuple(f[0], f[1]) if f[2] else HeaderTuple(f[0], f[1]))
#: What h2 hands its encoder: plain tuples, HeaderTuples, NeverIndexedHeaderTuples; and,
#: for the declined cases, str fields and 3-tuples (sensitive as the third).
encoder_fields = st.one_of(
    fields, st.tuples(names, values),
    st.tuples(names, values).map(lambda f: HeaderTuple(f[0], f[1])),
    st.tuples(st.text(max_size=10), st.text(max_size=10)),
    st.tuples(names, values, st.booleans()))


def outcome(decoder: Decoder, block: bytes) -> tuple[Any, ...]:
    try:
        headers = decoder.decode(block, raw=True)
    except Exception as exc:  # the comparison is the point: any exception
        # (the message may name a memoryview by its address)
        result: tuple[Any, ...] = ("raised", type(exc),
                                   re.sub("0x[0-9a-f]+", "ADDR", str(exc)))
    else:
        result = ("decoded", [(type(h), tuple(h)) for h in headers])
    table = decoder.header_table
    return (*result, list(table.dynamic_entries), table._current_size, table.maxsize,
            decoder.max_allowed_table_size)


def pair(max_list: int = 65536, table_size: int = 4096) -> tuple[Decoder, LaneDecoder]:
    plain, lane = Decoder(max_list), LaneDecoder(max_list)
    for decoder in (plain, lane):
        decoder.header_table_size = table_size
        decoder.max_allowed_table_size = max(table_size, 4096)
    return plain, lane


def same(plain: Decoder, lane: LaneDecoder, block: bytes) -> tuple[Any, ...]:
    expected = outcome(plain, block)
    assert outcome(lane, block) == expected, block
    return expected


def mutate(block: bytes, how: int, where: int, byte: int) -> bytes:
    if not block:
        return bytes([byte])
    where %= len(block)
    if how == 0:
        return block[:where]  # cut
    if how == 1:
        return block[:where] + bytes([byte]) + block[where + 1:]  # one byte changed
    return block[:where] + bytes([byte]) + block[where:]  # one byte inserted


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(st.tuples(st.lists(fields, max_size=12), st.booleans()), min_size=1,
                       max_size=8),
       table_size=st.sampled_from([0, 40, 100, 256, 1024, 4096]),
       max_list=st.sampled_from([200, 4096, 65536]))
def test_encoder_blocks_decode_alike(blocks, table_size, max_list) -> None:
    """Valid blocks, with eviction (small tables) and header lists over the limit."""
    encoder = Encoder()
    encoder.header_table_size = table_size  # (the first block carries the size update)
    plain, lane = pair(max_list, 4096)
    for headers, huffman in blocks:
        result = same(plain, lane, encoder.encode(headers, huffman=huffman))
        if result[0] == "raised":
            break  # hpack's state is not usable after an error (its docs): the connection ends


@settings(max_examples=300, deadline=None)
@given(blocks=st.lists(st.tuples(st.lists(fields, max_size=8), st.booleans(),
                                 st.integers(0, 2), st.integers(0, 10_000),
                                 st.integers(0, 255)), min_size=1, max_size=6),
       table_size=st.sampled_from([64, 256, 4096]))
def test_mutated_blocks_decode_or_fail_alike(blocks, table_size) -> None:
    """Cut and changed blocks: truncation, bad indexes, bad Huffman, stray size updates."""
    encoder = Encoder()
    encoder.header_table_size = table_size
    plain, lane = pair(65536, 4096)
    for headers, huffman, how, where, byte in blocks:
        block = mutate(encoder.encode(headers, huffman=huffman), how, where, byte)
        if same(plain, lane, block)[0] == "raised":
            break


@settings(max_examples=500, deadline=None)
@given(block=st.binary(max_size=64), table_size=st.sampled_from([0, 64, 4096]))
def test_random_bytes_decode_or_fail_alike(block, table_size) -> None:
    plain, lane = pair(65536, table_size)
    # a few entries in the table first, so that dynamic indexes can be valid
    seed = Encoder().encode([(b"x-a", b"1"), (b"x-b", b"2"), (b"user-agent", b"ua")])
    same(plain, lane, seed)
    same(plain, lane, block)


@settings(max_examples=500, deadline=None)
@given(code=st.binary(max_size=40), indexed_name=st.booleans())
def test_huffman_strings_decode_or_fail_alike(code, indexed_name) -> None:
    """Any bytes as a Huffman-coded value (EOS, padding too long or not all ones...)."""
    assert len(code) < 127
    prefix = b"\x04" if indexed_name else b"\x00\x81\x9c"  # :path, or a Huffman name "a"
    block = prefix + bytes([0x80 | len(code)]) + code
    plain, lane = pair()
    same(plain, lane, block)


def test_huffman_padding_edges() -> None:
    """'a' is 00011 (5 bits): with 3 one-bits of padding it is whole; 0-bits or a whole
    byte of padding are errors, hpack's."""
    plain, lane = pair()
    for code in (b"\x1f", b"\x18", b"\x1f\xff", b"\xff\xff\xff\xff", b""):
        same(plain, lane, b"\x04" + bytes([0x80 | len(code)]) + code)


def test_size_update_and_limits_decline_to_hpack() -> None:
    plain, lane = pair()
    assert same(plain, lane, b"\x3f\xe2\x1f\x82")[0] == "raised"  # 4097 > allowed
    plain, lane = pair()
    assert same(plain, lane, b"\x20\x82")[0] == "decoded"  # size 0, then :method GET
    assert same(plain, lane, b"\x82\x20")[0] == "raised"  # update after a field
    plain, lane = pair()
    plain.max_allowed_table_size = lane.max_allowed_table_size = 100  # shrunk: not sent
    assert same(plain, lane, b"\x82")[0] == "raised"
    plain, lane = pair()
    assert same(plain, lane, b"\xbe")[0] == "raised"  # index 62: empty dynamic table
    assert same(plain, lane, b"\xff\xff\xff\xff\xff\xff\x7f")[0] == "raised"  # long int


def test_common_block_is_decoded_in_c() -> None:
    """h2load's request, the second time fully indexed: decoded by the lane (hpack's
    Python decoder is not called), to hpack's result."""
    fields = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
              (b":authority", b"127.0.0.1:8443"), (b"user-agent", b"h2load nghttp2/1.52.0")]
    encoder = Encoder()
    plain, lane = pair()
    blocks = [encoder.encode(fields), encoder.encode(fields)]
    assert len(blocks[1]) == 5  # all five indexed
    called = []
    original = Decoder.decode

    def spy(self: Decoder, data: bytes, raw: bool = False) -> Any:
        called.append(data)
        return original(self, data, raw)

    for block in blocks:
        same(plain, lane, block)
    Decoder.decode = spy  # type: ignore[method-assign]  # counts calls of hpack's decoder
    try:
        assert lane.decode(blocks[1], raw=True) == fields
    finally:
        Decoder.decode = original  # type: ignore[method-assign]  # restored
    assert called == []


def encoder_state(encoder: Encoder) -> tuple[Any, ...]:
    table = encoder.header_table
    return (list(table.dynamic_entries), table._current_size, table.maxsize, table.resized,
            list(encoder.table_size_changes))


@settings(max_examples=400, deadline=None)
@given(blocks=st.lists(st.tuples(st.lists(encoder_fields, max_size=12),
                                 st.one_of(st.none(), st.sampled_from([0, 40, 100, 256,
                                                                       4096])),
                                 st.booleans()),
                       min_size=1, max_size=8),
       as_tuple=st.booleans())
def test_encoder_writes_what_hpack_writes(blocks, as_tuple) -> None:
    """Eviction (small tables), table size changes between blocks, never-indexed fields,
    Huffman always (h2's default) and sometimes off; the result decodes to the fields."""
    plain, lane = Encoder(), LaneEncoder()
    decoder = Decoder()
    decoder.max_allowed_table_size = 1 << 20
    for headers, resize, huffman in blocks:
        if resize is not None:
            plain.header_table_size = lane.header_table_size = resize
        given_headers = tuple(headers) if as_tuple else headers
        expected = plain.encode(given_headers, huffman=huffman)
        assert lane.encode(given_headers, huffman=huffman) == expected
        assert encoder_state(lane) == encoder_state(plain)
        decoded = decoder.decode(expected, raw=True)
        assert [tuple(h) for h in decoded] == [
            (h[0] if isinstance(h[0], bytes) else h[0].encode(),
             h[1] if isinstance(h[1], bytes) else h[1].encode()) for h in headers]


def test_common_response_is_encoded_in_c() -> None:
    fields = [(b":status", b"200"), (b"server", b"origin"), (b"content-length", b"100")]
    plain, lane = Encoder(), LaneEncoder()
    called = []
    original = Encoder.encode

    def spy(self: Encoder, headers: Any, huffman: bool = True) -> bytes:
        called.append(headers)
        return original(self, headers, huffman)

    Encoder.encode = spy  # type: ignore[method-assign]  # counts calls of hpack's encoder
    try:
        blocks = [lane.encode(fields) for _ in range(2)]
    finally:
        Encoder.encode = original  # type: ignore[method-assign]  # restored
    assert called == []
    assert blocks == [plain.encode(fields) for _ in range(2)]
    assert blocks[1] == b"\x88\xbf\xbe"  # :status 200 static, the others indexed


def test_h2_connection_gets_the_lane_with_its_limits() -> None:
    h2 = H2Connection(H2Configuration(client_side=False))
    h2.decoder.max_header_list_size = 1234
    h2.decoder.max_allowed_table_size = 2048
    use_lane(h2)
    if os.environ.get("VELOXY_PURE_PYTHON"):
        assert type(h2.decoder) is Decoder
        assert type(h2.encoder) is Encoder
        return
    assert type(h2.decoder) is LaneDecoder
    assert type(h2.encoder) is LaneEncoder
    assert (h2.decoder.max_header_list_size, h2.decoder.max_allowed_table_size,
            h2.decoder.header_table_size) == (1234, 2048, 4096)
