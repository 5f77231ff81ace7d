"""Rate-limit accounting: when a new ACME order must wait, and until when (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.certifier.ratelimits import (
    History,
    Limits,
    hold_back,
    next_allowed,
)
from shared.domains import registered_domain

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def test_under_every_limit_nothing_is_held() -> None:
    history = History(orders=[ago(minutes=m) for m in range(299)],
                      domain_certificates=[ago(days=1)] * 49,
                      name_certificates=[ago(days=2)] * 4,
                      name_failed_validations=[ago(minutes=5)] * 4)
    assert hold_back(history, Limits(), NOW) is None


def test_next_allowed_waits_for_enough_requests_to_leave_the_window() -> None:
    window = timedelta(hours=1)
    times = [ago(minutes=50), ago(minutes=40), ago(minutes=30)]
    assert next_allowed(times, 3, window, NOW) == ago(minutes=50) + window
    # Two over the limit: the second-oldest must leave too.
    assert next_allowed(times, 2, window, NOW) == ago(minutes=40) + window
    assert next_allowed(times, 4, window, NOW) is None
    # Requests older than the window do not count at all.
    assert next_allowed([ago(minutes=61)] * 10, 1, window, NOW) is None


def test_three_hundred_orders_in_three_hours_hold_the_account() -> None:
    orders = [ago(minutes=170) + timedelta(seconds=i) for i in range(300)]
    hold = hold_back(History(orders=orders), Limits(), NOW)
    assert hold is not None and hold.limit == "orders-per-account"
    assert hold.until == orders[0] + timedelta(hours=3)
    assert hold.delay_s(NOW) == 600


def test_fifty_certificates_per_registered_domain_per_week() -> None:
    times = [ago(days=6, hours=i / 10) for i in range(50)]
    hold = hold_back(History(domain_certificates=times), Limits(), NOW)
    assert hold is not None and hold.limit == "certificates-per-domain"
    assert hold.until == min(times) + timedelta(days=7)
    assert "50 certificates for this registered domain per week" in hold.reason


def test_five_failed_validations_per_name_per_hour() -> None:
    failures = [ago(minutes=m) for m in (55, 45, 35, 25, 15)]
    hold = hold_back(History(name_failed_validations=failures), Limits(), NOW)
    assert hold is not None and hold.limit == "failed-validations"
    assert hold.delay_s(NOW) == 5 * 60
    assert hold_back(History(name_failed_validations=failures[1:]), Limits(), NOW) is None


def test_five_duplicate_certificates_per_week() -> None:
    hold = hold_back(History(name_certificates=[ago(days=d) for d in (6, 5, 4, 3, 2)]),
                     Limits(), NOW)
    assert hold is not None and hold.limit == "duplicate-certificates"
    assert hold.until == ago(days=6) + timedelta(days=7)


def test_the_longest_hold_wins() -> None:
    history = History(name_failed_validations=[ago(minutes=30)] * 5,
                      name_certificates=[ago(days=1)] * 5)
    hold = hold_back(history, Limits(), NOW)
    assert hold is not None and hold.limit == "duplicate-certificates"


def test_limits_are_configurable() -> None:
    limits = Limits(orders_per_account=2)
    assert hold_back(History(orders=[ago(seconds=1)] * 2), limits, NOW) is not None


def test_registered_domain() -> None:
    assert registered_domain("track.customer-a.test") == "customer-a.test"
    assert registered_domain("a.b.shop.example.com") == "example.com"
    assert registered_domain("track.shop.co.uk") == "shop.co.uk"
    assert registered_domain("Track.Shop.COM.") == "shop.com"
    assert registered_domain("example.com") == "example.com"


def test_registered_domain_follows_the_public_suffix_list() -> None:
    # ICANN suffixes beyond any hand-written list, and deeper ones.
    assert registered_domain("track.shop.co.uk") == "shop.co.uk"
    assert registered_domain("a.b.shop.kawasaki.jp") == "b.shop.kawasaki.jp"
    assert registered_domain("track.city.kawasaki.jp") == "city.kawasaki.jp"  # !exception
    # Private suffixes count, as Let's Encrypt counts them: each github.io site is its own.
    assert registered_domain("track.alice.github.io") == "alice.github.io"
    assert registered_domain("bob.github.io") == "bob.github.io"
    assert registered_domain("github.io") == "github.io"
    # IDNs: U-label and A-label spellings are one registered domain, in A-label form.
    assert registered_domain("track.bücher.de") == "xn--bcher-kva.de"
    assert registered_domain("links.xn--bcher-kva.de") == "xn--bcher-kva.de"
    assert registered_domain("track.example.xn--p1ai") == "example.xn--p1ai"  # .рф
    assert registered_domain("track.example.рф") == "example.xn--p1ai"
    # One label, or a name that is itself a suffix: nothing smaller to group by.
    assert registered_domain("localhost") == "localhost"
    assert registered_domain("co.uk") == "co.uk"
