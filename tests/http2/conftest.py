"""The HTTP/2 suite shares the TLS suite's fixtures (certificates, origin, proxies)."""

from tests.tls.conftest import (  # noqa: F401
    base_config,
    origin,
    pki,
    proxies,
    tls_listener,
    veloxy_loop,
)
