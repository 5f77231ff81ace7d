"""Consuming with one ack policy for every service.

For each delivered message:

- the elements that do not decode (not JSON, not a CloudEvent, invalid data) go to
  the queue's dead-letter queue together, as one message, with their count and the
  first reasons in the headers: a batch of thousands of bad elements costs one
  publish, not thousands, so it is parked in bounded time. They are parked after the
  valid events are handled, next to the ack: a message that is redelivered because
  a stop came first has not dead-lettered them yet, so they are never parked twice;
- the valid events go to the handler together (a batched message stays a batch);
- the handler succeeding, or its failure being parked (retry tier or dead-letter
  queue, confirmed by the broker), is what acks the message. Nothing is acked
  before the work it stands for is done or safely handed on.

`TransientError` (and any unclassified exception, which is also logged with its
traceback as a bug) sends the events to a delayed-retry tier with the attempt
count incremented; after `max_attempts` they are dead-lettered. A `TransientError`
with `counts_attempt=False` (work handed back untried) keeps the count. `PermanentError`
dead-letters them at once. Handlers must be idempotent: delivery is at least once,
and a retried batch re-runs every event in it.

Every outcome is counted here, once for all services (`shared.metrics.ConsumerMetrics`:
events by type and outcome, retries, dead-letters by reason, handling time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from prometheus_client import CollectorRegistry

from shared.broker.names import bindings_of
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.errors import PermanentError, TransientError
from shared.events import Event, InvalidEvent, decode_message, encode_batch
from shared.metrics import ConsumerMetrics

Handler = Callable[[Sequence[Event[Any]]], Awaitable[None]]
# A message's body and content type -> its events (`decode_message` unless a consumer
# reads a lighter view of them).
Decoder = Callable[[bytes, str | None], list[Event[Any] | InvalidEvent]]

ATTEMPT_HEADER = "x-attempt"
REASON_HEADER = "x-dead-reason"
ERROR_HEADER = "x-dead-error"
LAST_ERROR_HEADER = "x-last-error"
QUEUE_HEADER = "x-original-queue"
ROUTING_KEY_HEADER = "x-original-routing-key"
DEAD_AT_HEADER = "x-dead-at"
MAX_HEADER_TEXT = 1000
REASONS_SHOWN = 3  # of a message's malformed elements, the first reasons kept in the header
# How long handlers cancelled by `Consumer.stop(cancel_after=True)` get to unwind.
CANCEL_GRACE_S = 10.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConsumePolicy:
    prefetch: int = 64
    max_attempts: int = 5
    # Pause before requeueing a message whose retry or dead-letter publish failed,
    # so a broken broker path never turns into a hot redelivery loop.
    park_failure_pause_s: float = 1.0


class Consumer:
    """Consumes one service queue with the policy above; `stop()` drains in-flight work."""

    def __init__(self, *, channel: AbstractChannel, topology: Topology, queue: str,
                 handler: Handler, publisher: Publisher,
                 policy: ConsumePolicy | None = None,
                 metrics: ConsumerMetrics | None = None,
                 decode: Decoder = decode_message) -> None:
        self._channel = channel
        self._topology = topology
        self._name = queue
        self._queue_name = topology.queue(queue)
        self._handler = handler
        self._decode = decode
        self._publisher = publisher
        self._policy = policy or ConsumePolicy()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._accepted = frozenset(bindings_of(queue))
        self._metrics = (metrics or ConsumerMetrics(CollectorRegistry())).for_queue(
            queue, sorted(self._accepted))

    async def start(self) -> None:
        await self._channel.set_qos(prefetch_count=self._policy.prefetch)
        self._queue = await self._channel.get_queue(self._queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message)

    @property
    def in_flight(self) -> int:
        """Messages being handled right now (taken, not yet acked or parked)."""
        return len(self._in_flight)

    async def stop(self, timeout_s: float = 30.0, *, cancel_after: bool = False) -> int:
        """Stop taking messages, then wait up to `timeout_s` for the ones in hand to be
        acked. With `cancel_after`, handlers still running then are cancelled: their
        messages stay unacked and the broker delivers them again (handlers are
        idempotent). Returns how many were cancelled."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # the channel may already be gone; nothing to cancel
                log.warning("consumer.cancel_failed", queue=self._queue_name, error=str(exc))
            self._tag = None
        if not self._in_flight:
            return 0
        _, running = await asyncio.wait(set(self._in_flight), timeout=timeout_s)
        if not cancel_after or not running:
            return 0
        for task in running:
            task.cancel()
        # Bounded: a handler's clean-up (killing a child process) must not hold the exit.
        await asyncio.wait(running, timeout=CANCEL_GRACE_S)
        return len(running)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        headers = message.headers or {}
        attempt = _int_header(headers.get(ATTEMPT_HEADER), 1)
        decoded = self._decode(message.body, message.content_type)
        events: list[Event[Any]] = []
        invalid: list[tuple[int, InvalidEvent]] = []  # (position in the message, why)
        for position, item in enumerate(decoded, start=1):
            if isinstance(item, InvalidEvent):
                invalid.append((position, item))
            elif self._accepted and item.type not in self._accepted:
                invalid.append((position, InvalidEvent(
                    f"event type {item.type!r} is not one {self._queue_name} consumes "
                    f"({', '.join(sorted(self._accepted))})", item.raw)))
            else:
                events.append(item)
        structlog.contextvars.bind_contextvars(
            queue=self._queue_name, message_id=message.message_id, attempt=attempt,
            event_id=events[0].id if len(events) == 1 else None,
        )
        outcome = "unfinished"
        error: str | None = None
        metrics = self._metrics
        try:
            if events:
                try:
                    await self._handler(events)
                except PermanentError as exc:
                    outcome, error = "dead-lettered", exc.reason
                    await self._dead_letter([e.raw for e in events], message, "rejected",
                                            exc.reason, attempt)
                except TransientError as exc:
                    outcome, error = await self._retry(events, message, attempt, exc.reason,
                                                       exc.delay_s, spent=exc.counts_attempt)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Unclassified: a bug. Say so loudly, then treat it as transient so the
                    # work is retried a bounded number of times and finally kept in the DLQ.
                    log.exception("handler.unexpected_error")
                    outcome, error = await self._retry(
                        events, message, attempt, f"{type(exc).__name__}: {exc}", None)
            if invalid:
                # Parked only now, next to the ack: a message left unacked while its good
                # events wait (a stop, a database down) comes back with its bad elements
                # not yet dead-lettered, so they never are twice.
                reason = _malformed_reason(invalid)
                log.warning("event.malformed", count=len(invalid), reason=reason)
                await self._dead_letter([item.raw for _, item in invalid], message,
                                        "malformed", reason, attempt)
                metrics.malformed(len(invalid))
            await message.ack()
            if outcome == "unfinished":
                outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"  # unacked: the broker redelivers it
            raise
        except Exception as exc:
            # Parking the message failed (broker path down): keep it, and back off.
            outcome, error = "requeued", f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self._policy.park_failure_pause_s)
            # If the channel is gone the broker redelivers the message anyway.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            elapsed = time.perf_counter() - started
            if events and outcome != "cancelled":
                metrics.consumed((event.type for event in events), _outcome_label(outcome))
            metrics.handle_seconds.observe(elapsed)
            # A batch's first and last event ids (a single event's id is bound above).
            ends = ({"first_event_id": events[0].id, "last_event_id": events[-1].id}
                    if len(events) > 1 else {})
            log.info("message.handled", events=len(events), malformed=len(invalid),
                     outcome=outcome, error=error, duration_ms=round(elapsed * 1000, 2),
                     **ends)
            structlog.contextvars.clear_contextvars()

    async def _retry(self, events: Sequence[Event[Any]], message: AbstractIncomingMessage,
                     attempt: int, reason: str, delay_s: float | None,
                     *, spent: bool = True) -> tuple[str, str]:
        if spent and attempt >= self._policy.max_attempts:
            text = f"gave up after {attempt} attempts: {reason}"
            await self._dead_letter([e.raw for e in events], message, "exhausted", text,
                                    attempt)
            return "dead-lettered", text
        delay_ms = self._topology.retry_delay_ms(attempt, delay_s)
        body, batch = _body([e.raw for e in events])
        await self._publisher.send_to_queue(
            self._topology.retry_queue(self._name, delay_ms), body, batch=batch,
            headers={**_passed_on(message, self._queue_name),
                     ATTEMPT_HEADER: attempt + 1 if spent else attempt,
                     LAST_ERROR_HEADER: reason[:MAX_HEADER_TEXT]},
        )
        self._metrics.retried.inc()
        return f"retry-in-{delay_ms}ms", reason

    async def _dead_letter(self, raws: list[bytes], message: AbstractIncomingMessage,
                           kind: str, reason: str, attempt: int) -> None:
        body, batch = _body(raws)
        await self._publisher.send_to_queue(
            self._topology.dead_queue(self._name), body, batch=batch,
            headers={**_passed_on(message, self._queue_name), ATTEMPT_HEADER: attempt,
                     REASON_HEADER: kind, ERROR_HEADER: reason[:MAX_HEADER_TEXT],
                     DEAD_AT_HEADER: datetime.now(UTC).isoformat()},
        )
        self._metrics.dead_lettered[kind].inc()


def _malformed_reason(invalid: Sequence[tuple[int, InvalidEvent]]) -> str:
    """One element's reason as it is; for several, their count and the first reasons
    with each element's position in the message, within the header's limit."""
    if len(invalid) == 1:
        return invalid[0][1].reason[:MAX_HEADER_TEXT]
    room = (MAX_HEADER_TEXT - 100) // REASONS_SHOWN
    shown = "; ".join(f"#{position}: {item.reason[:room]}"
                      for position, item in invalid[:REASONS_SHOWN])
    more = len(invalid) - REASONS_SHOWN
    return (f"{len(invalid)} malformed elements: {shown}"
            + (f"; and {more} more" if more > 0 else ""))


def _outcome_label(outcome: str) -> str:
    """`message.handled`'s outcome as the events counter's label (a fixed set)."""
    if outcome.startswith("retry"):
        return "retry"
    return outcome if outcome in ("ok", "dead-lettered") else "requeued"


def _body(raws: list[bytes]) -> tuple[bytes, bool]:
    if len(raws) == 1:
        return raws[0], False
    return encode_batch(raws), True


def _passed_on(message: AbstractIncomingMessage, queue: str) -> dict[str, Any]:
    headers = dict(message.headers or {})
    headers.setdefault(QUEUE_HEADER, queue)
    if message.exchange:  # first delivery: remember where it came from
        headers.setdefault(ROUTING_KEY_HEADER, message.routing_key or "")
    # RabbitMQ's own x-death history grows with each trip; it is not ours to carry.
    headers.pop("x-death", None)
    return headers


def _int_header(value: object, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)) and str(value).isdigit():
        return int(value)
    return default
