"""Integration fixtures: a fast-retry topology in the test's own broker namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractConnection

from shared.broker import topology as broker_topology
from shared.broker.topology import Topology
from shared.settings import BrokerSettings
from tests.support.amqp import connected

# Short tiers so a retry round trip takes well under a second.
FAST_DELAYS_MS = (200, 400)


@pytest.fixture
async def topology(broker: BrokerSettings) -> AsyncIterator[Topology]:
    """The test namespace with short retry tiers; its queues are deleted afterwards.

    The `broker` fixture only knows the default tier names, so the short tiers
    are deleted here (before it runs).
    """
    fast = Topology(broker.exchange, retry_delays_ms=FAST_DELAYS_MS)
    yield fast
    async with connected(broker.url) as connection:
        channel = await connection.channel()
        await broker_topology.delete(channel, fast)


@pytest.fixture
async def side(broker: BrokerSettings) -> AsyncIterator[AbstractConnection]:
    """A plain connection for inspecting queues from outside the code under test."""
    async with connected(broker.url) as connection:
        yield connection
