"""hpack's Decoder and Encoder with the common header blocks done in C (http2/_hpack.c).

`LaneDecoder` *is* an hpack Decoder (h2 sets its limits and table sizes through the same
attributes) whose `decode` first offers the block to the C lane: the lane decodes the
common blocks in one call and keeps the Decoder's own dynamic table up to date; what it
declines (table size updates, errors of any kind, anything unusual: _hpack.c's header
says what) hpack's Python decoder decodes from the same state, so every error is hpack's
own exception. `LaneEncoder` likewise: a list of (bytes, bytes) fields with no table size
change pending is encoded in C, to the bytes and table state hpack's Encoder would give;
anything else (str fields, 3-tuples, dicts, a pending size change) is hpack's.
tests/http2/test_hpack_lane.py holds both to hpack's results and table state
(hypothesis); fuzz/hpack_differential.py fuzzes the decoder's difference.

The lane is built where a C compiler is at hand (setup.py, optional); without it, or with
VELOXY_PURE_PYTHON=1 in the environment (as for the HTTP/1.1 lane, h1/parser.py), `decoder()`
gives hpack's Decoder itself.
"""

from __future__ import annotations

import os
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

try:
    from veloxy.http2 import _hpack  # type: ignore[attr-defined]  # a C extension without stubs
except ImportError:  # no compiler when installed: hpack's decoder serves everything
    _hpack = None

HPACK_LANE: bool = _hpack is not None and not os.environ.get("VELOXY_PURE_PYTHON")

if _hpack is not None:
    # hpack's own tables, so that the lane cannot disagree with them
    _hpack.configure(HeaderTable.STATIC_TABLE, REQUEST_CODES, REQUEST_CODES_LENGTH,
                     HeaderTuple, NeverIndexedHeaderTuple)


class LaneDecoder(Decoder):
    """An hpack Decoder whose common blocks are decoded in C."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if raw:  # (h2 always asks for bytes; str results are hpack's)
            table = self.header_table
            done = _hpack.decode(data, table.dynamic_entries, table._current_size,
                                 table._maxsize, self.max_header_list_size,
                                 self.max_allowed_table_size)
            if done is not None:
                headers, table._current_size = done
                return headers
        return super().decode(data, raw)


class LaneEncoder(Encoder):
    """An hpack Encoder whose common header lists are encoded in C."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        if huffman and not table.resized:  # (a size change to announce first: hpack's)
            done = _hpack.encode(headers, table.dynamic_entries, table._current_size,
                                 table._maxsize)
            if done is not None:
                block, table._current_size = done
                return block
        return super().encode(headers, huffman)


def use_lane(h2: Any) -> None:
    """Give an h2 connection (H2Connection, before it encodes or decodes anything) the C
    lane's decoder and encoder, with the limits h2 set on its own; nothing when the lane
    is off."""
    if not HPACK_LANE:
        return
    old = h2.decoder
    new = LaneDecoder(old.max_header_list_size)
    new.max_allowed_table_size = old.max_allowed_table_size
    new.header_table_size = old.header_table_size
    h2.decoder = new
    encoder = LaneEncoder()
    encoder.header_table_size = h2.encoder.header_table_size
    encoder.header_table.resized = h2.encoder.header_table.resized
    encoder.table_size_changes = list(h2.encoder.table_size_changes)
    h2.encoder = encoder
