"""The server side of TLS for one listener: contexts, SNI, ALPN, client certificates, reload.

A `ServerTLS` holds one `ssl.SSLContext` per certificate. The first (the listener's `cert`
and `key`) is the one the listening socket is created with and the one presented when the
client sends no SNI, or a name no other certificate claims; the SNI callback switches the
handshake to another context by exact name first, then by one-label wildcard. All contexts
share the same settings (ALPN, versions, ciphers, client verification), so which one serves
a handshake changes only the certificate.

Defaults (Mozilla's "intermediate" profile): TLS 1.2 minimum, ECDHE with AES-GCM or
ChaCha20-Poly1305 for TLS 1.2 (TLS 1.3's suites are all modern), no compression, no
renegotiation, session tickets on (OpenSSL's default: the ticket key lives in the listener's
first context, which stays the session context whatever SNI picks, and it is made before
the workers fork, so a ticket from one worker resumes on another; tests/tls/
test_tls_resumption.py). In `workers_mode: spawn` each worker makes its contexts itself,
with its own random key, and Python's ssl cannot set one (no SSL_CTX_set_tlsext_ticket_keys):
the supervisor hands its keys over with the sockets and `adopt_ticket_keys` sets them through
libssl (tls/ticket_keys.py, guarded ctypes), so tickets resume across spawned workers too.

`reload()` reads every certificate and key again into the existing contexts
(`SSLContext.load_cert_chain`): handshakes after it present the new certificates, and
established connections keep theirs, and the ticket key stays (tickets issued before
still resume). A file that fails to load leaves that context as it
was (the error is returned, not raised), so a bad deploy never takes the listener down.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from veloxy.config.model import ListenTLS
from veloxy.errors import ConfigError
from veloxy.tls.ticket_keys import get_ticket_keys, set_ticket_keys

log = logging.getLogger("veloxy.tls")

#: TLS 1.2 cipher suites: forward secrecy and AEAD only (TLS 1.3 suites are set by OpenSSL).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN_H2 = ("h2", "http/1.1")
ALPN_H1 = ("http/1.1",)


@dataclass(frozen=True)
class _Entry:
    context: ssl.SSLContext
    cert: str
    key: str
    where: str  # key path, for messages


class ServerTLS:
    """The contexts of one TLS listener. `context` goes to loop.create_server(ssl=...)."""

    def __init__(self, settings: ListenTLS, where: str = "tls") -> None:
        self.settings = settings
        self.where = where
        self.http2 = settings.http2
        self._entries: list[_Entry] = [self._entry(settings.cert, settings.key, where)]
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}
        for index, extra in enumerate(settings.certificates):
            entry = self._entry(extra.cert, extra.key, f"{where}.certificates.{index}")
            self._entries.append(entry)
            for name in extra.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], entry.context)
                else:
                    self._exact.setdefault(name, entry.context)
        if self._exact or self._wildcard:
            self.context.sni_callback = self._select

    @property
    def context(self) -> ssl.SSLContext:
        return self._entries[0].context

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context a handshake naming `server_name` is served with."""
        if server_name:
            name = server_name.lower().rstrip(".")
            found = self._exact.get(name)
            if found is not None:
                return found
            _, dot, parent = name.partition(".")
            if dot:
                found = self._wildcard.get(parent)
                if found is not None:
                    return found
        return self.context

    def reload(self) -> list[str]:
        """Read every certificate and key again; returns the problems (none = all reloaded)."""
        problems = []
        for entry in self._entries:
            try:
                entry.context.load_cert_chain(entry.cert, entry.key)
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"{entry.where}: {_describe(exc)} (kept the previous "
                                f"certificate)")
        return problems

    def ticket_key(self) -> bytes | None:
        """The key this listener seals session tickets with (OpenSSL uses the first
        context's, whatever SNI picks); None where libssl cannot be reached."""
        return get_ticket_keys(self.context)

    def use_ticket_key(self, key: bytes) -> bool:
        """Seal and open tickets with `key` (every context, the SNI ones too); True if
        done."""
        return all([set_ticket_keys(entry.context, key) for entry in self._entries])

    # -- internals -------------------------------------------------------------------------

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None,
                _context: ssl.SSLContext) -> None:
        chosen = self.context_for(server_name)
        if chosen is not sslobj.context:
            sslobj.context = chosen
        return None

    def _entry(self, cert: str, key: str, where: str) -> _Entry:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = (ssl.TLSVersion.TLSv1_3 if self.settings.min_version == "1.3"
                                   else ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(list(ALPN_H2 if self.settings.http2 else ALPN_H1))
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([(f"{where}.cert", f"cannot load certificate {cert} with key "
                                                 f"{key}: {_describe(exc)}")]) from None
        client_ca = self.settings.client_ca
        if client_ca is not None:
            try:
                context.load_verify_locations(cafile=client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError([(f"{self.where}.client_ca", f"cannot load CA bundle "
                                                               f"{client_ca}: {_describe(exc)}")]
                                  ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        return _Entry(context, cert, key, where)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)  # e.g. KEY_VALUES_MISMATCH, NO_START_LINE
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def listener_tls(listen: Iterable[Any]) -> list[ServerTLS | None]:
    """One ServerTLS (or None for cleartext) per `listen` entry of a config; raises
    ConfigError naming `listen.N.tls...` when a certificate or key does not load."""
    result: list[ServerTLS | None] = []
    problems: list[tuple[str, str]] = []
    for index, address in enumerate(listen):
        if address.tls is None:
            result.append(None)
            continue
        try:
            result.append(ServerTLS(address.tls, f"listen.{index}.tls"))
        except ConfigError as exc:
            problems += exc.problems
            result.append(None)
    if problems:
        raise ConfigError(problems)
    return result


def ticket_keys(contexts: list[ServerTLS | None]) -> list[bytes | None]:
    """The session-ticket key of each TLS listener (None: cleartext, or not readable here),
    for spawned workers to use (`adopt_ticket_keys`)."""
    return [tls.ticket_key() if tls is not None else None for tls in contexts]


def adopt_ticket_keys(contexts: list[ServerTLS | None], keys: list[bytes | None]) -> None:
    """In a spawned worker: seal and open tickets with the supervisor's keys, so that a
    ticket resumes on every worker as in fork mode; where that fails, say so once (tickets
    then resume only on the worker that issued them)."""
    failed = False
    for tls, key in zip(contexts, keys, strict=False):
        if tls is None:
            continue
        if key is None:
            failed = True
            continue
        failed |= not tls.use_ticket_key(key)
    if failed:
        log.warning("TLS session tickets: cannot share the supervisor's ticket key with this "
                    "spawned worker (ctypes could not reach libssl); a ticket resumes only on "
                    "the worker that issued it")


def reload_all(contexts: list[ServerTLS | None]) -> list[str]:
    """SIGHUP: reload the certificates of every TLS listener; returns the problems."""
    problems: list[str] = []
    for tls in contexts:
        if tls is not None:
            problems += tls.reload()
    for problem in problems:
        log.error("certificate reload: %s", problem)
    if not problems and any(contexts):
        log.info("certificates reloaded")
    return problems
