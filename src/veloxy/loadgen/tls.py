"""The TLS side of `veloxy bench https://...`: one client context per worker process,
built from the run's settings (an SSLContext does not cross into a forked or spawned
worker), and the pre-flight handshake that turns a certificate problem into one line.

Verification is on by default, as in curl and h2load's users' browsers: the server's chain
must lead to the system's trust store or to `--ca FILE`, and name the URL's host, or
`--sni NAME` when given (the name SNI sends). `--insecure` skips both checks, for
self-signed test servers. ALPN offers http/1.1, or h2 with --h2 (and nothing else: a server
that cannot speak h2 must say so in the handshake, not be measured over HTTP/1.1).
"""

from __future__ import annotations

import socket
import ssl

from veloxy.loadgen.h2driver import NotHttp2Error, probe
from veloxy.loadgen.settings import BenchInputError, BenchSettings

__all__ = ["client_context", "handshake", "server_hostname"]


def client_context(settings: BenchSettings) -> ssl.SSLContext | None:
    """The context for the run's connections; None for http:// URLs."""
    if not settings.target.secure:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ca)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise BenchInputError(f"--ca {settings.ca}: cannot load it: {reason}") from None
    context.set_alpn_protocols(["h2"] if settings.http2 else ["http/1.1"])
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_hostname(settings: BenchSettings) -> str:
    """The name SNI sends and the certificate must carry."""
    return settings.server_name or settings.target.host


def handshake(sock: socket.socket, settings: BenchSettings, context: ssl.SSLContext) -> None:
    """One TLS handshake on a connected socket, or BenchInputError saying what to do."""
    t = settings.target
    try:
        with context.wrap_socket(sock, server_hostname=server_hostname(settings)) as tls_sock:
            if settings.http2:
                probe(tls_sock, settings)
    except NotHttp2Error as exc:
        raise BenchInputError(str(exc)) from None
    except ssl.SSLCertVerificationError as exc:
        raise BenchInputError(
            f"TLS handshake with {t.host}:{t.port} failed: {exc.verify_message}; give the "
            "server's CA with --ca FILE (or --sni NAME for another name), or --insecure "
            "to skip verification") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise BenchInputError(f"TLS handshake with {t.host}:{t.port} failed: {reason} "
                              "(is it an https:// server?)") from None
