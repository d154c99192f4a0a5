"""What the proxy tells its operators: metrics (metrics.py), the process's own numbers
(process.py), the access log (accesslog.py), trace context (tracing.py) and the optional
OpenTelemetry span export (otel.py, which imports the SDK only when configured).

A leaf package: it imports nothing else of veloxy, so that net, upstream and proxy may bind
its handles (once, at start-up or reload) and count on them per request.
"""
