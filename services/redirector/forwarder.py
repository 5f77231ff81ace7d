"""Moves clicks from the spool to the broker: batched, confirmed, retried, never blocking a 302.

One AMQP message carries up to `batch_size` clicks (CloudEvents batched mode):
the broker's per-message cost is what limits a message-per-click design.
Several batches are in flight at once so confirm round trips overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry

from services.redirector.spool import Batch, Spool, fsync_all, unlink_all, unmap_all
from shared.backoff import Backoff
from shared.broker.names import CLICK_TRACKED
from shared.events import encode_batch
from shared.metrics import RedirectorMetrics

log = structlog.get_logger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]

# Unsent clicks beyond this mean the broker is not keeping up (about 8,000 clicks).
SYNC_BACKLOG_BYTES = 4 << 20


class Forwarder:
    def __init__(self, spool: Spool, *, batch_size: int = 500, linger_s: float = 0.05,
                 max_in_flight: int = 4, sync_interval_s: float = 1.0,
                 metrics: RedirectorMetrics | None = None) -> None:
        self._spool = spool
        self._metrics = metrics or RedirectorMetrics(CollectorRegistry())
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._max_in_flight = max_in_flight
        self._sync_interval_s = sync_interval_s
        self._wake = asyncio.Event()
        self._publish: Publish | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        # After a failed publish, the loop waits this long before the next round.
        self._backoff = Backoff(0.1, 5.0)
        self._failures = 0
        self.connected = False
        self.published = 0

    def notify(self) -> None:
        """A click was spooled: wake the loop (cheap when it is already awake)."""
        self._wake.set()

    def attach(self, publish: Publish | None) -> None:
        """Give (or take away) the function that publishes one batch with confirms."""
        self._publish = publish
        self.connected = publish is not None
        self._wake.set()

    async def run(self) -> None:
        """Forward until cancelled."""
        last_sync = time.monotonic()
        while True:
            if not self._spool.has_pending() or self._publish is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._sync_interval_s):
                        await self._wake.wait()
            # Let a small batch fill up, also when the first click after an idle moment
            # woke us: sending that one at once made a message of a click or two each
            # time, and below saturation many small messages, whose per-message cost
            # multiplied RabbitMQ's and the logger's CPU ("Fewer, fuller messages" in
            # docs/performance.md).
            if (self._linger_s and self._publish is not None and self._spool.has_pending()
                    and self._spool.backlog_bytes() < self._batch_size * 400):
                await asyncio.sleep(self._linger_s)
            if self._backoff.current:
                await asyncio.sleep(self._backoff.current)
            await self._send_available()
            if unmaps := self._spool.take_unmaps():
                await _in_thread(unmap_all, unmaps)
            if unlinks := self._spool.take_unlinks():
                await _in_thread(unlink_all, unlinks)
            now = time.monotonic()
            if now - last_sync >= self._sync_interval_s:
                last_sync = now
                if self._behind():
                    await _in_thread(fsync_all, self._spool.unsynced())

    def _behind(self) -> bool:
        """True when clicks may sit in the spool for longer than a sync interval.

        While the broker keeps up, every line is confirmed (and its segment deleted)
        within a linger and a round trip; fsyncing it first would only write to disk
        what is about to be deleted, and costs the hot path real I/O. Once the broker
        is away or behind, the spool is the only copy: then it is fsynced every
        `sync_interval_s`, which bounds what a power loss can take.
        """
        return (not self.connected or self._publish is None or bool(self._backoff.current)
                or self._spool.backlog_bytes() > SYNC_BACKLOG_BYTES)

    async def drain(self, timeout_s: float) -> bool:
        """Publish everything spooled; True if the spool emptied within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self._send_available()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
            if not self._spool.has_pending() and not self._tasks:
                return True
            if self._publish is None or self._backoff.current:
                pause = max(0.2, self._backoff.current)
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        return False

    async def _send_available(self) -> None:
        # One round per call: once a publish fails, the rest waits for the backoff in
        # the caller. Without this stop, batches that failed went straight back out as
        # slots freed, thousands of attempts a second while the broker was down.
        failures = self._failures
        while (self._publish is not None and self._spool.has_pending()
               and self._failures == failures):
            await self._slots.acquire()
            batch = self._spool.next_batch(self._batch_size) \
                if self._failures == failures else None  # one failed while we waited
            if batch is None:
                self._slots.release()
                return
            if not batch.lines:
                self._spool.confirmed(batch)
                self._slots.release()
                continue
            task = asyncio.create_task(self._send(batch, self._publish))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: Batch, publish: Publish) -> None:
        started = time.perf_counter()
        try:
            await publish(CLICK_TRACKED, encode_batch(batch.lines))
        except asyncio.CancelledError:
            self._spool.failed(batch)
            raise
        except Exception as exc:
            self._spool.failed(batch)
            self._failures += 1
            self._metrics.publish_failures.inc()
            retry_in_s = self._backoff.next()
            log.warning("clicks.publish_failed", clicks=len(batch.lines),
                        error=str(exc) or type(exc).__name__, retry_in_s=retry_in_s)
        else:
            elapsed = time.perf_counter() - started
            self._spool.confirmed(batch)
            self._backoff.reset()
            clicks = len(batch.lines)
            self.published += clicks
            metrics = self._metrics
            metrics.published.inc(clicks)
            metrics.batch_clicks.observe(clicks)
            metrics.confirm_seconds.observe(elapsed)
            # First and last event id: a click's id (REDIRECTOR_ACCESS_LOG) falls in a batch.
            log.info("clicks.published", clicks=clicks, confirm_ms=round(elapsed * 1000, 2),
                     first_event_id=event_id_of(batch.lines[0]),
                     last_event_id=event_id_of(batch.lines[-1]))
        finally:
            self._slots.release()
            self._wake.set()


T = TypeVar("T")


async def _in_thread(work: Callable[[list[T]], None], items: list[T]) -> None:
    """Blocking spool file work, off the event loop. Shielded: once taken from the spool,
    the items must be handled even if this task is cancelled (a segment left undeleted
    would be sent again; descriptors taken for an fsync would leak)."""
    await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, work, items))


def event_id_of(line: bytes) -> str | None:
    """The `id` of one spooled CloudEvent, read without decoding the whole line
    (shared.events.encode_event writes it second, after `specversion`)."""
    start = line.find(b'"id":"', 0, 200)
    if start == -1:
        return None
    start += 6
    end = line.find(b'"', start, start + 260)
    return line[start:end].decode("ascii", "replace") if end != -1 else None
