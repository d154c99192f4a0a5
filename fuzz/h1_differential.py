"""Coverage-guided differential fuzzing of the C fast lane (h1/_fastpath.c) against llhttp.

Each input is fed, split into the same reads, to a C parser (with the Python parser as its
fallback) and to the pure Python parser (h1/parser.py, llhttp underneath), as
tests/h1/test_fastpath.py does for its fixed cases and hypothesis does for generated ones.
Both must give the same events (heads with every field, body bytes, ends, 101 tails,
finish()), refuse with the same error type on the same read, and, for responses, report the
same `idle` and `in_body` after every read and from inside every callback. A handler with
the whole-message event (on_request / on_response) must see the same again. Any difference
raises AssertionError: libFuzzer saves the input as crash-<sha1> and stops.

Input layout (what the seed corpus in fuzz/corpus/h1 follows, fuzz/make_corpus.py writes):
    byte 0   flags: bit 0 response (else request), bit 1 the response answers HEAD,
             bits 2-3 which limits (requests: LIMITS below), bit 4 skip finish()
    byte 1   how to split: a seed for the cut points (0: one read)
    rest     the bytes on the wire

Run (docs/fuzzing.md): python fuzz/h1_differential.py WORKDIR fuzz/corpus/h1 -max_total_time=60
With the extension built by fuzz/build_sanitized.sh, libFuzzer also sees the C code's
coverage and AddressSanitizer/UBSan check every access.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import atheris
from sanitized import load_sanitized_lane  # fuzz/sanitized.py (this folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: `tests` importable


load_sanitized_lane("VELOXY_FASTPATH_SO", "veloxy.h1._fastpath")
with atheris.instrument_imports(include=["veloxy"]):
    from veloxy.h1 import parser as parser_module
    from veloxy.h1.head import RequestHead, ResponseHead
    from veloxy.h1.parser import RequestParser, ResponseParser

from tests.h1.test_fastpath import run_requests, run_responses  # noqa: E402

_fastpath = parser_module._fastpath
if os.environ.get("VELOXY_FASTPATH_SO"):
    assert _fastpath is sys.modules["veloxy.h1._fastpath"]
if _fastpath is None:
    sys.exit("veloxy.h1._fastpath is not built: python setup.py build_ext --inplace")

#: Request limits to fuzz with: the defaults, and small ones that the inputs can cross
#: (414, 431, 413 must come from the same read in both parsers).
LIMITS: list[dict[str, Any]] = [
    {},
    {"max_request_line": 64, "max_header_bytes": 256, "max_body_bytes": 16},
    {"max_request_line": 8192, "max_header_bytes": 65536, "max_body_bytes": 0},
    {"max_request_line": 200, "max_header_bytes": 1024, "max_body_bytes": None},
]


def split(data: bytes, seed: int) -> list[bytes]:
    """The reads: one, or up to 4 cuts chosen by `seed` (the same for both parsers)."""
    if seed == 0 or len(data) < 2:
        return [data]
    rng = random.Random(seed)
    cuts = sorted({rng.randrange(1, len(data)) for _ in range(1 + seed % 4)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


def check_requests(pieces: list[bytes], limits: dict[str, Any]) -> None:
    slow = run_requests(False, pieces, **limits)
    fast = run_requests(True, pieces, **limits)
    assert fast.events == slow.events, ("events", pieces, limits, fast.events, slow.events)
    assert fast.raised_at == slow.raised_at, ("error timing", pieces, limits)
    whole = run_requests(True, pieces, whole=True, **limits)
    assert whole.events == slow.events, ("events with on_request", pieces, limits)
    assert whole.raised_at == slow.raised_at, ("error timing with on_request", pieces)


def check_responses(pieces: list[bytes], head_request: bool, finish: bool) -> None:
    slow = run_responses(False, pieces, head_request, finish, watch=True)
    fast = run_responses(True, pieces, head_request, finish, watch=True)
    assert fast.events == slow.events, ("events", pieces, fast.events, slow.events)
    assert fast.raised_at == slow.raised_at, ("error timing", pieces)
    assert fast.states == slow.states, ("idle/in_body after each read", pieces,
                                        fast.states, slow.states)
    assert fast.recorder.inside == slow.recorder.inside, (
        "idle/in_body inside the callbacks", pieces, fast.recorder.inside,
        slow.recorder.inside)
    whole = run_responses(True, pieces, head_request, finish, whole=True)
    assert whole.events == slow.events, ("events with on_response", pieces)
    assert whole.raised_at == slow.raised_at, ("error timing with on_response", pieces)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, seed, wire = data[0], data[1], data[2:]
    pieces = split(wire, seed)
    if flags & 1:
        check_responses(pieces, head_request=bool(flags & 2), finish=not flags & 16)
    else:
        check_requests(pieces, LIMITS[(flags >> 2) & 3])


def main() -> None:
    # (RequestHead and friends are imported for the instrumentation of their modules.)
    assert RequestHead and ResponseHead and RequestParser and ResponseParser
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
