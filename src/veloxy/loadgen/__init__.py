"""`veloxy bench`: a wrk/wrk2-class load generator that gets latency right.

Why it exists: every common generator has a trap (wrk hides coordinated omission, Debian's wrk
has no constant-rate mode, k6 drops iterations silently when it saturates, none compares a run
with a stored baseline). This one measures open-loop latency from each request's intended send
time, keeps the uncorrected histogram beside it, says when its own numbers are suspect, and
drives the proxy's own upstream connection class (`veloxy.net.client.ClientConnection`), so
every benchmark also exercises the proxy's client path.

Modules, in the order a run goes through them:

    settings   command-line values -> a frozen `BenchSettings`, request bytes built once
    tls        https:// targets: the client context (verification, --ca, --sni, --insecure)
    script     --script FILE.py: request()/response()/setup() hooks
    driver     the hot path: one ResponseSink per connection (closed or open loop)
    worker     one process: connections, phases (warm-up, measure, drain), tallies
    histogram  HDR histograms (hdrhistogram package) with a fast batch recorder, exact merge
    runner     the coordinating process: pre-flight, N workers, progress, Ctrl-C, merging
    report     text (wrk-like), JSON document, baseline comparison
    hdrlog     the standard HdrHistogram interval log (--hdr-log)
    schema     the JSON result schema (result.schema.json) and a small validator for it
    cli        `veloxy bench` argument parsing and exit codes

Importing this package imports nothing else: the CLI pays for what a run needs only.
"""
