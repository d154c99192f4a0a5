"""The client side of TLS: the context veloxy connects to an upstream group's https://
servers with.

Verification is on unless the group says insecure_skip_verify: the server's chain must lead
to the group's `ca` (or the system's trust store) and name the host of the server's URL, or
the group's `server_name` when set (also what SNI sends). ALPN offers http/1.1, or h2 for
a group with `protocol: h2` (http2/client.py checks that the server chose it). One context
per group is shared by all its pools; pooled connections keep their TLS session, so a
kept-alive connection costs no new handshake.
"""

from __future__ import annotations

import ssl

from veloxy.config.model import UpstreamTLS
from veloxy.errors import ConfigError


def client_context(settings: UpstreamTLS | None, where: str = "tls", *,
                   http2: bool = False) -> ssl.SSLContext:
    """A context for connecting to https:// upstreams; ConfigError if the CA does not load."""
    ca = settings.ca if settings is not None else None
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([(f"{where}.ca", f"cannot load CA bundle {ca}: {reason}")]) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"] if http2 else ["http/1.1"])
    if settings is not None and settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_hostname(settings: UpstreamTLS | None, host: str) -> str:
    """The name sent by SNI and checked against the certificate."""
    if settings is not None and settings.server_name:
        return settings.server_name
    return host
