"""Connecting to RabbitMQ: robust (reconnecting) connections, waited for at start."""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from shared.backoff import Backoff
from shared.settings import BrokerSettings

log = structlog.get_logger(__name__)


class _SaidElsewhere(logging.Filter):
    """Drops aiormq's ERROR line for a connection attempt that failed: the same attempt is
    reported once already, by `connect` below at start, or by aio-pika's reconnect
    warning afterwards. One line per retry, not two."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


_SAID_ELSEWHERE = _SaidElsewhere()


async def connect(settings: BrokerSettings, *, name: str, attempts: int | None = None,
                  max_backoff_s: float = 10.0) -> AbstractRobustConnection:
    """Connect, retrying with capped backoff; `attempts=None` waits for ever.

    Services start before the broker in a compose stack or after a broker restart,
    so failing to connect at once is normal and is logged, not fatal.
    """
    logging.getLogger("aiormq.connection").addFilter(_SAID_ELSEWHERE)  # once: same instance
    backoff = Backoff(0.2, max_backoff_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await aio_pika.connect_robust(
                settings.url,
                client_properties={"connection_name": name},
                timeout=10,
                # Heartbeats detect a broker that vanished without closing the socket.
                heartbeat=15,
                reconnect_interval=1,
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            delay = backoff.next()
            log.warning("broker.unreachable", url=settings.safe_url, attempt=attempt,
                        error=str(exc) or type(exc).__name__, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)


async def open_channel(connection: AbstractRobustConnection, *,
                       prefetch: int = 0) -> AbstractRobustChannel:
    """A channel with publisher confirms, and unroutable messages raising, not vanishing."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch:
        await channel.set_qos(prefetch_count=prefetch)
    return channel
