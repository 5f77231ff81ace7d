"""Writing click rows to `tracking_logs`, the fast way each database allows, idempotently.

PostgreSQL: COPY straight into `tracking_logs` in one transaction (BEGIN, COPY,
COMMIT: three round trips). Duplicates are rare (only redeliveries after a crash or
a lost ack), so that fast path almost always commits; when the unique index on
`(event_id, clicked_at)` refuses the batch, the transaction is rolled back and the batch
goes the idempotent way in a second one: COPY into a session-local staging table, then
`INSERT ... SELECT ... ON CONFLICT (event_id, clicked_at) DO NOTHING`. The table is
partitioned by month of `clicked_at`, and a unique index there must include it; a
redelivered event carries its own time again, so that is still one row per event id.
The triggers on `tracking_logs` keep the click_* aggregates in the same transaction,
from the rows actually inserted (migrations 0007, 0009). COPY is several times
faster than row inserts, and the staging path writes every row twice, so taking it
only when needed roughly halves the database's work. SQLite: `INSERT OR IGNORE` with
executemany.

`click.classified` changes rows after the fact (`apply_classification`): in one
transaction, the classifications go into `click_classifications`, then every one whose
click is stored is merged into its row and deleted. One whose click is not stored yet
waits there (the logger sweeps it later), so a classification that overtakes its click
is never lost. Merging is a union of the reasons and an OR of the verdicts (the rule is
monotone, shared/bot_verdict.py): applying one twice, or two in either order, gives
the same row. On PostgreSQL a row is found by its event id within the month of the
event's `clicked_at` (the one partition it can be in), and the update triggers move the
aggregates' per-reason counts with it (migration 0009).

The logger's engine does not ping a connection at each checkout (a round trip per
commit); instead a connection whose write failed for any reason but the rows
themselves is invalidated, so the retry gets a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bot_verdict import FAMILIES, ordered
from shared.db.models import ClickClassification, TrackingLog

COLUMNS = ("event_id", "customer_id", "campaign_id", "recipient_id", "domain", "url", "ip",
           "user_agent", "method", "clicked_at", "bot", "bot_reason", "reasons")

Row = tuple[str, str, str, str, str, str, str | None, str | None, str, datetime, bool,
            str | None, str | None]


class Classification(NamedTuple):
    """A `click.classified` as the store applies it: reasons comma-joined, strongest first."""

    event_id: str
    bot: bool
    reasons: str | None
    clicked_at: datetime


class Applied(NamedTuple):
    applied: int  # rows changed now (this call's classifications and earlier ones)
    waiting: int  # classifications whose click is not stored yet

_STAGING = "tracking_logs_staging"
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
    event_id text, customer_id text, campaign_id text, recipient_id text, domain text,
    url text, ip text, user_agent text, method text, clicked_at timestamptz, bot boolean,
    bot_reason text, reasons text
) ON COMMIT DELETE ROWS
"""
_MERGE = (
    f"INSERT INTO tracking_logs ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(COLUMNS)} FROM {_STAGING} ON CONFLICT (event_id, clicked_at) DO NOTHING"
)


class ClickStore(Protocol):
    async def insert(self, rows: Sequence[Row]) -> int:
        """Insert rows, skipping event ids already stored; returns how many were new."""

    def rejects_data(self, exc: BaseException) -> bool:
        """True if `exc` means the rows themselves are unstorable (retrying cannot help)."""


class ClassifyingStore(ClickStore, Protocol):
    """A click store that also takes `click.classified` (the logger's; the batch writer
    needs only `ClickStore`)."""

    async def apply_classification(self, items: Sequence[Classification]) -> Applied:
        """Merge classifications into their rows; keep those whose row is not stored yet.
        With no items, applies the waiting ones whose rows have come since."""


def _sqlstate(exc: BaseException) -> str | None:
    # SQLAlchemy wraps the driver's error; asyncpg's carries the SQLSTATE.
    original = getattr(exc, "orig", None) or exc
    for candidate in (original, getattr(original, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


_FAMILIES = "ARRAY[" + ", ".join(f"'{family}'" for family in FAMILIES) + "]"


def _merged(older: str, newer: str) -> str:
    """SQL: the union of two comma-joined reason lists, strongest first (`ordered`)."""
    return (f"NULLIF(array_to_string(ARRAY(SELECT r FROM unnest(string_to_array({newer}, ',')"
            f" || string_to_array({older}, ',')) WITH ORDINALITY AS u(r, n) GROUP BY r "
            f"ORDER BY coalesce(array_position({_FAMILIES}, split_part(r, ':', 1)), "
            f"{len(FAMILIES)}), min(n)), ','), '')")


_WAIT = (
    "INSERT INTO click_classifications (event_id, bot, reasons, clicked_at) "
    "SELECT * FROM unnest($1::text[], $2::boolean[], $3::text[], $4::timestamptz[]) "
    "ON CONFLICT (event_id) DO UPDATE SET bot = click_classifications.bot OR excluded.bot, "
    f"reasons = {_merged('click_classifications.reasons', 'excluded.reasons')}"
)


def _same_month(row: str, classified: str) -> str:
    """SQL: `row` (tracking_logs) lies in the month of `classified`'s clicked_at, so the
    planner reads that month's partition only, not a year of them (a range rather than
    equality, so an event time stored to another precision still finds its row)."""
    month = f"date_trunc('month', {classified}.clicked_at, 'UTC')"
    return (f"{row}.clicked_at >= {month} AND "
            f"{row}.clicked_at < {month} + interval '1 month'")


# SKIP LOCKED: two loggers never wait on (or deadlock over) the same waiting rows.
_APPLY = f"""
WITH ready AS (
    DELETE FROM click_classifications p WHERE p.event_id IN (
        SELECT w.event_id FROM click_classifications w
        JOIN tracking_logs t ON t.event_id = w.event_id AND {_same_month('t', 'w')}
        FOR UPDATE OF w SKIP LOCKED)
    RETURNING p.event_id, p.bot, p.reasons, p.clicked_at)
UPDATE tracking_logs t SET
    bot = t.bot OR r.bot,
    reasons = {_merged('t.reasons', 'r.reasons')},
    bot_reason = CASE WHEN r.bot AND NOT t.bot THEN split_part(r.reasons, ',', 1)
                 ELSE t.bot_reason END,
    reclassified_at = COALESCE(t.reclassified_at, now())
FROM ready r WHERE t.event_id = r.event_id AND {_same_month('t', 'r')}
"""


def _by_event(items: Sequence[Classification]) -> list[Classification]:
    """One classification per click (merged like the database merges), in event id order:
    every writer locks waiting rows in the same order."""
    merged: dict[str, Classification] = {}
    for item in items:
        seen = merged.get(item.event_id)
        if seen is not None:
            item = item._replace(bot=item.bot or seen.bot,
                                 reasons=_union(item.reasons, seen.reasons))
        merged[item.event_id] = item
    return [merged[key] for key in sorted(merged)]


class PostgresClickStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def apply_classification(self, items: Sequence[Classification]) -> Applied:
        items = _by_event(items)
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.transaction():
                if items:
                    await driver.execute(_WAIT, *(list(column) for column in zip(*items,
                                                                                 strict=True)))
                status = await driver.execute(_APPLY)
                waiting = await driver.fetchval("SELECT count(*) FROM click_classifications")
        return Applied(int(status.rsplit(" ", 1)[1]), int(waiting))

    async def insert(self, rows: Sequence[Row]) -> int:
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            try:
                return await self._write(driver, rows)
            except BaseException as exc:
                if not self.rejects_data(exc):
                    # Broken, timed out or cancelled mid-statement: never pool it again.
                    with contextlib.suppress(Exception):
                        await connection.invalidate()
                raise

    @staticmethod
    async def _write(driver: asyncpg.Connection, rows: Sequence[Row]) -> int:
        try:
            async with driver.transaction():
                await driver.copy_records_to_table("tracking_logs", records=rows,
                                                   columns=COLUMNS)
            return len(rows)
        except asyncpg.UniqueViolationError:
            pass  # some rows are already stored: the idempotent path, in a new transaction
        async with driver.transaction():
            await driver.execute(_CREATE_STAGING)
            await driver.copy_records_to_table(_STAGING, records=rows, columns=COLUMNS)
            status = await driver.execute(_MERGE)
        return int(status.rsplit(" ", 1)[1])

    def rejects_data(self, exc: BaseException) -> bool:
        # Raised while encoding a value client-side (a date out of range, bad text).
        if isinstance(exc, (OverflowError, ValueError, TypeError)):
            return True
        # Class 22 (data exception) and 23 (integrity) are about the rows, not the server.
        state = _sqlstate(exc)
        return state is not None and state[:2] in ("22", "23")


class SqliteClickStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._statement = sqlite_insert(TrackingLog).on_conflict_do_nothing(
            index_elements=["event_id", "clicked_at"])

    async def insert(self, rows: Sequence[Row]) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(self._statement, [
                # SQLite keeps wall-clock time and drops the offset: store the UTC instant.
                {**dict(zip(COLUMNS, row, strict=True)), "clicked_at": row[9].astimezone(UTC)}
                for row in rows])
        return result.rowcount

    async def apply_classification(self, items: Sequence[Classification]) -> Applied:
        """The same merge as PostgreSQL's, in Python: SQLite has no arrays (and one writer)."""
        waiting_table = ClickClassification.__table__
        logs = TrackingLog.__table__
        async with self._engine.begin() as connection:
            for item in _by_event(items):
                seen = (await connection.execute(select(waiting_table).where(
                    waiting_table.c.event_id == item.event_id))).first()
                if seen is None:
                    await connection.execute(waiting_table.insert().values(
                        event_id=item.event_id, bot=item.bot, reasons=item.reasons,
                        clicked_at=item.clicked_at.astimezone(UTC)))
                else:
                    await connection.execute(waiting_table.update().where(
                        waiting_table.c.event_id == item.event_id).values(
                        bot=seen.bot or item.bot, reasons=_union(item.reasons, seen.reasons)))
            ready = (await connection.execute(
                select(waiting_table, logs.c.bot.label("row_bot"),
                       logs.c.reasons.label("row_reasons"),
                       logs.c.bot_reason.label("row_bot_reason"))
                .join(logs, logs.c.event_id == waiting_table.c.event_id))).all()
            for row in ready:
                becomes_bot = row.bot and not row.row_bot
                reasons = _union(row.reasons, row.row_reasons)
                await connection.execute(logs.update().where(
                    logs.c.event_id == row.event_id).values(
                    bot=row.row_bot or row.bot, reasons=reasons,
                    bot_reason=(reasons or "").split(",")[0] if becomes_bot
                    else row.row_bot_reason,
                    reclassified_at=func.coalesce(logs.c.reclassified_at, datetime.now(UTC))))
                await connection.execute(waiting_table.delete().where(
                    waiting_table.c.event_id == row.event_id))
            waiting = (await connection.execute(
                select(func.count()).select_from(waiting_table))).scalar_one()
        return Applied(len(ready), int(waiting))

    def rejects_data(self, exc: BaseException) -> bool:
        import sqlite3

        original = getattr(exc, "orig", None) or exc
        return isinstance(original, (sqlite3.IntegrityError, sqlite3.DataError))


def _union(newer: str | None, older: str | None) -> str | None:
    """Python's `_merged`: the union, strongest first."""
    return ",".join(ordered(r for r in (*(newer or "").split(","), *(older or "").split(","))
                            if r)) or None


def click_store(engine: AsyncEngine) -> ClassifyingStore:
    if engine.dialect.name == "postgresql":
        return PostgresClickStore(engine)
    return SqliteClickStore(engine)
