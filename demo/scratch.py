"""The demo's own corner of the shared servers: a PostgreSQL database and a broker
namespace (an exchange and the queues named after it), made for one run and removed.

The demo runs beside whatever else uses the local RabbitMQ and PostgreSQL (a
`scripts/run` pipeline, a test run), so it never touches their names: the exchange is
`demo-<hex>` (every queue starts with it) and the database `td_demo_<hex>`. Interrupted
runs that could not clean up are removed by `scripts/clean-test-namespaces`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import aio_pika
import asyncpg
from sqlalchemy.engine import make_url

from shared.broker import topology as broker_topology
from shared.broker.names import PLATFORM_QUEUE
from shared.settings import DatabaseSettings, normalise_database_url

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_ADMIN_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EXCHANGE_PREFIX = "demo-"
DATABASE_PREFIX = "td_demo_"


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """`url` (any driver spelling) as a DSN asyncpg takes, optionally on another database."""
    parsed = make_url(normalise_database_url(url)).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def settings_for(admin_url: str, database: str) -> DatabaseSettings:
    """The services' DATABASE_URL for `database` on the server `admin_url` points at."""
    parsed = make_url(normalise_database_url(admin_url)).set(database=database)
    return DatabaseSettings(url=parsed.render_as_string(hide_password=False))


async def fetch(settings: DatabaseSettings, query: str, *args: object) -> list[asyncpg.Record]:
    """Run one query on its own connection (for looking at the services' rows)."""
    connection = await asyncpg.connect(asyncpg_dsn(settings.url))
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


async def admin_execute(admin_url: str, statement: str) -> None:
    """One statement on the admin database (CREATE / DROP DATABASE cannot run in a
    transaction, so each gets a connection of its own)."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def delete_namespace(amqp_url: str, exchange: str) -> int:
    """Delete every queue the services declare under `exchange`, then the exchange itself
    (deleting what does not exist is no error); returns how many queue names it deleted."""
    topology = broker_topology.Topology(exchange)
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        await broker_topology.delete(await connection.channel(), topology)
    return len(topology.queue_names())


async def take_messages(amqp_url: str, queue: str) -> list[tuple[bytes, str | None]]:
    """Every message ready in `queue`, taken off it (basic.get, acknowledged): (body,
    content type) each. The demo plays the platform, which consumes `<exchange>.platform`."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    taken: list[tuple[bytes, str | None]] = []
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        while (message := await source.get(no_ack=True, fail=False, timeout=5)) is not None:
            taken.append((message.body, message.content_type))
    return taken


@dataclass(frozen=True)
class Scratch:
    """The names of one run: its exchange and its database, on the given servers."""

    amqp_url: str
    admin_database_url: str
    suffix: str

    @classmethod
    def new(cls, amqp_url: str, admin_database_url: str) -> Scratch:
        """Fresh names (8 random hex digits), not created yet."""
        return cls(amqp_url, admin_database_url, uuid.uuid4().hex[:8])

    @property
    def exchange(self) -> str:
        """`AMQP_EXCHANGE` of the run (its queues are named after it)."""
        return f"{EXCHANGE_PREFIX}{self.suffix}"

    @property
    def database_name(self) -> str:
        """The run's PostgreSQL database."""
        return f"{DATABASE_PREFIX}{self.suffix}"

    @property
    def database(self) -> DatabaseSettings:
        """`DATABASE_URL` of the run."""
        return settings_for(self.admin_database_url, self.database_name)

    def create_database(self) -> None:
        """Create the (empty) database; migrating it is `trackctl db upgrade`'s job."""
        asyncio.run(admin_execute(self.admin_database_url,
                                  f'CREATE DATABASE "{self.database_name}"'))

    def drop_database(self) -> None:
        """Drop the database, closing the connections still open on it."""
        asyncio.run(admin_execute(self.admin_database_url,
                                  f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'))

    def take_platform_messages(self) -> list[tuple[bytes, str | None]]:
        """What the services announced to the platform since the last call."""
        queue = broker_topology.Topology(self.exchange).queue(PLATFORM_QUEUE)
        return asyncio.run(take_messages(self.amqp_url, queue))

    def delete_namespace(self) -> int:
        """Delete the exchange and its queues (bounded: a stalled broker must not hang the
        clean-up); returns how many queue names were deleted."""
        return asyncio.run(asyncio.wait_for(delete_namespace(self.amqp_url, self.exchange), 60))
