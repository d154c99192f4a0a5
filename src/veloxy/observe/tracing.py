"""W3C Trace Context (https://www.w3.org/TR/trace-context/) for the proxy's hop.

A request's `traceparent` is `VERSION-TRACEID-PARENTID-FLAGS` (00-32 hex-16 hex-2 hex). The
proxy is one more hop of the trace: it keeps the client's trace id and flags, takes the
client's parent id as its own parent, and sends upstream a new span id of its own, so the
upstream's span is the proxy's child. A request without a valid traceparent (missing,
malformed, all-zero ids, version ff, or sent twice) starts a new trace; its tracestate is
then dropped, as the specification asks (section 3.3.1.1), else tracestate passes unchanged.

Only used when the config has a `tracing` section: the exchange calls `Tracer.start` once
per request; with it off, nothing here runs. With `tracing.otel` (observe/otel.py) the
sampled flag of a trace veloxy starts follows `sample_ratio` as OpenTelemetry's
TraceIdRatioBased sampler decides (the trace id's low 64 bits under ratio x 2^64), so that
what veloxy exports and what it asks the upstream to record agree.
"""

from __future__ import annotations

import random

_HEX = frozenset(b"0123456789abcdef")
_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"


class Trace:
    """One request's trace context: ids as hex text, and the upstream head's fields."""

    __slots__ = ("fields", "flags", "parent_id", "span_id", "trace_id")

    def __init__(self, trace_id: str, parent_id: str | None, span_id: str, flags: str,
                 fields: list[bytes]) -> None:
        self.trace_id = trace_id
        #: The client's span (None when the proxy started the trace).
        self.parent_id = parent_id
        #: The proxy's span: the parent id the upstream receives.
        self.span_id = span_id
        self.flags = flags
        #: The request's header fields (flat wire form, see h1/head.py) to send upstream:
        #: the client's, without its traceparent, then ours.
        self.fields = fields

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    @property
    def header(self) -> bytes:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode()


def parse_traceparent(value: bytes) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid traceparent value, else None."""
    value = value.strip()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if version == b"ff" or (version == b"00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55:56] != b"-":  # a later version may append fields
        return None
    if not (set(version) <= _HEX and set(trace_id) <= _HEX and set(parent_id) <= _HEX
            and set(flags) <= _HEX):
        return None
    if trace_id == b"0" * 32 or parent_id == b"0" * 16:
        return None
    return trace_id.decode(), parent_id.decode(), flags.decode()


def _new_id(bits: int) -> str:
    while True:
        value = random.getrandbits(bits)
        if value:  # all zeros is invalid
            return f"{value:0{bits // 4}x}"


class Tracer:
    def __init__(self, sampled: bool = True, ratio: float = 1.0) -> None:
        self._new_flags = "01" if sampled else "00"
        #: Sampled new traces when their id's low 64 bits fall under it (None: all are).
        self._bound = round(ratio * 2**64) if sampled and ratio < 1.0 else None

    def start(self, fields: list[bytes]) -> Trace:
        """The trace context of a request with header `fields` (flat wire form)."""
        parents: list[bytes] = []
        kept: list[bytes] = []
        states = False
        for i in range(0, len(fields), 4):
            lowered = fields[i].lower()
            if lowered == _TRACEPARENT:
                parents.append(fields[i + 2])
                continue
            if lowered == _TRACESTATE:
                states = True
            kept += fields[i:i + 4]
        parsed = parse_traceparent(parents[0]) if len(parents) == 1 else None
        span_id = _new_id(64)
        if parsed is None:
            if states:  # a tracestate without its traceparent means nothing: drop it
                kept = [f for i in range(0, len(kept), 4) for f in kept[i:i + 4]
                        if kept[i].lower() != _TRACESTATE]
            trace_id = _new_id(128)
            flags = self._new_flags
            if self._bound is not None:
                flags = "01" if int(trace_id[16:], 16) < self._bound else "00"
            trace = Trace(trace_id, None, span_id, flags, kept)
        else:
            trace_id, parent_id, flags = parsed
            trace = Trace(trace_id, parent_id, span_id, flags, kept)
        kept += (b"traceparent", b": ", trace.header, b"\r\n")
        return trace
