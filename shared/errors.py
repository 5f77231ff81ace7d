"""The two kinds of failure a handler can report, so one retry policy can treat them.

`TransientError`: the same work may succeed later (a timeout, a peer down, SERVFAIL);
the message is retried with a growing delay, a bounded number of times, then
dead-lettered. `PermanentError`: retrying cannot help (malformed input, a rule
broken); the message goes to the dead-letter queue at once, with the reason.
Anything else a handler raises is a bug: it is logged with its traceback and
treated as transient, so it is retried a few times and then dead-lettered, never
dropped and never requeued in a hot loop.
"""

from __future__ import annotations


class TransientError(Exception):
    """Work that may succeed if tried again later."""

    def __init__(self, reason: str, *, delay_s: float | None = None,
                 counts_attempt: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # A handler that knows when to come back (a rate limit's reset) says so.
        self.delay_s = delay_s
        # False when the work was not tried at all (a stopping service handing it back):
        # the attempt is not spent, so hand-backs never exhaust an event's attempts.
        self.counts_attempt = counts_attempt


class PermanentError(Exception):
    """Work that will fail however often it is tried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""
