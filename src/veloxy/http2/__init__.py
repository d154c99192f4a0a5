"""HTTP/2 towards clients, with the `h2` package (protocol only, like h11) doing the framing.

    connection.py  H2ServerConnection: one client connection's I/O, streams, flow control,
                   GOAWAY on shutdown, the flood guard
    stream.py      H2Stream: one stream as the proxy's exchange sees its client (the same
                   calls as net.server.ServerConnection), response flow control
    headers.py     HTTP/2 header lists <-> the HTTP/1.1 heads the rest of veloxy speaks
    guard.py       budgets against the well-known HTTP/2 floods (rapid reset, PING,
                   SETTINGS, PRIORITY)
    select.py      picking HTTP/1.1 or HTTP/2 per connection: ALPN after the TLS
                   handshake, the preface on h2c listeners
    client.py      HTTP/2 without TLS toward an upstream group with `protocol: h2c` (gRPC)

Every stream becomes one HTTP/1.1 request upstream through the same forwarding state
machine and pools (proxy/h2exchange.py), or one HTTP/2 stream to an h2c group
(proxy/h2c_exchange.py). Imports errors, h1 and net.
"""
