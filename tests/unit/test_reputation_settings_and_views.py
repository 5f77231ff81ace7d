"""The reputation watch's settings, its budget arithmetic, and how trackctl shows its rows
(pure: no DNS, broker or database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.verifier.reputation.blocklists import Kind, parse_lists
from services.verifier.reputation.engine import ReputationEngine
from services.verifier.reputation.watch import ReputationWatch
from services.verifier.settings import ReputationPolicy, load
from shared.errors import SettingsError
from trackctl.doctor import FAIL, PASS, SKIP, blocklist_check
from trackctl.reputation import describe, render

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NAME = "track.shop-a.test"


def test_defaults_watch_the_three_public_lists_through_the_systems_resolvers() -> None:
    policy = load({"TRACKING_HOST": "click.platform.test"}).reputation
    assert policy is not None
    assert [(b.kind, b.zone) for b in policy.lists] == [
        (Kind.DBL, "dbl.spamhaus.org"), (Kind.SURBL, "multi.surbl.org"),
        (Kind.URIBL, "multi.uribl.com")]
    assert (policy.nameservers, policy.interval_s, policy.daily_budget) == ((), 1800, 100_000)


def test_an_empty_list_setting_turns_the_watch_off() -> None:
    assert load({"TRACKING_HOST": "click.platform.test", "REPUTATION_LISTS": ""}
                ).reputation is None


@pytest.mark.parametrize(("variable", "value"), [
    ("REPUTATION_LISTS", "spamcop=bl.spamcop.net"),
    ("REPUTATION_NAMESERVERS", "resolver.example"),
    ("REPUTATION_DAILY_BUDGET", "-1"),
    ("REPUTATION_CONCURRENCY", "0"),
])
def test_a_bad_value_stops_the_verifier_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load({"TRACKING_HOST": "click.platform.test", variable: value})


def test_a_dqs_key_never_reaches_the_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load({"TRACKING_HOST": "click.platform.test",
              "REPUTATION_LISTS": "dbl=sEcReTkEy..dbl.dq.spamhaus.net"})
    assert "REPUTATION_LISTS" in str(caught.value)
    assert "secretkey" not in str(caught.value).lower()


class NoDns:
    async def ask(self, qname: str) -> Any:
        raise AssertionError("no DNS in this test")


def watch(**policy: Any) -> tuple[ReputationWatch, ReputationEngine]:
    settings = ReputationPolicy(lists=parse_lists(None), rng=random.Random(1), **policy)
    engine = ReputationEngine(NoDns(), settings.lists, daily_budget=settings.daily_budget)
    return ReputationWatch(store=None, engine=engine, announcer=None,  # type: ignore[arg-type]
                           policy=settings, platform_hosts=(), clock=lambda: NOW), engine


def test_the_budget_stretches_the_interval_as_docs_reputation_md_computes() -> None:
    watcher, engine = watch(interval_s=1800, daily_budget=100_000, poll_s=60)
    dbl = engine.lists[0]
    # 10,000 names: 86,400 x 10,000 / (100,000 - 2,880) = 8,896 s.
    assert watcher.interval_s(dbl, 10_000) == pytest.approx(8896.2, abs=0.1)
    # Few names: the configured interval stands.
    assert watcher.interval_s(dbl, 100) == 1800
    # A budget that pays for 48 rounds a day keeps 30 minutes.
    big, _ = watch(interval_s=1800, daily_budget=483_000, poll_s=60)
    assert big.interval_s(dbl, 10_000) == 1800


def row(blocklist: str, status: str, categories: list[str] | None = None,
        checked: datetime | None = NOW - timedelta(minutes=5)) -> dict[str, Any]:
    return {"name": NAME, "customer_id": "cust-a", "platform_host": False,
            "blocklist": blocklist, "zone": f"{blocklist}.test", "status": status,
            "categories": categories or [], "raw": None,
            "fix_url": "https://check.spamhaus.org/" if status == "listed" else None,
            "first_listed_at": NOW - timedelta(hours=2) if status == "listed" else None,
            "last_checked_at": checked, "last_changed_at": None, "next_check_at": NOW}


def test_describe_says_listed_with_categories_and_the_removal_page() -> None:
    line = describe(row("dbl", "listed", ["phishing", "malware"]), NOW)
    assert line.startswith("dbl (dbl.test): LISTED (phishing, malware) since ")
    assert line.endswith("why and removal: https://check.spamhaus.org/")
    assert describe(row("surbl", "not_listed"), NOW).startswith(
        "surbl (surbl.test): not listed, checked 2026-12-02 11:55:00Z")
    assert describe(row("uribl", "unchecked", checked=None), NOW) == (
        "uribl (uribl.test): not looked up yet")


def test_doctor_fails_a_listed_domain_and_passes_a_clean_one() -> None:
    domain = {"name": NAME, "status": "active"}
    listed = blocklist_check(domain, [row("dbl", "listed", ["phishing"]),
                                      row("surbl", "not_listed")], name=NAME, now=NOW)
    assert (listed.status, listed.code) == (FAIL, "blocklisted")
    assert listed.summary == "listed on dbl (phishing)"
    assert listed.fix is not None and "removal" in listed.fix
    clean = blocklist_check(domain, [row("dbl", "not_listed"), row("surbl", "not_listed")],
                            name=NAME, now=NOW)
    assert (clean.status, clean.summary) == (PASS, "not listed on dbl, surbl")
    assert blocklist_check(domain, [], name=NAME, now=NOW).status == SKIP
    assert blocklist_check(domain, [row("dbl", "unchecked", checked=None)], name=NAME,
                           now=NOW).status == SKIP
    assert blocklist_check(None, [], name=NAME, now=NOW).status == SKIP


def test_trackctl_reputation_renders_lists_and_listings() -> None:
    summary = {"dbl": {"zone": "dbl.test", "watched": 3, "listed": 1, "not_listed": 2,
                       "unchecked": 0, "last_checked_at": NOW}}
    listed = [row("dbl", "listed", ["spam"]),
              {**row("dbl", "listed", ["spam"]), "name": "click.platform.test",
               "customer_id": None}]
    text = render(listed, summary, NOW)
    assert "listed now:" in text and "(platform host)" in text and "2 on dbl" in text
    assert "nothing is listed now" in render([], summary, NOW)
    assert "REPUTATION_LISTS" in render([], {}, NOW)
