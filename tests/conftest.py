"""Fixtures shared by every tier, and the tier marks.

A test's tier is the directory it lives in (tests/unit, integration, e2e, fault, deploy,
container): `pytest_collection_modifyitems` below marks it so, and `pytest -m e2e` selects
exactly tests/e2e. What each tier may touch is in the README's "Tests" section.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from demo.databases import DatabaseFactory
from shared.broker import topology as broker_topology
from shared.broker.topology import Topology
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.support import environment
from tests.support.amqp import connected

TEST_LINK_KEYS = "k2026:" + "test-signing-secret-0123456789abcdef" + ",old:" + "o" * 40
TEST_CERT_STORE_KEYS = "s2026:" + "test-store-secret-0123456789abcdefgh"
TRACKING_HOST = "click.platform.test"
# Short retry tiers (the `topology` fixture's): a retry round trip takes well under a second.
FAST_DELAYS_MS = (200, 400)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier: the directory under tests/ that holds it, when a
    marker of that name is registered (pyproject.toml), as every tier's is."""
    tiers = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    tests = Path(__file__).parent
    for item in items:
        if tests in item.path.parents:
            tier = item.path.relative_to(tests).parts[0]
            if tier in tiers:
                item.add_marker(tier)


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
        "CERT_STORE_KEYS": TEST_CERT_STORE_KEYS,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "INFO",
        # Off unless a test asks: the default ports are fixed, and tests run several
        # processes of one service at once (tests/e2e/test_metrics.py picks free ports).
        "METRICS_BIND": "off",
        # The reputation watch off unless a test asks (with zones on its own DNS server):
        # the defaults are the real lists, through the system's resolver.
        "REPUTATION_LISTS": "",
    }
    env.update(extra)
    return env
