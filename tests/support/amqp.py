"""Small helpers for integration tests on the real broker: counts, gets, click events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    HeadersType,
)

from shared.broker import topology as broker_topology
from shared.broker.topology import Topology
from shared.events import BATCH, STRUCTURED, ClickTracked, encode_batch, encode_event

SOURCE = "/tests/integration"


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[AbstractConnection]:
    """A plain (non-robust) connection for looking at queues from the side."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def observing(url: str, topology: Topology, *routing_keys: str
                    ) -> AsyncIterator[tuple[AbstractExchange, AbstractQueue]]:
    """The deployment's topology declared, and an exclusive queue bound to `routing_keys`
    to see what the services publish; the topology is deleted on leaving."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await broker_topology.declare(channel, topology)
        observed = await channel.declare_queue(f"{topology.exchange}.observer", exclusive=True)
        for key in routing_keys:
            await observed.bind(exchange, key)
        yield exchange, observed
    finally:
        await broker_topology.delete(await connection.channel(), topology)
        await connection.close()


async def message_count(connection: AbstractConnection, queue: str) -> int:
    """Ready messages in `queue`, by passive declare (raises if the queue does not exist).

    Uses a channel of its own: a passive declare of a missing queue closes its channel.
    """
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None  # a DeclareOk always carries it
        return count
    finally:
        await channel.close()


async def queue_exists(connection: AbstractConnection, queue: str) -> bool:
    try:
        await message_count(connection, queue)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    return True


async def wait_count(connection: AbstractConnection, queue: str, expected: int,
                     timeout_s: float = 5.0) -> int:
    """Poll the ready count until it equals `expected` or time runs out; returns the last."""
    deadline = time.monotonic() + timeout_s
    count = await message_count(connection, queue)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        count = await message_count(connection, queue)
    return count


async def get_messages(channel: AbstractChannel, queue: str, expected: int,
                       timeout_s: float = 5.0) -> list[AbstractIncomingMessage]:
    """basic.get (acked) up to `expected` messages, waiting up to `timeout_s` for them."""
    amqp_queue = await channel.get_queue(queue, ensure=False)
    messages: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        message = await amqp_queue.get(no_ack=True, fail=False, timeout=5)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        messages.append(message)
    return messages


async def decoded_messages(queue: AbstractQueue, expected: int,
                           timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Up to `expected` messages taken from `queue` (acked), JSON-decoded, in order."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        taken = await queue.get(no_ack=True, fail=False)
        if taken is None:
            await asyncio.sleep(0.02)
            continue
        got.append(msgspec.json.decode(taken.body))
    return got


async def assert_no_more(queue: AbstractQueue, wait_s: float = 0.2) -> None:
    """Nothing else arrives in `queue` within `wait_s`."""
    await asyncio.sleep(wait_s)
    assert await queue.get(no_ack=True, fail=False) is None


def text_header(headers: HeadersType, name: str) -> str:
    """A header that must be a string (the broker's header values are of many types)."""
    value = headers[name]
    assert isinstance(value, str), (name, value)
    return value


def click(number: int = 0, **overrides: object) -> ClickTracked:
    """A click; `overrides` may set any field to anything, invalid values included."""
    return msgspec.structs.replace(ClickTracked(
        customer_id="cust-1", campaign_id="camp-1", recipient_id=f"rcpt-{number}",
        domain="click.platform.test", url=f"https://shop.example/item/{number}",
        ip="192.0.2.10", user_agent="Mozilla/5.0 (test)",
    ), **overrides)


def click_event(number: int = 0, *, event_id: str | None = None,
                **overrides: object) -> tuple[str, bytes]:
    """A structured-mode click CloudEvent: (its id, its bytes)."""
    event_id = event_id or str(uuid.uuid4())
    return event_id, encode_event(click(number, **overrides), source=SOURCE, event_id=event_id)


def message(body: bytes, *, content_type: str | None = STRUCTURED,
            headers: HeadersType | None = None) -> aio_pika.Message:
    return aio_pika.Message(body, content_type=content_type, headers=headers,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=str(uuid.uuid4()))


def batch_message(raws: list[bytes]) -> aio_pika.Message:
    return message(encode_batch(raws), content_type=BATCH)
