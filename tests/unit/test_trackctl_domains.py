"""The pure parts of `trackctl domain`: names, what a recheck does per status, `show`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trackctl.domain_commands import (
    check_customer,
    is_tombstone,
    parse_name,
    recheck_plan,
    render_show,
)
from trackctl.output import USAGE, CliError

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def row(status: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "track.customer.test", "customer_id": "cust-a", "status": status,
        "verified": status in ("verified", "active"), "matched_by": None, "dns_chain": None,
        "last_error": None, "check_due_at": None, "certificate_serial": None,
        "certificate_issued_at": None, "certificate_expires_at": None,
        "certificate_renew_at": None, "created_at": NOW, "updated_at": NOW,
        "verified_at": None}
    base.update(overrides)
    return base


def test_parse_name_normalises_and_refuses() -> None:
    assert parse_name("Track.Customer.TEST.", {}) == "track.customer.test"
    assert parse_name("bücher.example", {}) == "xn--bcher-kva.example"
    for bad in ("not a name", "*.customer.test", "localhost", "track.customer.test:443"):
        with pytest.raises(CliError) as caught:
            parse_name(bad, {})
        assert caught.value.status == USAGE
    env = {"TRACKING_HOST": "click.platform.test"}
    for platform in ("click.platform.test", "x.click.platform.test"):
        with pytest.raises(CliError, match="platform's own tracking host"):
            parse_name(platform, env)
    # The names the platform is moving away from are still its own.
    env["TRACKING_HOST_ALIASES"] = "click.old-platform.test"
    for platform in ("click.old-platform.test", "x.click.old-platform.test"):
        with pytest.raises(CliError, match=r"must CNAME to click\.platform\.test"):
            parse_name(platform, env)
    assert parse_name("old-platform.test", env) == "old-platform.test"


def test_check_customer() -> None:
    assert check_customer(" cust-a ") == "cust-a"
    for bad in ("", " ", "x" * 257, "a\x00b"):
        with pytest.raises(CliError):
            check_customer(bad)


@pytest.mark.parametrize(("status", "schedule", "words"), [
    ("pending", False, "checks its DNS now"),
    ("rejected", False, "restarts verification (rejected -> pending"),
    ("lapsed", False, "restarts verification (lapsed -> pending"),
    ("verified", True, "certifier retries"),
    ("active", True, "scheduler rechecks DNS"),
])
def test_recheck_plan_per_status(status: str, schedule: bool, words: str) -> None:
    plan = recheck_plan(row(status))
    assert plan.publish and plan.schedule_dns_check is schedule
    assert words in plan.effect


def test_recheck_never_brings_back_a_deleted_domain() -> None:
    tombstone = row("rejected", check_due_at=NOW + timedelta(hours=2),
                    last_error="deleted by the customer")
    assert is_tombstone(tombstone) and not is_tombstone(row("rejected"))
    assert not recheck_plan(tombstone).publish


def test_render_show() -> None:
    text = render_show(row("active", matched_by="cname",
                           dns_chain="track.customer.test -> click.platform.test",
                           certificate_serial="abc", certificate_expires_at=NOW + timedelta(
                               days=89)),
                       [{"at": NOW, "kind": "certificate"}], NOW)
    assert "dns chain:           track.customer.test -> click.platform.test" in text
    assert "certificate expires: 2026-07-29 12:00:00Z (in 89 d)" in text
    assert "2026-05-01 12:00:00Z  certificate" in text
    bare = render_show(row("rejected", check_due_at=NOW, last_error="deleted by the customer"),
                       [], NOW)
    assert "kept as a tombstone" in bare and "no ACME requests" in bare


def test_render_show_shows_the_isolation_warning() -> None:
    text = render_show(row("active", registered_domain="shop-builder.test",
                           isolation_warning="shares its registered domain"), [], NOW)
    assert "registered domain:   shop-builder.test" in text
    assert "isolation warning:   shares its registered domain" in text


def test_render_show_says_which_edge_serves_which_serial() -> None:
    edges = [{"edge_id": "edge-a", "serial": "abc", "installed_at": NOW},
             {"edge_id": "edge-b", "serial": "0ld", "installed_at": NOW}]
    text = render_show(row("active", certificate_serial="abc"), [], NOW, edges=edges)
    lines = text.split("served by (edge_certificates")[1].splitlines()
    assert any(line.split()[:2] == ["edge-a", "abc"] and "behind" not in line for line in lines)
    assert any(line.split()[:2] == ["edge-b", "0ld"] and line.endswith("behind")
               for line in lines)
    assert "served by no edge" in render_show(row("verified"), [], NOW)
