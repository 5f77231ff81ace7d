"""Integration fixtures: a plain connection to look at queues from outside the code under test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import create_engine
from shared.settings import BrokerSettings, DatabaseSettings
from tests.support.amqp import connected


@pytest.fixture
async def side(broker: BrokerSettings) -> AsyncIterator[AbstractConnection]:
    """A plain connection for inspecting queues from outside the code under test."""
    async with connected(broker.url) as connection:
        yield connection


@pytest.fixture
async def engine(database: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's PostgreSQL database."""
    engine = create_engine(database)
    yield engine
    await engine.dispose()
