"""Let's Encrypt's rate limits, counted in our own `acme_events`: work waits instead of failing.

The CA enforces its limits by refusing requests (`urn:ietf:params:acme:error:rateLimited`);
hitting one costs a failed run and, for some limits, a week. So before every certbot run
the certifier counts what it has already asked for and, if a limit would be exceeded,
holds the work back until the oldest counted request leaves the window (the handler
raises `TransientError` with that delay). The limits that matter for one tracking
domain per customer:

| limit | default | counted from |
| --- | --- | --- |
| new orders per account | 300 per 3 hours | `order` rows (every run the CA saw) |
| certificates per registered domain | 50 per week | `certificate` rows, by registered domain |
| failed validations per name | 5 per hour | `failed_validation` rows, by name |
| duplicate certificates | 5 per week | `certificate` rows for exactly this name |

Registered domains are `shared.domains.registered_domain`: the Public Suffix List,
private section included, as Let's Encrypt counts them (`acme_events.registered_domain`).

Everything here is pure: the caller passes the timestamps; `hold_back` says whether
and until when to wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

ORDER = "order"
CERTIFICATE = "certificate"
FAILED_VALIDATION = "failed_validation"

@dataclass(frozen=True)
class Limits:
    orders_per_account: int = 300
    orders_window: timedelta = timedelta(hours=3)
    certificates_per_domain: int = 50
    certificates_window: timedelta = timedelta(days=7)
    failed_validations_per_name: int = 5
    failed_validations_window: timedelta = timedelta(hours=1)
    duplicates_per_name: int = 5
    duplicates_window: timedelta = timedelta(days=7)

    @property
    def longest_window(self) -> timedelta:
        return max(self.orders_window, self.certificates_window,
                   self.failed_validations_window, self.duplicates_window)


@dataclass(frozen=True)
class History:
    """What was asked of the CA recently (timestamps, any order, older ones ignored)."""

    orders: Sequence[datetime] = field(default_factory=tuple)
    domain_certificates: Sequence[datetime] = field(default_factory=tuple)
    name_certificates: Sequence[datetime] = field(default_factory=tuple)
    name_failed_validations: Sequence[datetime] = field(default_factory=tuple)


@dataclass(frozen=True)
class Hold:
    """Work must wait until `until` because of `limit`; `reason` is for logs and events."""

    limit: str
    until: datetime
    reason: str

    def delay_s(self, now: datetime) -> float:
        return max((self.until - now).total_seconds(), 0.0)


def next_allowed(times: Sequence[datetime], limit: int, window: timedelta,
                 now: datetime) -> datetime | None:
    """When one more request fits `limit` per `window`, or None if it fits now.

    With `n >= limit` requests in the window, `n - limit + 1` of them must age out:
    the wait ends when the `(n - limit + 1)`-th oldest does.
    """
    recent = sorted(t for t in times if t > now - window)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + window


def hold_back(history: History, limits: Limits, now: datetime) -> Hold | None:
    """The hold that lasts longest among the limits a new order would break, or None."""
    checks = (
        ("orders-per-account", history.orders, limits.orders_per_account,
         limits.orders_window, "new orders for this ACME account"),
        ("certificates-per-domain", history.domain_certificates,
         limits.certificates_per_domain, limits.certificates_window,
         "certificates for this registered domain"),
        ("failed-validations", history.name_failed_validations,
         limits.failed_validations_per_name, limits.failed_validations_window,
         "failed validations for this name"),
        ("duplicate-certificates", history.name_certificates, limits.duplicates_per_name,
         limits.duplicates_window, "certificates for exactly this name"),
    )
    holds = []
    for key, times, limit, window, what in checks:
        until = next_allowed(times, limit, window, now)
        if until is not None:
            holds.append(Hold(key, until, f"{limit} {what} per {_span(window)} reached; "
                                          f"next allowed at {until.isoformat()}"))
    return max(holds, key=lambda hold: hold.until) if holds else None


def _span(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return "week" if days == 7 else f"{days} days"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{seconds} s"
