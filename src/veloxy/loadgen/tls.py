"""The TLS side of `veloxy bench https://...`: one client context per worker process,
built from the run's settings (an SSLContext does not cross into a forked or spawned
worker), and the pre-flight handshake that turns a certificate problem into one line.

Verification is on by default, as in curl and h2load's users' browsers: the server's chain
must lead to the system's trust store or to `--ca FILE`, and name the URL's host, or
`--sni NAME` when given (the name SNI sends). `--insecure` skips both checks, for
self-signed test servers. ALPN offers http/1.1, or h2 with --h2 (and nothing else: a server
that cannot speak h2 must say so in the handshake, not be measured over HTTP/1.1).

`--tls-resume`: neither asyncio's nor uvloop's create_connection takes a `session=`, but
both make each connection's SSLObject with `context.wrap_bio(...)`, so the run's context is
a `ResumingContext` whose wrap_bio offers the session it was last given. The worker hands
it the session of each connection when that connection ends (TLS 1.3 tickets arrive after
the handshake, so a connection's session is only resumable once it has read a response).
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from veloxy.loadgen.h2driver import NotHttp2Error, probe
from veloxy.loadgen.settings import BenchInputError, BenchSettings

__all__ = ["ResumingContext", "client_context", "handshake", "server_hostname"]


class ResumingContext(ssl.SSLContext):
    """A client context whose new connections offer `offer`, the last session it was given
    (None: a full handshake). One per worker process: a session only resumes with the
    context it came from."""

    offer: ssl.SSLSession | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: Any = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname,
                                session if session is not None else self.offer)


def client_context(settings: BenchSettings) -> ssl.SSLContext | None:
    """The context for the run's connections (a ResumingContext with --tls-resume); None
    for http:// URLs. Set up as ssl.create_default_context does."""
    if not settings.target.secure:
        return None
    context = (ResumingContext if settings.tls_resume else ssl.SSLContext)(
        ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    try:
        if settings.ca:
            context.load_verify_locations(cafile=settings.ca)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise BenchInputError(f"--ca {settings.ca}: cannot load it: {reason}") from None
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:  # as create_default_context: lets Wireshark decrypt a capture of the run
        context.keylog_filename = keylog
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
