"""The `h2` connection state machine with a bound on the closed streams it remembers.

Why: h2 keeps how every closed stream of a connection was closed (up to 2**16 of them,
about 130 bytes each) so that a late frame on a stream it reset is a stream error
(RST_STREAM STREAM_CLOSED) rather than a connection error. On a long-lived connection that
is ~8.5 MiB per connection, held for good once 65,536 streams have gone by: the RSS growth of
the TLS HTTP/2 soak (docs/BENCHMARKS.md, "Memory over TLS soaks"). RFC 9113 §5.1 lets an
endpoint limit the period over which it treats frames on closed streams this leniently;
remembering the last CLOSED_STREAMS_KEPT covers frames still in flight when a stream is
reset (they arrive within a round trip, and at most SETTINGS_MAX_CONCURRENT_STREAMS, 100 by
default, are open at once). An older stream id is still known to be closed (h2 compares it
with the highest id seen): a frame on it closes the connection (GOAWAY STREAM_CLOSED), as a
frame on a stream closed by END_STREAM always does.
"""

from __future__ import annotations

from h2.connection import H2Connection

#: Closed streams remembered per connection: at most ~130 KiB each (2**16 in h2 itself).
CLOSED_STREAMS_KEPT = 1024


class BoundedH2Connection(H2Connection):
    # read by H2Connection.__init__ to size its closed-stream memory
    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT
