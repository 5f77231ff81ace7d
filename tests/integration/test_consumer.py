"""shared.broker.consumer.Consumer on the real broker, with a handler the test controls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage

from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.errors import PermanentError, TransientError
from shared.events import BATCH, STRUCTURED, ClickTracked, Event, encode_batch
from shared.settings import BrokerSettings
from tests.support.amqp import (
    batch_message,
    click,
    click_event,
    get_messages,
    message,
    message_count,
    text_header,
    wait_count,
)

MAX_ATTEMPTS = 3


@dataclass
class Recorder:
    """A handler that records every call (events, attempt, time) and then does `then`."""

    then: Callable[[int, Sequence[Event[Any]]], Awaitable[None]] | None = None
    calls: list[list[Event[Any]]] = field(default_factory=list)
    attempts: list[int | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    successes: list[list[Event[Any]]] = field(default_factory=list)

    async def __call__(self, events: Sequence[Event[Any]]) -> None:
        self.calls.append(list(events))
        # The consumer binds the delivery's attempt number into the log context.
        self.attempts.append(structlog.contextvars.get_contextvars().get("attempt"))
        self.times.append(time.monotonic())
        if self.then is not None:
            await self.then(len(self.calls), events)
        self.successes.append(list(events))

    @property
    def event_ids(self) -> list[str]:
        return [event.id for call in self.calls for event in call]


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@dataclass
class Running:
    consumer: Consumer
    exchange: AbstractExchange

    async def send(self, msg: aio_pika.Message, routing_key: str = CLICK_TRACKED) -> None:
        await self.exchange.publish(msg, routing_key=routing_key, mandatory=True, timeout=5)


@asynccontextmanager
async def running(broker: BrokerSettings, topology: Topology,
                  handler: Callable[[Sequence[Event[Any]]], Awaitable[None]]
                  ) -> AsyncIterator[Running]:
    """A real Consumer on the logger queue; stopped and disconnected on the way out, so
    any message it did not ack is back in the queue when the test counts."""
    connection = await connect(broker, name="test-consumer", attempts=1)
    try:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/consumer", timeout_s=5)
        consumer = Consumer(
            channel=channel, topology=topology, queue=LOGGER_QUEUE, handler=handler,
            publisher=publisher,
            policy=ConsumePolicy(prefetch=16, max_attempts=MAX_ATTEMPTS,
                                 park_failure_pause_s=0.1),
        )
        await consumer.start()
        try:
            yield Running(consumer, exchange)
        finally:
            await consumer.stop(timeout_s=5)
    finally:
        await connection.close()


async def assert_queues_empty(side: AbstractConnection, topology: Topology,
                              *, dead: int = 0) -> None:
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 0
    for delay in topology.retry_delays_ms:
        assert await message_count(side, topology.retry_queue(LOGGER_QUEUE, delay)) == 0
    assert await message_count(side, topology.dead_queue(LOGGER_QUEUE)) == dead


async def dead_letters(side: AbstractConnection, topology: Topology,
                       expected: int) -> list[AbstractIncomingMessage]:
    channel = await side.channel()
    got = await get_messages(channel, topology.dead_queue(LOGGER_QUEUE), expected + 1,
                             timeout_s=0.3)
    await channel.close()
    return got


def envelope(**overrides: object) -> bytes:
    """A hand-built CloudEvent, for shapes encode_event would never produce."""
    body: dict[str, object] = {
        "specversion": "1.0", "id": "hand-built-1", "source": "/tests", "type": CLICK_TRACKED,
        "time": "2026-01-02T03:04:05Z",
        "data": {"customer_id": "c", "campaign_id": "k", "recipient_id": "r",
                 "domain": "click.platform.test", "url": "https://x.example/"},
    }
    body.update(overrides)
    return json.dumps(body).encode()


# --- (a) ---------------------------------------------------------------------------------

async def test_single_and_batched_messages_reach_the_handler_as_events_and_are_acked(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    recorder = Recorder()
    single_id, single = click_event(1, url="https://shop.example/ü?q=a%20b")
    batch = [click_event(n) for n in (2, 3, 4)]
    async with running(broker, topology, recorder) as run:
        await run.send(message(single))
        await run.send(batch_message([raw for _, raw in batch]))
        assert await until(lambda: len(recorder.successes) == 2)

    calls = sorted(recorder.calls, key=len)
    assert [[e.id for e in call] for call in calls] == [[single_id], [i for i, _ in batch]]
    first = calls[0][0]
    assert isinstance(first, Event)
    assert first.type == CLICK_TRACKED and first.source == "/tests/integration"
    assert first.data == click(1, url="https://shop.example/ü?q=a%20b")
    assert isinstance(first.data, ClickTracked)
    assert first.raw == single
    assert first.time.tzinfo is not None
    assert [e.raw for e in calls[1]] == [raw for _, raw in batch]
    assert recorder.attempts == [1, 1]
    await assert_queues_empty(side, topology)


# --- (b) ---------------------------------------------------------------------------------

async def test_malformed_messages_are_dead_lettered_with_their_reason_and_good_ones_pass(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    recorder = Recorder()
    not_json = b"this is {not json"
    not_cloudevent = b'{"hello": "world"}'
    unknown_type = envelope(id="unknown-1", type="click.exploded")
    bad_data = envelope(id="bad-data-1", data={"customer_id": "c"})
    _, wrong_type_body = click_event(9)
    good_a, bad_element, good_b = click_event(10), click_event(11, ip="9" * 46), click_event(12)
    after_id, after = click_event(13)
    expected_errors = {
        not_json: "not JSON",
        not_cloudevent: "not a CloudEvent",
        unknown_type: "unknown event type 'click.exploded'",
        bad_data: "invalid click.tracked data",
        wrong_type_body: "content type 'text/plain'",
        bad_element[1]: "invalid click.tracked data",
    }

    async with running(broker, topology, recorder) as run:
        for body in (not_json, not_cloudevent, unknown_type, bad_data):
            await run.send(message(body))
        await run.send(message(wrong_type_body, content_type="text/plain"))
        await run.send(batch_message([good_a[1], bad_element[1], good_b[1]]))
        await run.send(message(after))
        assert await until(lambda: len(recorder.successes) == 2)
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 6) == 6

    # The good ones were handled: the batch's two together, and the one sent after.
    assert sorted([e.id for e in call] for call in recorder.calls) == sorted(
        [[good_a[0], good_b[0]], [after_id]])
    await assert_queues_empty(side, topology, dead=6)

    dead = await dead_letters(side, topology, 6)
    assert len(dead) == 6
    by_body = {m.body: m for m in dead}
    assert set(by_body) == set(expected_errors)
    for body, needle in expected_errors.items():
        headers = by_body[body].headers
        assert headers["x-dead-reason"] == "malformed", body
        assert needle in text_header(headers, "x-dead-error"), (body, headers["x-dead-error"])
        assert headers["x-attempt"] == 1
        assert headers["x-original-queue"] == topology.queue(LOGGER_QUEUE)
        assert headers["x-original-routing-key"] == CLICK_TRACKED
        assert datetime.fromisoformat(text_header(headers, "x-dead-at")).tzinfo is not None
    assert "`$.ip`" in text_header(by_body[bad_element[1]].headers, "x-dead-error")
    assert "campaign_id" in text_header(by_body[bad_data].headers, "x-dead-error")


# --- (c) ---------------------------------------------------------------------------------

async def test_permanent_error_dead_letters_at_once_with_reason_rejected(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    async def refuse(_call: int, _events: Sequence[Event[Any]]) -> None:
        raise PermanentError("customer cust-1 is closed")

    recorder = Recorder(then=refuse)
    batch = [click_event(n) for n in (1, 2)]
    async with running(broker, topology, recorder) as run:
        await run.send(batch_message([raw for _, raw in batch]))
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 1) == 1
        await asyncio.sleep(0.5)  # longer than the first retry tier: nothing comes back

    assert len(recorder.calls) == 1
    await assert_queues_empty(side, topology, dead=1)
    [dead] = await dead_letters(side, topology, 1)
    assert dead.content_type == BATCH
    assert dead.body == encode_batch([raw for _, raw in batch])  # the batch stays a batch
    assert dead.headers["x-dead-reason"] == "rejected"
    assert dead.headers["x-dead-error"] == "customer cust-1 is closed"
    assert dead.headers["x-attempt"] == 1


# --- (d) ---------------------------------------------------------------------------------

async def test_transient_error_is_retried_through_the_tiers_then_dead_lettered_exhausted(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    async def fail(_call: int, _events: Sequence[Event[Any]]) -> None:
        raise TransientError("database unavailable")

    recorder = Recorder(then=fail)
    batch = [click_event(n) for n in (1, 2)]
    async with running(broker, topology, recorder) as run:
        await run.send(batch_message([raw for _, raw in batch]))
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 1, timeout_s=5) == 1
        await asyncio.sleep(0.5)  # nothing further arrives after the dead letter

    assert recorder.attempts == [1, 2, 3]
    assert [[e.id for e in call] for call in recorder.calls] == [[i for i, _ in batch]] * 3
    gaps = [b - a for a, b in zip(recorder.times, recorder.times[1:], strict=False)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38, gaps  # the 200 ms, then the 400 ms tier
    await assert_queues_empty(side, topology, dead=1)
    [dead] = await dead_letters(side, topology, 1)
    assert dead.content_type == BATCH
    assert dead.body == encode_batch([raw for _, raw in batch])
    assert dead.headers["x-dead-reason"] == "exhausted"
    assert dead.headers["x-dead-error"] == "gave up after 3 attempts: database unavailable"
    assert dead.headers["x-attempt"] == MAX_ATTEMPTS
    assert dead.headers["x-last-error"] == "database unavailable"
    assert dead.headers["x-original-queue"] == topology.queue(LOGGER_QUEUE)
    assert dead.headers["x-original-routing-key"] == CLICK_TRACKED
    assert "x-death" not in dead.headers


async def test_transient_error_delay_picks_a_tier_at_least_that_long(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    async def fail_once(call: int, _events: Sequence[Event[Any]]) -> None:
        if call == 1:
            raise TransientError("rate limited", delay_s=0.3)

    recorder = Recorder(then=fail_once)
    async with running(broker, topology, recorder) as run:
        await run.send(message(click_event(1)[1]))
        assert await until(lambda: len(recorder.successes) == 1)
    assert recorder.times[1] - recorder.times[0] >= 0.38  # the 400 ms tier, not 200 ms
    await assert_queues_empty(side, topology)


async def test_work_handed_back_untried_spends_no_attempt(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    # More hand-backs than max_attempts allows tries: none of them dead-letters the event.
    handbacks = MAX_ATTEMPTS + 2

    async def hand_back(call: int, _events: Sequence[Event[Any]]) -> None:
        if call <= handbacks:
            raise TransientError("stopping: handed back", delay_s=0.0, counts_attempt=False)

    recorder = Recorder(then=hand_back)
    event_id, raw = click_event(1)
    async with running(broker, topology, recorder) as run:
        await run.send(message(raw))
        assert await until(lambda: len(recorder.successes) == 1, timeout_s=10)
    assert recorder.attempts == [1] * (handbacks + 1)
    assert recorder.event_ids == [event_id] * (handbacks + 1)
    await assert_queues_empty(side, topology, dead=0)


# --- (e) ---------------------------------------------------------------------------------

async def test_unexpected_exception_is_retried_then_dead_lettered_never_dropped(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    async def bug(_call: int, events: Sequence[Event[Any]]) -> None:
        empty: dict[str, int] = {}
        _ = empty["no-such-key"]

    recorder = Recorder(then=bug)
    event_id, raw = click_event(1)
    async with running(broker, topology, recorder) as run:
        await run.send(message(raw))
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 1, timeout_s=5) == 1

    assert recorder.attempts == [1, 2, 3]
    assert recorder.event_ids == [event_id] * 3
    await assert_queues_empty(side, topology, dead=1)
    [dead] = await dead_letters(side, topology, 1)
    assert dead.body == raw
    assert dead.content_type == STRUCTURED
    assert dead.headers["x-dead-reason"] == "exhausted"
    assert "KeyError" in text_header(dead.headers, "x-dead-error")
    assert "no-such-key" in text_header(dead.headers, "x-dead-error")


# --- (f) ---------------------------------------------------------------------------------

async def test_success_on_the_second_attempt_is_one_success_and_no_dead_letter(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    async def flaky(call: int, _events: Sequence[Event[Any]]) -> None:
        if call == 1:
            raise TransientError("timeout")

    recorder = Recorder(then=flaky)
    event_id, raw = click_event(1)
    async with running(broker, topology, recorder) as run:
        await run.send(message(raw))
        assert await until(lambda: len(recorder.successes) == 1)
        await asyncio.sleep(0.6)  # past every tier: no stray second delivery

    assert recorder.attempts == [1, 2]
    assert [[e.id for e in call] for call in recorder.successes] == [[event_id]]
    await assert_queues_empty(side, topology, dead=0)


# --- (g) ---------------------------------------------------------------------------------

async def test_stop_waits_for_the_in_flight_handler_and_its_ack(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(_call: int, events: Sequence[Event[Any]]) -> None:
        await release.wait()
        await asyncio.sleep(0.05)
        finished.extend(e.id for e in events)

    recorder = Recorder(then=slow)
    event_id, raw = click_event(1)
    async with running(broker, topology, recorder) as run:
        await run.send(message(raw))
        assert await until(lambda: len(recorder.calls) == 1)
        stopping = asyncio.create_task(run.consumer.stop(timeout_s=5))
        await asyncio.sleep(0.3)
        assert not stopping.done()  # held by the in-flight handler
        # Once stop() began, the consumer takes nothing new.
        await run.send(message(click_event(2)[1]))
        release.set()
        await asyncio.wait_for(stopping, timeout=5)
        assert finished == [event_id]
        assert len(recorder.successes) == 1
        await asyncio.sleep(0.2)
        assert len(recorder.calls) == 1
    # The in-flight message was acked before stop() returned; the later one waits unread.
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 1
    assert await message_count(side, topology.dead_queue(LOGGER_QUEUE)) == 0


async def test_a_batch_redelivered_after_a_stop_mid_handler_dead_letters_its_bad_elements_once(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    """A stopping service whose handler cannot finish in time (its database is down)
    leaves the message unacked, and the broker hands it to the next consumer. Its bad
    elements must not be dead-lettered by both: they are parked only together with the
    ack, once the good ones are done."""
    release = asyncio.Event()

    async def stuck(_call: int, _events: Sequence[Event[Any]]) -> None:
        await release.wait()  # as a commit to a database that is down

    first = Recorder(then=stuck)
    bad = [b'{"hello": 1}', b'{"hello": 2}']
    good_id, good = click_event(1)
    async with running(broker, topology, first) as run:
        await run.send(batch_message([bad[0], good, bad[1]]))
        assert await until(lambda: len(first.calls) == 1)
        await asyncio.sleep(0.3)
        await run.consumer.stop(timeout_s=0.5)  # the drain gives up: still unacked
    release.set()  # too late: the connection is gone and the broker has it back

    second = Recorder()
    async with running(broker, topology, second):
        assert await until(lambda: len(second.successes) == 1)
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 1) == 1
        await asyncio.sleep(0.3)
    assert [e.id for e in second.successes[0]] == [good_id]
    await assert_queues_empty(side, topology, dead=1)
    [dead] = await dead_letters(side, topology, 1)
    assert dead.body == encode_batch(bad)
    assert text_header(dead.headers, "x-dead-error").startswith("2 malformed elements: #1: ")


async def test_stop_with_cancel_after_cancels_a_handler_past_the_timeout_leaving_it_unacked(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    cancelled: list[str] = []

    async def stuck(_call: int, events: Sequence[Event[Any]]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.extend(e.id for e in events)
            raise

    recorder = Recorder(then=stuck)
    event_id, raw = click_event(1)
    async with running(broker, topology, recorder) as run:
        await run.send(message(raw))
        assert await until(lambda: run.consumer.in_flight == 1)
        before = time.monotonic()
        abandoned = await run.consumer.stop(timeout_s=0.3, cancel_after=True)
        took = time.monotonic() - before
        assert abandoned == 1
        assert cancelled == [event_id]
        assert run.consumer.in_flight == 0
        assert 0.3 <= took < 2, took
        assert not recorder.successes
    # Neither acked nor parked: the broker holds it for the next consumer.
    assert await wait_count(side, topology.queue(LOGGER_QUEUE), 1, timeout_s=5) == 1
    assert await message_count(side, topology.dead_queue(LOGGER_QUEUE)) == 0
    for delay in topology.retry_delays_ms:
        assert await message_count(side, topology.retry_queue(LOGGER_QUEUE, delay)) == 0


async def test_stop_without_cancel_after_leaves_a_handler_past_the_timeout_running(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    release = asyncio.Event()

    async def held(_call: int, _events: Sequence[Event[Any]]) -> None:
        await release.wait()

    recorder = Recorder(then=held)
    async with running(broker, topology, recorder) as run:
        await run.send(message(click_event(1)[1]))
        assert await until(lambda: run.consumer.in_flight == 1)
        assert await run.consumer.stop(timeout_s=0.2) == 0
        assert run.consumer.in_flight == 1  # still running: its caller decides
        release.set()
        assert await until(lambda: len(recorder.successes) == 1)
    await assert_queues_empty(side, topology, dead=0)


# --- events this queue does not consume, and text no database can store -----------------

async def test_event_of_a_type_the_queue_does_not_consume_is_dead_lettered_not_dropped(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    recorder = Recorder()
    domain_event = envelope(id="domain-1", type="domain.created",
                            data={"domain": "track.example.com", "customer_id": "c"})
    nul_id, with_nul = "nul-1", envelope(id="nul-1", data={
        "customer_id": "c", "campaign_id": "k", "recipient_id": "r",
        "domain": "click.platform.test", "url": "https://x.example/", "user_agent": "a\u0000b"})
    good_id, good = click_event(1)
    async with running(broker, topology, recorder) as run:
        # Published with the click routing key, as a confused producer might.
        await run.send(batch_message([domain_event, with_nul, good]))
        assert await until(lambda: len(recorder.successes) == 1)
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 1) == 1

    assert [e.id for e in recorder.calls[0]] == [good_id]
    # The message's two bad elements are one dead letter, each reason named by position.
    [dead] = await dead_letters(side, topology, 1)
    assert dead.body == encode_batch([domain_event, with_nul])
    assert dead.headers["x-dead-reason"] == "malformed"
    error = text_header(dead.headers, "x-dead-error")
    assert error.startswith("2 malformed elements: #1: "), error
    assert "'domain.created' is not one" in error
    assert "#2: " in error and "NUL" in error, nul_id
