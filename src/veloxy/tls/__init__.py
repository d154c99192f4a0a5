"""TLS: the contexts veloxy serves and connects with, built once from the config.

    listener.py  ServerTLS: one listener's contexts (a default certificate and more chosen by
                SNI), ALPN h2 / http/1.1, optional client certificates, reload on SIGHUP
    client.py   client_context(): how the https:// servers of an upstream group are checked

No I/O beyond reading certificate files: the event loop does the handshakes
(loop.create_server(ssl=...), loop.create_connection(ssl=...)), so a TLS connection reaches
the same protocol objects as a cleartext one. Imports config and errors only.
"""
