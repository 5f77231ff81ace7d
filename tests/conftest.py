"""Fixtures shared by every tier.

Tiers (what each may touch):
- tests/unit: pure logic only; no network, no processes, no files outside tmp_path.
- tests/integration: the real RabbitMQ and PostgreSQL, each test in its own exchange
  namespace and its own database; code is called in-process.
- tests/e2e: the real service processes, started by the test, over real HTTP.
- tests/deploy: deployment artefacts (compose.yaml, Dockerfile, nginx config) checked
  against the code, and nginx's reload hand-shake run for real.
- tests/container: the images built (scripts/images) and compose.yaml run on a real
  Docker engine, host-networked, against the real RabbitMQ and PostgreSQL.
Fault tests (marked `fault`) cut dependencies through tests/support/proxy.py, never
by stopping the shared servers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from demo.databases import DatabaseFactory
from shared.broker import topology as broker_topology
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.support import environment

TEST_LINK_KEYS = "k2026:" + "test-signing-secret-0123456789abcdef" + ",old:" + "o" * 40
TRACKING_HOST = "click.platform.test"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return environment.amqp_url()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return environment.admin_database_url()


@pytest.fixture(scope="session")
def database_factory(pg_admin_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_url)
    asyncio.run(factory.prepare())
    yield factory
    asyncio.run(factory.close())


@pytest.fixture
def database(database_factory: DatabaseFactory) -> Iterator[DatabaseSettings]:
    """A fresh PostgreSQL database at the newest migration, dropped afterwards."""
    settings = asyncio.run(database_factory.create())
    yield settings
    asyncio.run(database_factory.drop(settings))


@pytest.fixture
def broker(amqp_url: str) -> Iterator[BrokerSettings]:
    """A namespace of our own on the shared broker: exchange and queues, deleted afterwards."""
    settings = BrokerSettings(url=amqp_url, exchange=f"test-{uuid.uuid4().hex[:10]}")
    yield settings

    async def _delete() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await broker_topology.delete(channel, broker_topology.Topology(settings.exchange))

    asyncio.run(_delete())


@pytest.fixture
def link_keys() -> tuple[LinkKey, ...]:
    from shared.settings import parse_link_keys

    return parse_link_keys(TEST_LINK_KEYS)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    environment.stop_containers()


def service_env(broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
                **extra: str) -> dict[str, str]:
    """The environment the service processes get in end-to-end tests."""
    env = {
        "AMQP_URL": broker.url,
        "AMQP_EXCHANGE": broker.exchange,
        "DATABASE_URL": database.url,
        "TRACKING_HOST": TRACKING_HOST,
        "LINK_KEYS": TEST_LINK_KEYS,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "INFO",
        # Off unless a test asks: the default ports are fixed, and tests run several
        # processes of one service at once (tests/e2e/test_metrics.py picks free ports).
        "METRICS_BIND": "off",
    }
    env.update(extra)
    return env
