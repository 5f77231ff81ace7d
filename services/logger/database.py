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
from the rows actually inserted (migration 0007). COPY is several times
faster than row inserts, and the staging path writes every row twice, so taking it
only when needed roughly halves the database's work. SQLite: `INSERT OR IGNORE` with
executemany.

The logger's engine does not ping a connection at each checkout (a round trip per
commit); instead a connection whose write failed for any reason but the rows
themselves is invalidated, so the retry gets a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import TrackingLog

COLUMNS = ("event_id", "customer_id", "campaign_id", "recipient_id", "domain", "url", "ip",
           "user_agent", "method", "clicked_at", "bot", "bot_reason")

Row = tuple[str, str, str, str, str, str, str | None, str | None, str, datetime, bool,
            str | None]

_STAGING = "tracking_logs_staging"
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
    event_id text, customer_id text, campaign_id text, recipient_id text, domain text,
    url text, ip text, user_agent text, method text, clicked_at timestamptz, bot boolean,
    bot_reason text
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


def _sqlstate(exc: BaseException) -> str | None:
    # SQLAlchemy wraps the driver's error; asyncpg's carries the SQLSTATE.
    original = getattr(exc, "orig", None) or exc
    for candidate in (original, getattr(original, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


class PostgresClickStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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

    def rejects_data(self, exc: BaseException) -> bool:
        import sqlite3

        original = getattr(exc, "orig", None) or exc
        return isinstance(original, (sqlite3.IntegrityError, sqlite3.DataError))


def click_store(engine: AsyncEngine) -> ClickStore:
    if engine.dialect.name == "postgresql":
        return PostgresClickStore(engine)
    return SqliteClickStore(engine)
