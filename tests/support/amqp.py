"""Small helpers for integration tests on the real broker: counts, gets, click events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    HeadersType,
)

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
