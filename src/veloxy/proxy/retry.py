"""Whether a failed attempt is tried again: one pure function of the error's facts
(errors.py: `retryable`, `request_sent`) and the request's, shared by every exchange kind
and covered by a table test (tests/proxy/test_retry_decision.py).

- Nothing reached the application (a connect error, a stream the HTTP/2 upstream
  refused): any method is tried again, within the group's `retries`.
- The request may have reached it (the connection closed before any response byte): only
  an idempotent request (RFC 9110 §9.2.2) whose body is held whole is sent again: within
  `retries` when the connection was fresh (the server died mid-request), and once more on
  top of them for the keep-alive race (a pooled connection the server closed as we sent on
  it), as Go's transport does. A POST is never replayed.
- Once a response byte arrived nothing is retried (the caller does not ask).
"""

from __future__ import annotations

from enum import Enum

from veloxy.errors import UpstreamError


class Retry(Enum):
    NO = 0
    #: Within the group's `retries`.
    YES = 1
    #: The one retry for the keep-alive race, on top of `retries` (the caller records that
    #: it was used).
    RACE = 2


def decide_retry(exc: UpstreamError, *, attempts: int, retries: int, idempotent: bool,
                 resendable: bool, race: bool, race_retried: bool) -> Retry:
    """`attempts` made so far (this one included); `resendable`: the request can be sent
    again as it was (no body, or its body is held whole); `race`: the failure is the
    keep-alive race; `race_retried`: its extra retry was already used."""
    if not exc.retryable or not resendable:
        return Retry.NO
    budget = retries + race_retried  # the race's retry is on top
    if not exc.request_sent:
        return Retry.YES if attempts <= budget else Retry.NO
    if not idempotent:
        return Retry.NO
    if race and not race_retried:
        return Retry.RACE
    return Retry.YES if attempts <= budget else Retry.NO
