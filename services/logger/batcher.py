"""Gathering rows from many messages into one commit, and answering each message when it lands.

A message's handler adds its rows and waits; the batch is written when it holds
`max_rows` or `flush_s` after its first row, whichever comes first. Only after
the commit do the waiting handlers return, so only then are their messages acked.
While the database is down, the write is retried with capped backoff and nothing
is acked: the broker keeps the messages and prefetch bounds what is held here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog
from prometheus_client import CollectorRegistry

from services.logger.database import ClickStore, Row
from shared.backoff import Backoff
from shared.errors import PermanentError
from shared.metrics import LoggerMetrics

log = structlog.get_logger(__name__)


class BatchWriter:
    def __init__(self, store: ClickStore, *, max_rows: int = 5000, flush_s: float = 0.02,
                 max_backoff_s: float = 5.0, max_in_flight: int = 2,
                 metrics: LoggerMetrics | None = None) -> None:
        self._store = store
        self._metrics = metrics or LoggerMetrics(CollectorRegistry())
        self._max_rows = max_rows
        self._flush_s = flush_s
        self._max_backoff_s = max_backoff_s
        self._writers = asyncio.Semaphore(max_in_flight)
        self._commits: set[asyncio.Task[None]] = set()
        # One entry per message: its rows stay together, so one commit answers it.
        self._pending: list[tuple[Sequence[Row], asyncio.Future[None]]] = []
        self._pending_rows = 0
        self._has_rows = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.healthy = True
        self.committed = 0

    @property
    def pending_rows(self) -> int:
        """Rows received and not yet committed."""
        return self._pending_rows

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batch-writer")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Write what is held (no linger), then end. Rows that cannot be written in time
        stay unacked, so the broker hands them to the next logger."""
        self._stopping = True
        self._has_rows.set()
        self._full.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                self._task.cancel()
                log.warning("logger.stop_timeout", unwritten_rows=self._pending_rows)
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def add(self, rows: Sequence[Row]) -> None:
        """Queue rows and return once they are committed."""
        if not rows:
            return
        future = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        self._pending_rows += len(rows)
        self._has_rows.set()
        if self._pending_rows >= self._max_rows:
            self._full.set()
        await future

    async def _run(self) -> None:
        try:
            await self._gather_batches()
        finally:
            if self._commits:
                await asyncio.gather(*self._commits, return_exceptions=True)

    async def _gather_batches(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._has_rows.clear()
                await self._has_rows.wait()
                continue
            if self._pending_rows < self._max_rows and not self._stopping:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_s):
                        await self._full.wait()
            taken, count = 0, 0
            while taken < len(self._pending) and count < self._max_rows:
                count += len(self._pending[taken][0])
                taken += 1
            batch, self._pending = self._pending[:taken], self._pending[taken:]
            self._pending_rows -= count
            # Up to `max_in_flight` commits overlap: while one waits on the database
            # the next batch is sent, so the database, not the round trip, sets the pace.
            await self._writers.acquire()
            task = asyncio.create_task(self._commit(batch))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _commit(self, batch: list[tuple[Sequence[Row], asyncio.Future[None]]]) -> None:
        try:
            rows = [row for message_rows, _ in batch for row in message_rows]
            try:
                await self._write(rows)
            except _Unstorable:
                await self._write_one_by_one(batch)
                return
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            self._writers.release()

    async def _write_one_by_one(
            self, batch: list[tuple[Sequence[Row], asyncio.Future[None]]]) -> None:
        """Find the message(s) whose rows the database refuses; only those fail (and are
        dead-lettered by the consumer), every other message in the batch is written."""
        for rows, waiter in batch:
            try:
                await self._write(list(rows))
            except _Unstorable as exc:
                self._metrics.rows_refused.inc(len(rows))
                if not waiter.done():
                    waiter.set_exception(PermanentError(f"the database refuses these rows: {exc}"))
            else:
                if not waiter.done():
                    waiter.set_result(None)

    async def _write(self, rows: list[Row]) -> None:
        """Write with retries while the database is unreachable; raise `_Unstorable` if the
        database refuses the rows themselves."""
        backoff = Backoff(0.1, self._max_backoff_s)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                inserted = await self._store.insert(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._store.rejects_data(exc):
                    log.warning("clicks.rows_refused", rows=len(rows),
                                error=(str(exc) or type(exc).__name__)[:500])
                    raise _Unstorable((str(exc) or type(exc).__name__)[:500]) from exc
                self.healthy = False
                self._metrics.write_failures.inc()
                delay = backoff.next()
                log.warning("clicks.write_failed", rows=len(rows), attempt=attempt,
                            error=(str(exc) or type(exc).__name__)[:500],
                            retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            elapsed = time.perf_counter() - started
            self.healthy = True
            self.committed += inserted
            metrics = self._metrics
            metrics.batch_rows.observe(len(rows))
            metrics.insert_seconds.observe(elapsed)
            metrics.rows_inserted.inc(inserted)
            metrics.rows_duplicate.inc(len(rows) - inserted)
            # Row[0] is the event id: the batch's ends, to find a click's commit by.
            log.info("clicks.committed", rows=len(rows), inserted=inserted,
                     duplicates=len(rows) - inserted, attempts=attempt,
                     duration_ms=round(elapsed * 1000, 2),
                     first_event_id=rows[0][0], last_event_id=rows[-1][0])
            return


class _Unstorable(Exception):
    """The database refused the rows' content (not a connection problem)."""
