"""Keeping the click tables' monthly partitions ahead of the clicks, and old months dropped.

The logger runs `shared.db.click_partitions.maintain` once before it takes a message
and then every `interval_s` (an hour): partitions exist two months ahead, so an hour's
miss costs nothing, and a click whose month has no partition is kept in the DEFAULT
partition meanwhile. A failed run is logged and tried again at the next interval; it
never stops the logger. On SQLite it does nothing (one table, no retention).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, date, datetime

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.click_partitions import Maintenance, maintain
from shared.db.engine import is_postgresql

log = structlog.get_logger(__name__)


def _today() -> date:
    return datetime.now(UTC).date()


class PartitionKeeper:
    def __init__(self, engine: AsyncEngine, *, retention_days: int, interval_s: float = 3600,
                 today: Callable[[], date] = _today) -> None:
        self._engine = engine
        self._retention_days = retention_days
        self._interval_s = interval_s
        self._today = today  # injectable for tests
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Maintenance | None:
        """One maintenance in its own transaction; None on SQLite."""
        if not is_postgresql(self._engine):
            return None
        today = self._today()
        async with self._engine.begin() as connection:
            done = await connection.run_sync(
                lambda sync: maintain(sync, today=today, retention_days=self._retention_days))
        log.info("logger.partitions", created=done.created, dropped=done.dropped,
                 moved_rows=done.moved_rows, retention_days=self._retention_days)
        return done

    async def start(self) -> None:
        """Maintain now (a failure here stops the start, like an unreachable database),
        then every interval in the background."""
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="partition-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            except (DBAPIError, OSError, TimeoutError) as exc:
                log.warning("logger.partitions_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                            retry_in_s=self._interval_s)
