"""Publishing with publisher confirms: a publish returns only once the broker owns the message."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from shared.errors import TransientError
from shared.events import BATCH, STRUCTURED, EventData, encode_event, new_event_id


class Publisher:
    """Confirmed, persistent, mandatory publishes to the topic exchange or to one queue.

    `mandatory` turns "no queue bound" into an error instead of a silent drop.
    """

    def __init__(self, channel: AbstractChannel, exchange: AbstractExchange, *,
                 source: str, timeout_s: float = 30.0,
                 observe: Callable[[EventData], None] | None = None) -> None:
        self._channel = channel
        self._exchange = exchange
        self._source = source
        self._timeout_s = timeout_s
        # Told of every event `publish_event` got confirmed (metrics count them).
        self._observe = observe

    async def publish(self, routing_key: str, body: bytes, *, batch: bool = False,
                      message_id: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
        await self._exchange.publish(
            _message(body, batch=batch, message_id=message_id, headers=headers),
            routing_key=routing_key, mandatory=True, timeout=self._timeout_s,
        )

    async def publish_event(self, data: EventData, *, event_id: str | None = None) -> str:
        """Publish one event in structured mode; returns its id.

        An unroutable event (no queue bound: the topology was deleted or changed by
        hand) raises `TransientError`, so a handler's work is retried, not lost.
        """
        event_id = event_id or new_event_id()
        body = encode_event(data, source=self._source, event_id=event_id)
        try:
            await self.publish(data.TYPE, body, message_id=event_id)
        except aio_pika.exceptions.PublishError as exc:
            raise TransientError(f"{data.TYPE} is unroutable ({exc}): no queue is bound to "
                                 "it; restart a service to re-declare the topology") from exc
        if self._observe is not None:
            self._observe(data)
        return event_id

    async def send_to_queue(self, queue: str, body: bytes, *, batch: bool = False,
                            headers: Mapping[str, Any] | None = None) -> None:
        """Publish straight to a queue through the default exchange (retry tiers, DLQs)."""
        await self._channel.default_exchange.publish(
            _message(body, batch=batch, message_id=None, headers=headers),
            routing_key=queue, mandatory=True, timeout=self._timeout_s,
        )


def _message(body: bytes, *, batch: bool, message_id: str | None,
             headers: Mapping[str, Any] | None) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=BATCH if batch else STRUCTURED,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id or new_event_id(),
        headers=dict(headers) if headers else None,
    )
