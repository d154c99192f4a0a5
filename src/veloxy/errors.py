"""One error tree for the whole proxy, mapped to a response status in one place.

Every error says who is at fault (the downstream client, the upstream server, or veloxy
itself) and what follows from it: which status the client gets, whether the connection can
be kept, and whether the request may be retried on another upstream connection::

    VeloxyError
    ├── ConfigError                 a config file or flag is invalid (never raised per request)
    ├── DownstreamError             the client broke the protocol          -> 4xx, close
    │   ├── BadRequest              malformed head, framing, bytes          -> 400
    │   ├── RequestTimeout          head not complete within header_timeout -> 408
    │   ├── PayloadTooLarge         body over limits.max_body_bytes         -> 413
    │   ├── UriTooLong              request line over max_request_line      -> 414
    │   ├── HeaderFieldsTooLarge    head over max_header_bytes              -> 431
    │   └── NotImplementedByProxy   CONNECT, transfer codings but chunked   -> 501
    └── UpstreamError               the upstream failed us                 -> 5xx
        ├── UpstreamConnectError    refused, unreachable, connect timeout   -> 502, retryable
        ├── UpstreamRefusedError    an HTTP/2 upstream refused the stream   -> 502, retryable
        │                           (REFUSED_STREAM, or beyond its GOAWAY)
        ├── UpstreamResetError      closed/reset before any response byte   -> 502, retryable
        │                           if the request is idempotent and replayable
        ├── UpstreamProtocolError   garbage where a response was expected   -> 502
        ├── UpstreamTimeout         no response head within response_header -> 504
        └── NoUpstreamAvailable     no server to try, or our own pool limit -> 503

Three facts on each upstream error drive what the proxy does after it (proxy/retry.py reads
them; nothing else decides a retry):

- `retryable`: another attempt may succeed at all;
- `request_sent`: the request may have reached the upstream application, so only a request
  that is idempotent (RFC 9110 §9.2.2) and can be replayed whole may be sent again; when
  False (a connect error, a stream the upstream refused: RFC 9113 §8.7) any method may be;
- `server_at_fault`: the failure counts against the server's passive health (not our own
  pool's limit).

Errors after the response head was sent cannot change the status any more: they close the
client connection so that the truncation is visible (see proxy/exchange.py).
"""

from __future__ import annotations


class VeloxyError(Exception):
    """Base of every error veloxy raises on purpose."""


class ConfigError(VeloxyError):
    """Invalid configuration. `problems` holds one (key path, message) pair per problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(f"{prefix}{path}: {message}" if path else f"{prefix}{message}"
                         for path, message in self.problems)


class HttpError(VeloxyError):
    """An error that becomes an HTTP status for the client."""

    status: int = 500
    #: A retry on another upstream connection may succeed (nothing reached the application).
    retryable: bool = False


class DownstreamError(HttpError):
    """The client sent something we refuse; the client connection is closed after the answer."""

    status = 400


class BadRequest(DownstreamError):
    status = 400


class RequestTimeout(DownstreamError):
    status = 408


class PayloadTooLarge(DownstreamError):
    status = 413


class UriTooLong(DownstreamError):
    status = 414


class HeaderFieldsTooLarge(DownstreamError):
    status = 431


class NotImplementedByProxy(DownstreamError):
    """A valid request veloxy does not serve: CONNECT, a transfer coding other than chunked."""

    status = 501


class UpstreamError(HttpError):
    status = 502
    #: The request may have reached the upstream application (see the module docstring).
    request_sent: bool = True
    #: The failure says something about the server's health (passive health counts it).
    server_at_fault: bool = True


class UpstreamConnectError(UpstreamError):
    status = 502
    retryable = True
    request_sent = False


class UpstreamRefusedError(UpstreamError):
    """An HTTP/2 upstream refused the stream (REFUSED_STREAM) or went away before it
    (GOAWAY with a lower last stream id): it did not process the request (RFC 9113 §8.7)."""

    status = 502
    retryable = True
    request_sent = False


class UpstreamResetError(UpstreamError):
    status = 502
    retryable = True


class UpstreamProtocolError(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class NoUpstreamAvailable(UpstreamError):
    status = 503
    request_sent = False
    server_at_fault = False
