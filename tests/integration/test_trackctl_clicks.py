"""`trackctl clicks` against PostgreSQL: rows as the logger writes them, counted by the real
console script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

from demo.databases import execute
from demo.processes import ROOT
from shared.settings import DatabaseSettings

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
# Noon today: the clicks below, hours apart, fall on the days the assertions say whatever
# the time the test runs (reports count whole UTC days).
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def trackctl(database: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database.url}
    return subprocess.run([str(TRACKCTL), "clicks", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


# customer, campaign, recipient, domain, bot, bot reason, hours ago
Click = tuple[str, str, str, str, bool, str | None, float]


def insert(database: DatabaseSettings, rows: list[Click]) -> None:
    async def _insert() -> None:
        for number, (customer, campaign, recipient, domain, bot, reason, age_h) in enumerate(
                rows):
            await execute(
                database,
                "INSERT INTO tracking_logs (event_id, customer_id, campaign_id, recipient_id, "
                "domain, url, method, clicked_at, bot, bot_reason) VALUES ($1, $2, $3, $4, $5, "
                "'https://shop.example/', 'GET', $6, $7, $8)",
                f"evt-{number}", customer, campaign, recipient, domain,
                NOW - timedelta(hours=age_h), bot, reason)

    asyncio.run(_insert())


def test_clicks_counts_people_and_bots_per_campaign(database: DatabaseSettings) -> None:
    a, platform = "track.customer-a.test", "click.platform.test"
    insert(database, [
        ("cust-a", "spring", "r1", a, False, None, 30),
        ("cust-a", "spring", "r1", a, False, None, 2),
        ("cust-a", "spring", "r2", platform, False, None, 1),
        ("cust-a", "spring", "r3", a, True, "user-agent:proofpoint", 1),
        ("cust-a", "spring", "r1", a, True, "head-request", 1),
        ("cust-a", "spring", "r4", a, True, "user-agent:proofpoint", 1),
        ("cust-a", "autumn", "r9", a, False, None, 1),
        ("cust-b", "spring", "r7", "track.customer-b.test", False, None, 1),
    ])
    result = trackctl(database, "--campaign", "spring", "--customer", "cust-a", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["clicks"], report["human"], report["bot"]) == (6, 3, 3)
    assert (report["human_recipients"], report["recipients"]) == (2, 4)
    assert report["first_click"] == (NOW - timedelta(hours=30)).isoformat().replace("+00:00",
                                                                                     "Z")
    assert {r["reason"]: r["clicks"] for r in report["bot_reasons"]} == {
        "user-agent:proofpoint": 2, "head-request": 1}
    domains = {d["domain"]: (d["human"], d["bot"], d["human_recipients"])
               for d in report["domains"]}
    assert domains == {a: (2, 3, 1), platform: (1, 0, 1)}

    today = f"{NOW:%Y-%m-%d}"
    recent = json.loads(trackctl(database, "--campaign", "spring", "--customer", "cust-a",
                                 "--since", today, "--json").stdout)
    assert (recent["clicks"], recent["human"], recent["human_recipients"]) == (5, 2, 2)
    yesterday = json.loads(trackctl(database, "--campaign", "spring", "--customer", "cust-a",
                                    "--until", f"{NOW:%Y-%m-%d}T00:00Z", "--json").stdout)
    assert (yesterday["clicks"], yesterday["human_recipients"]) == (1, 1)
    # --since inside a day counts that whole day: the reports read per-day aggregates.
    assert json.loads(trackctl(database, "--campaign", "spring", "--customer", "cust-a",
                               "--since", f"{NOW:%Y-%m-%d}T11:30Z", "--json").stdout)["clicks"] == 5

    table = trackctl(database, "--campaign", "spring")
    assert table.returncode == 0
    assert "7 (4 human, 3 bot)" in table.stdout
    assert "2 (campaign ids are per customer: add --customer)" in table.stdout
    assert "user-agent:proofpoint" in table.stdout and a in table.stdout

    none = trackctl(database, "--campaign", "winter")
    assert none.returncode == 0 and "no clicks for campaign winter" in none.stdout
    assert trackctl(database, "--campaign", "spring", "--since", "last tuesday").returncode == 2


def test_clicks_by_every_reason_bots_and_people_apart(database: DatabaseSettings) -> None:
    rows = [  # recipient, bot, bot_reason, reasons
        ("r1", True, "scanner-network:microsoft", "scanner-network:microsoft,soon-after-send"),
        ("r1", True, "burst", "burst,soon-after-send"),
        ("r2", False, None, "soon-after-send"),  # weak alone: a person
        ("r3", False, None, None),
        ("r4", True, "head-request", None),  # stored before `reasons`
    ]

    async def _insert() -> None:
        for number, (recipient, bot, bot_reason, reasons) in enumerate(rows):
            await execute(
                database,
                "INSERT INTO tracking_logs (event_id, customer_id, campaign_id, recipient_id, "
                "domain, url, method, clicked_at, bot, bot_reason, reasons) VALUES ($1, 'c', "
                "'k', $2, 'click.platform.test', 'https://shop.example/', 'GET', $3, $4, $5, "
                "$6)", f"evt-{number}", recipient, NOW, bot, bot_reason, reasons)

    asyncio.run(_insert())
    report = json.loads(trackctl(database, "--campaign", "k", "--json").stdout)
    assert (report["human"], report["bot"], report["human_recipients"]) == (2, 3, 2)
    assert report["reasons"] == [
        {"reason": "soon-after-send", "bot": 2, "human": 1},
        {"reason": "burst", "bot": 1, "human": 0},
        {"reason": "head-request", "bot": 1, "human": 0},
        {"reason": "scanner-network:microsoft", "bot": 1, "human": 0},
    ]
    text = trackctl(database, "--campaign", "k").stdout
    assert "reason" in text and "soon-after-send" in text
