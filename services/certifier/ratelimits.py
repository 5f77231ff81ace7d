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

# Public suffixes with two labels that customers commonly register under. The
# registered domain is the public suffix plus one label; for suffixes not listed
# here the last two labels are used. Erring this way only ever groups more names
# together (counts more, holds back sooner), never fewer.
_TWO_LABEL_SUFFIXES = frozenset({
    "co.uk", "org.uk", "ac.uk", "gov.uk", "ltd.uk", "plc.uk", "me.uk", "net.uk",
    "com.au", "net.au", "org.au", "co.nz", "org.nz", "net.nz", "co.za", "org.za",
    "co.jp", "ne.jp", "or.jp", "co.kr", "or.kr", "com.br", "net.br", "org.br",
    "com.mx", "com.ar", "com.cn", "net.cn", "org.cn", "com.hk", "com.sg", "com.tw",
    "co.in", "net.in", "org.in", "co.il", "com.tr", "com.pl", "co.id", "com.my",
    "com.ua", "co.th", "com.vn", "com.ph", "com.pk", "com.eg", "com.sa", "com.co",
})


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


def registered_domain(name: str) -> str:
    """The name's registered domain (`track.shop.co.uk` → `shop.co.uk`), approximately."""
    labels = name.lower().rstrip(".").split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _TWO_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


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
