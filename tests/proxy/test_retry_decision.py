"""The retry decision (proxy/retry.py) as a table over the error tree's facts (errors.py):
what may be tried again, for every exchange kind. No sockets: the function is pure; the
behaviour on the wire is in test_upstream_errors.py and tests/http2/test_h2c_exchange.py."""

from __future__ import annotations

import pytest

from veloxy.errors import (
    NoUpstreamAvailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRefusedError,
    UpstreamResetError,
    UpstreamTimeout,
)
from veloxy.proxy.retry import Retry, decide_retry

NO, YES, RACE = Retry.NO, Retry.YES, Retry.RACE

# error, attempts made, retries allowed, idempotent, resendable, race, race retried -> decision
TABLE: list[tuple[str, UpstreamError, int, int, bool, bool, bool, bool, Retry]] = [
    ("connect error, POST", UpstreamConnectError("x"), 1, 1, False, True, False, False, YES),
    ("connect error, budget spent", UpstreamConnectError("x"), 2, 1, True, True, False, False,
     NO),
    ("refused stream, POST", UpstreamRefusedError("x"), 1, 1, False, True, False, False, YES),
    ("refused stream, body not kept", UpstreamRefusedError("x"), 1, 1, False, False, False,
     False, NO),
    ("reset, GET", UpstreamResetError("x"), 1, 1, True, True, False, False, YES),
    ("reset, POST never replayed", UpstreamResetError("x"), 1, 5, False, True, False, False,
     NO),
    ("reset, PUT with its body not kept", UpstreamResetError("x"), 1, 1, True, False, False,
     False, NO),
    ("reset, budget spent", UpstreamResetError("x"), 2, 1, True, True, False, False, NO),
    ("keep-alive race: one retry on top", UpstreamResetError("x"), 1, 0, True, True, True,
     False, RACE),
    ("keep-alive race, its retry used", UpstreamResetError("x"), 2, 0, True, True, True, True,
     NO),
    ("race retry used, budget left", UpstreamResetError("x"), 2, 1, True, True, True, True,
     YES),
    ("timeout: not retried", UpstreamTimeout("x"), 1, 3, True, True, False, False, NO),
    ("garbage: not retried", UpstreamProtocolError("x"), 1, 3, True, True, False, False, NO),
    ("our own pool's limit", NoUpstreamAvailable("x"), 1, 3, True, True, False, False, NO),
]


@pytest.mark.parametrize(
    ("exc", "attempts", "retries", "idempotent", "resendable", "race", "race_retried",
     "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_decide_retry(exc, attempts, retries, idempotent, resendable, race, race_retried,
                      expected) -> None:
    assert decide_retry(exc, attempts=attempts, retries=retries, idempotent=idempotent,
                        resendable=resendable, race=race, race_retried=race_retried) is expected


def test_the_error_tree_says_what_follows() -> None:
    """The facts the decision reads, declared once on the tree."""
    assert not UpstreamConnectError("x").request_sent
    assert not UpstreamRefusedError("x").request_sent
    assert UpstreamResetError("x").request_sent and UpstreamResetError("x").retryable
    assert not NoUpstreamAvailable("x").server_at_fault
    assert UpstreamTimeout("x").server_at_fault and not UpstreamTimeout("x").retryable
