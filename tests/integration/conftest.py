"""Integration fixtures: a plain connection to look at queues from outside the code under test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractConnection

from shared.settings import BrokerSettings
from tests.support.amqp import connected


@pytest.fixture
async def side(broker: BrokerSettings) -> AsyncIterator[AbstractConnection]:
    """A plain connection for inspecting queues from outside the code under test."""
    async with connected(broker.url) as connection:
        yield connection
