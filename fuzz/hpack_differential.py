"""Coverage-guided differential fuzzing of the C HPACK lane (http2/_hpack.c) against hpack.

Each input is a sequence of header blocks, decoded in order by hpack's Decoder and by
hpack_lane.LaneDecoder (the C lane, hpack's decoder behind it for what it declines), as
tests/http2/test_hpack_lane.py does for generated blocks. After every block both must have
given the same header list (values and HeaderTuple / NeverIndexedHeaderTuple classes) or
raised the same exception (class and message), and hold the same dynamic table (entries,
size, maximum). Any difference raises AssertionError: libFuzzer saves the input as
crash-<sha1> and stops. Decoding stops after the first error, as a connection would.

Input layout (fuzz/corpus/hpack, written by fuzz/make_corpus.py):
    byte 0   bits 0-1 the decoders' table size (TABLE_SIZES), bits 2-3 the header list
             limit (LIST_LIMITS)
    rest     blocks, each as one length byte and that many bytes

Run (docs/fuzzing.md): python fuzz/hpack_differential.py WORKDIR fuzz/corpus/hpack \
    -max_total_time=60
With VELOXY_HPACK_SO=path (fuzz/build_sanitized.sh's build, under LD_PRELOAD of atheris's
asan_with_fuzzer.so), libFuzzer also sees the C code's coverage and ASan/UBSan check it.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import atheris
from sanitized import load_sanitized_lane  # fuzz/sanitized.py (this folder)

load_sanitized_lane("VELOXY_HPACK_SO", "veloxy.http2._hpack")

with atheris.instrument_imports(include=["hpack", "veloxy.http2.hpack_lane"]):
    from hpack import Decoder

    from veloxy.http2.hpack_lane import HPACK_LANE, LaneDecoder

TABLE_SIZES = (4096, 256, 64, 0)
LIST_LIMITS = (65536, 4096, 300, 64)


def outcome(decoder: Decoder, block: bytes) -> tuple[Any, ...]:
    try:
        headers = decoder.decode(block, raw=True)
    except Exception as exc:  # any exception: both must raise the same
        # (hpack's messages may name a memoryview by its address)
        result: tuple[Any, ...] = ("raised", type(exc),
                                   re.sub("0x[0-9a-f]+", "ADDR", str(exc)))
    else:
        result = ("decoded", [(type(h), tuple(h)) for h in headers])
    table = decoder.header_table
    return (*result, list(table.dynamic_entries), table._current_size, table.maxsize)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    plain = Decoder(LIST_LIMITS[(flags >> 2) & 3])
    lane = LaneDecoder(plain.max_header_list_size)
    for decoder in (plain, lane):
        decoder.header_table_size = TABLE_SIZES[flags & 3]
    pos = 1
    while pos < len(data):
        size = data[pos]
        block = data[pos + 1:pos + 1 + size]
        pos += 1 + size
        expected = outcome(plain, block)
        got = outcome(lane, block)
        assert got == expected, f"block {block!r}:\nhpack {expected}\nlane  {got}"
        if expected[0] == "raised":
            return


def main() -> None:
    assert HPACK_LANE, "the C lane is not built (or VELOXY_PURE_PYTHON is set)"
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
