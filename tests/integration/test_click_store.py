"""The click store on real databases: the migration to monthly partitions keeps every row,
one row per event id across partitions, retention drops whole months only, a click for a
month without a partition is kept, and the aggregates follow inserts and verdicts."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.logger.database import COLUMNS, Applied, Classification, Row, click_store
from services.logger.partitions import PartitionKeeper
from shared.db.click_partitions import maintain
from shared.db.engine import create_engine
from shared.db.migrate import downgrade, upgrade
from shared.settings import DatabaseSettings
from trackctl.clicks import campaign_report

TODAY = date(2026, 6, 15)


def click(event_id: str, at: datetime, *, recipient: str = "r1", bot: bool = False,
          reason: str | None = None, campaign: str = "spring",
          reasons: str | None = None) -> Row:
    values: dict[str, object] = {
        "event_id": event_id, "customer_id": "cust-1", "campaign_id": campaign,
        "recipient_id": recipient, "domain": "track.customer.test", "url": "https://shop/",
        "ip": "192.0.2.1", "user_agent": "Mozilla/5.0", "method": "GET", "clicked_at": at,
        "bot": bot, "bot_reason": reason, "reasons": reasons}
    return tuple(values[column] for column in COLUMNS)  # type: ignore[return-value]


# What the logger of revision 0006 wrote: every column but `reasons` (0009).
OLD_COLUMNS = tuple(column for column in COLUMNS if column != "reasons")


async def insert_as_0006(engine: AsyncEngine, clicks: list[Row]) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(
            f"INSERT INTO tracking_logs ({', '.join(OLD_COLUMNS)}) VALUES "
            f"({', '.join(':' + column for column in OLD_COLUMNS)})"),
            [{column: value for column, value in zip(COLUMNS, row, strict=True)
              if column != "reasons"} for row in clicks])


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


async def scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar()


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        return [tuple(r) for r in (await connection.execute(text(sql))).all()]


async def aggregates_match_raw(engine: AsyncEngine) -> None:
    """The kept aggregates equal what the raw clicks say, per campaign and day."""
    day = ("(clicked_at AT TIME ZONE 'UTC')::date" if engine.dialect.name == "postgresql"
           else "date(clicked_at)")
    kept = await rows(engine, "SELECT campaign_id, day, sum(clicks), sum(human_clicks), "
                              "sum(human_recipients) FROM click_daily GROUP BY 1, 2 ORDER BY 1, 2")
    raw = await rows(engine, f"SELECT campaign_id, {day}, count(*), "
                             "sum(CASE WHEN bot THEN 0 ELSE 1 END), "
                             "count(DISTINCT CASE WHEN bot THEN NULL ELSE recipient_id END) "
                             "FROM tracking_logs GROUP BY 1, 2 ORDER BY 1, 2")
    def plain(found: list[tuple[object, ...]]) -> list[tuple[str, ...]]:
        return [tuple(str(value) for value in row) for row in found]

    assert plain(kept) == plain(raw)
    await reasons_match_raw(engine, day)


async def reasons_match_raw(engine: AsyncEngine, day: str) -> None:
    """click_reasons equals the raw clicks: bot clicks by bot_reason, and bot and human
    clicks under every reason (`reasons`, else `bot_reason`)."""
    expected: dict[tuple[str, str, str], list[int]] = {}
    for campaign, when, bot, bot_reason, reasons in await rows(
            engine, f"SELECT campaign_id, {day}, bot, bot_reason, reasons FROM tracking_logs"):
        def count(reason: str, index: int, key: tuple[str, str] = (str(campaign), str(when))
                  ) -> None:
            expected.setdefault((*key, reason), [0, 0, 0])[index] += 1
        if bot:
            count(str(bot_reason or "unknown"), 0)
        for reason in filter(None, str(reasons or bot_reason or "").split(",")):
            count(reason, 1 if bot else 2)
    kept = {(str(c), str(d), str(r)): [int(str(n)), int(str(b)), int(str(h))]
            for c, d, r, n, b, h in await rows(
                engine, "SELECT campaign_id, day, reason, clicks, bot_clicks, human_clicks "
                        "FROM click_reasons WHERE clicks <> 0 OR bot_clicks <> 0 "
                        "OR human_clicks <> 0")}
    assert kept == expected


async def partition_of(engine: AsyncEngine, event_id: str) -> str:
    value = await scalar(engine, "SELECT tableoid::regclass::text FROM tracking_logs "
                                 f"WHERE event_id = '{event_id}'")
    assert isinstance(value, str)
    return value


async def test_migration_from_the_unpartitioned_table_keeps_every_row(
        database: DatabaseSettings, engine: AsyncEngine) -> None:
    await downgrade(database, "0006")
    assert await scalar(engine, "SELECT relkind::text FROM pg_class "
                            "WHERE relname = 'tracking_logs'") == "r"
    old = [click(f"e{n}", at(date(2025, 1 + n % 12, 1 + n % 28), n % 24),
                 recipient=f"r{n % 5}", bot=n % 4 == 0, reason="head-request" if n % 4 == 0
                 else None) for n in range(120)]
    old.append(click("far-future", at(date(2031, 2, 3))))
    await insert_as_0006(engine, old)
    store = click_store(engine)
    before = await rows(engine, "SELECT id, event_id, clicked_at FROM tracking_logs ORDER BY id")

    await upgrade(database)
    assert await scalar(engine, "SELECT relkind::text FROM pg_class "
                            "WHERE relname = 'tracking_logs'") == "p"
    assert await rows(engine, "SELECT id, event_id, clicked_at FROM tracking_logs "
                          "ORDER BY id") == before
    assert await partition_of(engine, "e0") == "tracking_logs_y2025m01"
    assert await partition_of(engine, "far-future") == "tracking_logs_y2031m02"
    assert await scalar(engine, "SELECT count(*) FROM tracking_logs_default") == 0
    await aggregates_match_raw(engine)
    # New rows continue the ids, and a stored click is still refused a second row.
    assert await store.insert([click("new", at(TODAY)), click("e1", old[1][9])]) == 1
    new_id = await scalar(engine, "SELECT id FROM tracking_logs WHERE event_id = 'new'")
    assert isinstance(new_id, int) and new_id > max(int(str(i)) for i, _e, _t in before)
    # And back: one table again, every row still there.
    after = await rows(engine, "SELECT id, event_id, clicked_at FROM tracking_logs ORDER BY id")
    await downgrade(database, "0006")
    assert await scalar(engine, "SELECT relkind::text FROM pg_class "
                                "WHERE relname = 'tracking_logs'") == "r"
    assert await rows(engine, "SELECT id, event_id, clicked_at FROM tracking_logs "
                              "ORDER BY id") == after


async def test_one_row_per_event_id_across_partitions_and_aggregates_count_once(
        engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: maintain(
            sync, today=TODAY, retention_days=None,
            extra_months={date(2026, 4, 1), date(2026, 5, 1)}))
    store = click_store(engine)
    batch = [click("a", at(date(2026, 4, 30), 23)), click("b", at(date(2026, 5, 1), 0)),
             click("c", at(TODAY), recipient="r2"), click("d", at(TODAY), recipient="r2"),
             click("s", at(TODAY), recipient="r3", bot=True, reason="user-agent:curl")]
    assert await store.insert(batch) == 5
    # The whole batch again (a redelivery after a lost ack), with one new click.
    assert await store.insert([*batch, click("e", at(TODAY), recipient="r1")]) == 1
    assert await scalar(engine, "SELECT count(*) FROM tracking_logs") == 6
    assert {await partition_of(engine, e) for e in "abc"} == {
        "tracking_logs_y2026m04", "tracking_logs_y2026m05", "tracking_logs_y2026m06"}
    assert await rows(engine, "SELECT day, clicks, human_clicks, human_recipients FROM "
                          "click_daily ORDER BY day") == [
        (date(2026, 4, 30), 1, 1, 1), (date(2026, 5, 1), 1, 1, 1), (TODAY, 4, 3, 2)]
    assert await rows(engine, "SELECT reason, clicks FROM click_reasons") == [
        ("user-agent:curl", 1)]
    await aggregates_match_raw(engine)


async def test_a_changed_verdict_moves_the_aggregates_in_its_own_transaction(
        engine: AsyncEngine) -> None:
    store = click_store(engine)
    now = datetime.now(UTC)
    await store.insert([click("x1", now, recipient="r1"), click("x2", now, recipient="r1"),
                        click("x3", now, recipient="r2", bot=True, reason="head-request")])
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE tracking_logs SET bot = true, bot_reason = "
                                      "'burst' WHERE event_id IN ('x1', 'x2')"))
        await connection.execute(text("UPDATE tracking_logs SET bot = false, bot_reason = NULL "
                                      "WHERE event_id = 'x3'"))
    assert await rows(engine, "SELECT clicks, human_clicks, human_recipients FROM click_daily") == [
        (3, 1, 1)]
    assert await rows(engine, "SELECT reason, clicks FROM click_reasons WHERE clicks > 0") == [
        ("burst", 2)]
    await aggregates_match_raw(engine)


async def test_reclassification_moves_every_reasons_counts(engine: AsyncEngine) -> None:
    """apply_classification (human to bot, several reasons; also a classification waiting
    for its click) and a correction back to human move each reason's bot and human
    clicks, and the report shows every reason (migration 0009's triggers)."""
    store = click_store(engine)
    month = at(date(2026, 3, 10))
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: maintain(
            sync, today=TODAY, retention_days=None, extra_months={date(2026, 3, 1)}))
    await store.insert([
        click("h1", month, recipient="r1", reasons="soon-after-send"),
        click("h2", month, recipient="r2"),
        click("b1", month, recipient="r3", bot=True, reason="user-agent:curl",
              reasons="user-agent:curl,soon-after-send")])
    early = Classification("late", True, "near-honeypot", month)
    assert await store.apply_classification([early]) == Applied(0, 1)
    await store.insert([click("late", month, recipient="r4")])
    assert await store.apply_classification([
        Classification("h1", True, "burst,soon-after-send", month),
        Classification("h2", True, "burst,near-honeypot", month)]) == Applied(3, 0)

    def counts(report: dict[str, object]) -> dict[str, tuple[int, int]]:
        listed = report["reasons"]
        assert isinstance(listed, list)
        return {r["reason"]: (r["bot"], r["human"]) for r in listed}

    report = await campaign_report(engine, campaign="spring", customer=None, since=None,
                                   until=None)
    assert (report["human"], report["bot"], report["human_recipients"]) == (0, 4, 0)
    assert counts(report) == {"burst": (2, 0), "near-honeypot": (2, 0),
                              "soon-after-send": (2, 0), "user-agent:curl": (1, 0)}
    assert {r["reason"]: r["clicks"] for r in report["bot_reasons"]} == {
        "burst": 2, "near-honeypot": 1, "user-agent:curl": 1}
    await aggregates_match_raw(engine)
    # A correction back to human (the merge never does that; an operator's UPDATE can).
    async with engine.begin() as connection:
        await connection.execute(text(
            "UPDATE tracking_logs SET bot = false, bot_reason = NULL WHERE event_id = 'h1'"))
    report = await campaign_report(engine, campaign="spring", customer=None, since=None,
                                   until=None)
    assert (report["human"], report["bot"], report["human_recipients"]) == (1, 3, 1)
    assert counts(report) == {"burst": (1, 1), "near-honeypot": (2, 0),
                              "soon-after-send": (1, 1), "user-agent:curl": (1, 0)}
    await aggregates_match_raw(engine)


async def test_a_bot_gaining_reasons_keeps_its_verdict_and_counts_them(
        engine: AsyncEngine) -> None:
    """A click.classified whose verdict did not change (a user-agent bot that was also in
    a burst): its reasons merged, its first reason kept, and `burst` counted among the
    bots, with no other count moving."""
    store = click_store(engine)
    now = datetime.now(UTC)
    await store.insert([
        click("ua", now, recipient="r1", bot=True, reason="user-agent:proofpoint",
              reasons="user-agent:proofpoint"),
        click("person", now, recipient="r2")])
    assert await store.apply_classification([
        Classification("ua", True, "user-agent:proofpoint,burst", now)]) == Applied(1, 0)
    assert await rows(engine, "SELECT bot, bot_reason, reasons FROM tracking_logs WHERE "
                      "event_id = 'ua'") == [(True, "user-agent:proofpoint",
                                              "user-agent:proofpoint,burst")]
    report = await campaign_report(engine, campaign="spring", customer=None, since=None,
                                   until=None)
    assert (report["human"], report["bot"], report["human_recipients"]) == (1, 1, 1)
    assert {r["reason"]: (r["bot"], r["human"]) for r in report["reasons"]} == {
        "user-agent:proofpoint": (1, 0), "burst": (1, 0)}
    assert {r["reason"]: r["clicks"] for r in report["bot_reasons"]} == {
        "user-agent:proofpoint": 1}
    await aggregates_match_raw(engine)


async def test_retention_drops_only_whole_months_past_it(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: maintain(
            sync, today=TODAY, retention_days=None,
            extra_months={date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)}))
    store = click_store(engine)
    await store.insert([click("jan", at(date(2026, 1, 31), 23)),
                        click("feb-1", at(date(2026, 2, 1), 0)),
                        click("feb-28", at(date(2026, 2, 28))),
                        click("mar", at(date(2026, 3, 2)))])
    # 120 days before 2026-06-15 is 2026-02-15: January ended before it, February did not.
    keeper = PartitionKeeper(engine, retention_days=120, today=lambda: TODAY)
    done = await keeper.run_once()
    assert done is not None
    assert sorted(done.dropped) == ["click_recipients_y2026m01", "tracking_logs_y2026m01"]
    assert await rows(engine, "SELECT event_id FROM tracking_logs ORDER BY clicked_at") == [
        ("feb-1",), ("feb-28",), ("mar",)]
    assert await scalar(engine, "SELECT count(*) FROM pg_class WHERE relname IN "
                            "('tracking_logs_y2026m08', 'click_recipients_y2026m08')") == 2
    again = await keeper.run_once()
    assert again is not None and (again.created, again.dropped) == ([], [])


async def test_a_click_for_a_month_without_a_partition_is_kept_then_given_one(
        engine: AsyncEngine) -> None:
    store = click_store(engine)
    stray = click("stray", at(date(2040, 5, 6)), recipient="r9")
    assert await store.insert([stray]) == 1
    assert await partition_of(engine, "stray") == "tracking_logs_default"
    done = await PartitionKeeper(engine, retention_days=400).run_once()
    assert done is not None and done.moved_rows == 2  # the click and its recipient-day
    assert "tracking_logs_y2040m05" in done.created
    assert await partition_of(engine, "stray") == "tracking_logs_y2040m05"
    assert await scalar(engine, "SELECT count(*) FROM tracking_logs_default") == 0
    assert await store.insert([stray]) == 0  # still one row per event id
    await aggregates_match_raw(engine)


async def test_sqlite_keeps_one_table_and_the_same_aggregates(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    await upgrade(settings)
    engine = create_engine(settings)
    try:
        store = click_store(engine)
        batch = [click("a", at(TODAY)), click("b", at(TODAY)),
                 click("c", at(TODAY), recipient="r2", bot=True, reason="head-request"),
                 click("d", at(date(2026, 1, 2)))]
        assert await store.insert(batch) == 4
        assert await store.insert(batch) == 0
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE tracking_logs SET bot = 0 WHERE "
                                          "event_id = 'c'"))
        await aggregates_match_raw(engine)
        assert await rows(engine, "SELECT reason, clicks FROM click_reasons") == [
            ("head-request", 0)]
        # Reclassified with several reasons (and a quote, which the JSON split keeps).
        assert await store.apply_classification(
            [Classification("a", True, 'burst,user-agent:"x",soon-after-send', at(TODAY))]
        ) == Applied(1, 0)
        await aggregates_match_raw(engine)
        assert await rows(engine, "SELECT reason, bot_clicks, human_clicks FROM click_reasons "
                                  "WHERE reason = 'soon-after-send'") == [("soon-after-send", 1, 0)]
        assert await PartitionKeeper(engine, retention_days=400).run_once() is None
    finally:
        await engine.dispose()


def test_migration_runs_on_a_sqlite_database_with_clicks(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/x.db")

    async def scenario() -> None:
        await upgrade(settings, "0006")
        engine = create_engine(settings)
        try:
            await insert_as_0006(engine, [click(f"e{n}", at(TODAY), recipient=f"r{n % 2}")
                                          for n in range(5)])
            await upgrade(settings)
            await aggregates_match_raw(engine)
            assert await scalar(engine, "SELECT human_recipients FROM click_daily") == 2
        finally:
            await engine.dispose()

    asyncio.run(scenario())
