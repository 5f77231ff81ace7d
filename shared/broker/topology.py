"""Exchange, queues, bindings, retry tiers and dead-letter queues, declared idempotently.

Every service declares the whole topology at start, publishers included: a click
published before the logger ever ran must still land in the logger's queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, FieldValue

from shared.broker.names import (
    BINDINGS,
    DEAD_SUFFIX,
    EDGE_BINDINGS,
    EDGE_QUEUE_EXPIRES_MS,
    PLATFORM_BINDINGS,
    PLATFORM_QUEUE,
    QUEUE_ARGUMENTS,
    RETRY_DELAYS_MS,
    RETRY_SUFFIX,
    edge_queue,
)

QUORUM: dict[str, FieldValue] = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class Topology:
    """Full names for one deployment: everything is prefixed with the exchange name."""

    exchange: str
    retry_delays_ms: tuple[int, ...] = RETRY_DELAYS_MS

    def queue(self, name: str) -> str:
        return f"{self.exchange}.{name}"

    def retry_queue(self, name: str, delay_ms: int) -> str:
        return f"{self.exchange}.{name}.{RETRY_SUFFIX}.{delay_ms}ms"

    def dead_queue(self, name: str) -> str:
        return f"{self.exchange}.{name}.{DEAD_SUFFIX}"

    def retry_delay_ms(self, attempt: int, at_least_s: float | None = None) -> int:
        """The tier for the given (1-based) failed attempt: growing, capped at the longest."""
        delays = self.retry_delays_ms
        delay = delays[min(attempt, len(delays)) - 1]
        if at_least_s is not None:
            wanted = int(at_least_s * 1000)
            delay = next((d for d in delays if d >= wanted), delays[-1])
        return delay

    def queue_names(self) -> list[str]:
        names = []
        for name in BINDINGS:
            names.append(self.queue(name))
            names.extend(self.retry_queue(name, d) for d in self.retry_delays_ms)
            names.append(self.dead_queue(name))
        names.append(self.queue(PLATFORM_QUEUE))
        return names


def edge_queue_names(topology: Topology, edge_id: str) -> list[str]:
    """The full names of one edge's queue, its retry tiers and its dead-letter queue."""
    name = edge_queue(edge_id)
    tiers = [topology.retry_queue(name, delay) for delay in topology.retry_delays_ms]
    return [topology.queue(name), *tiers, topology.dead_queue(name)]


async def declare(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare everything; safe to run from every replica of every service at once."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    for name, routing_keys in BINDINGS.items():
        await _declare_consumed(channel, exchange, topology, name, routing_keys,
                                QUEUE_ARGUMENTS.get(name, {}))
    platform = await channel.declare_queue(topology.queue(PLATFORM_QUEUE), durable=True,
                                           arguments=QUORUM)
    for key in PLATFORM_BINDINGS:
        await platform.bind(exchange, key)
    return exchange


async def declare_edge(channel: AbstractChannel, exchange: AbstractExchange,
                       topology: Topology, edge_id: str) -> str:
    """The queue of one edge (with its retry tiers and dead-letter queue), after
    `declare`; returns its relative name. Only the edge's own agent declares it."""
    name = edge_queue(edge_id)
    await _declare_consumed(channel, exchange, topology, name, EDGE_BINDINGS,
                            {"x-expires": EDGE_QUEUE_EXPIRES_MS})
    return name


async def _declare_consumed(channel: AbstractChannel, exchange: AbstractExchange,
                            topology: Topology, name: str, routing_keys: tuple[str, ...],
                            arguments: Mapping[str, FieldValue]) -> None:
    """A consumed queue (quorum, plus `arguments`) bound to `routing_keys`, its retry
    tiers and its dead-letter queue."""
    main = topology.queue(name)
    queue = await channel.declare_queue(main, durable=True,
                                        arguments={**QUORUM, **arguments})
    for key in routing_keys:
        await queue.bind(exchange, key)
    for delay in topology.retry_delays_ms:
        await channel.declare_queue(
            topology.retry_queue(name, delay),
            durable=True,
            arguments={
                **QUORUM,
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": main,
                # Quorum queues can dead-letter at-least-once (3.10+): a retry
                # is never lost between the tier and the main queue.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
    await channel.declare_queue(topology.dead_queue(name), durable=True, arguments=QUORUM)


async def delete(channel: AbstractChannel, topology: Topology) -> None:
    """Remove every queue and the exchange (tests, and tearing a namespace down)."""
    for name in topology.queue_names():
        await channel.queue_delete(name)
    await channel.exchange_delete(topology.exchange)
