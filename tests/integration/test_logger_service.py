"""The logger service on the real broker and database: every click once, queue drained."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aio_pika.abc import AbstractConnection

from demo.databases import fetch
from demo.processes import ServiceProcess
from services.logger.__main__ import serve
from services.logger.settings import LoggerSettings
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.events import encode_batch
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import service_env
from tests.support.amqp import click_event, connected, message_count

EVENTS = 2000
PER_MESSAGE = 50
DUPLICATES = 100


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def row_count(database: DatabaseSettings) -> int:
    return (await fetch(database, "SELECT count(*) AS n FROM tracking_logs"))[0]["n"]


async def test_logger_writes_2000_clicks_exactly_once_and_drains_the_queue(
        broker: BrokerSettings, database: DatabaseSettings, side: AbstractConnection) -> None:
    topology = Topology(broker.exchange)  # the logger's own (default) tiers
    events = [click_event(n, recipient_id=f"rcpt-{n}") for n in range(EVENTS)]
    messages = [events[i:i + PER_MESSAGE] for i in range(0, EVENTS, PER_MESSAGE)]
    half = len(messages) // 2
    # Later messages carry 100 redeliveries of events already sent in earlier ones.
    per_later = DUPLICATES // (len(messages) - half)
    for number, later in enumerate(messages[half:]):
        earlier = messages[number % half]
        later.extend(earlier[(number * 7 + k) % PER_MESSAGE] for k in range(per_later))
    assert sum(len(m) for m in messages) == EVENTS + DUPLICATES

    connection = await connect(broker, name="test-logger-publisher", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/logger", timeout_s=10)

        async def send(batch: list[tuple[str, bytes]]) -> None:
            await publisher.publish(CLICK_TRACKED, encode_batch([raw for _, raw in batch]),
                                    batch=True)

        for batch in messages[:half]:  # waiting before the logger runs
            await send(batch)

        settings = LoggerSettings(broker=broker, database=database, batch_rows=500,
                                  flush_ms=20, prefetch=16, max_backoff_s=1.0,
                                  log_level="INFO")
        stop = asyncio.Event()
        logger = asyncio.create_task(serve(settings, stop))
        try:
            for batch in messages[half:]:  # arriving while it runs
                await send(batch)
            assert await eventually(lambda: _at_least(database, EVENTS), timeout_s=20), \
                f"only {await row_count(database)} rows"
            assert await eventually(
                lambda: _drained(side, topology.queue(LOGGER_QUEUE)), timeout_s=10)
        finally:
            stop.set()
            await asyncio.wait_for(logger, timeout=15)

    # The logger is gone and its channel closed: anything it had not acked would be back.
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 0
    assert await message_count(side, topology.dead_queue(LOGGER_QUEUE)) == 0
    for delay in topology.retry_delays_ms:
        assert await message_count(side, topology.retry_queue(LOGGER_QUEUE, delay)) == 0
    [totals] = await fetch(database, "SELECT count(*) AS n, count(DISTINCT event_id) AS d "
                                     "FROM tracking_logs")
    assert (totals["n"], totals["d"]) == (EVENTS, EVENTS)
    rows = await fetch(database, "SELECT event_id, recipient_id FROM tracking_logs")
    assert {r["event_id"]: r["recipient_id"] for r in rows} == {
        event_id: f"rcpt-{n}" for n, (event_id, _) in enumerate(events)}


async def _at_least(database: DatabaseSettings, expected: int) -> bool:
    return await row_count(database) >= expected


async def _drained(side: AbstractConnection, queue: str) -> bool:
    return await message_count(side, queue) == 0


def test_a_click_the_database_cannot_store_does_not_wedge_the_logger(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    """PostgreSQL text cannot hold NUL, yet "\\u0000" is valid JSON and passes validation.

    Such a click must not block every other click behind it: the good ones are
    stored, and the bad one ends up stored or dead-lettered, never retried for ever.
    """
    topology = Topology(broker.exchange)
    good_before = click_event(1)
    poison = click_event(2, user_agent="evil\x00agent")
    good_after = click_event(3)

    async def publish() -> None:
        connection = await connect(broker, name="test-logger-publisher", attempts=1)
        async with connection:
            channel = await open_channel(connection)
            exchange = await broker_topology.declare(channel, topology)
            publisher = Publisher(channel, exchange, source="/tests/logger", timeout_s=10)
            for _, raw in (good_before, poison, good_after):
                await publisher.publish(CLICK_TRACKED, raw)

    async def outcome() -> tuple[set[str], int, int]:
        rows = await fetch(database, "SELECT event_id FROM tracking_logs")
        async with connected(broker.url) as side:
            ready = await message_count(side, topology.queue(LOGGER_QUEUE))
            dead = await message_count(side, topology.dead_queue(LOGGER_QUEUE))
        return {r["event_id"] for r in rows}, ready, dead

    asyncio.run(publish())
    env = service_env(broker, database, tmp_path, LOGGER_MAX_BACKOFF_S="0.2")
    with ServiceProcess("logger", env, tmp_path) as logger:
        logger.wait_for_log("logger.started")
        deadline = time.monotonic() + 6
        stored, ready, dead = asyncio.run(outcome())
        while time.monotonic() < deadline and not (
                {good_before[0], good_after[0]} <= stored and ready == 0):
            time.sleep(0.1)
            stored, ready, dead = asyncio.run(outcome())
        assert {good_before[0], good_after[0]} <= stored, (
            f"good clicks not stored; logger log tail:\n{logger.log_text()[-1500:]}")
        assert ready == 0
        # The poison click is kept somewhere an operator can see it, not dropped.
        assert poison[0] in stored or dead == 1
        assert logger.terminate(timeout_s=15) == 0

