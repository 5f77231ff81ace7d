"""The shared servers a benchmark uses, its own corner of them, and the click rows there.

RabbitMQ at `AMQP_URL` (else `TEST_AMQP_URL`), PostgreSQL through the admin URL
`TEST_DATABASE_URL` (it must be allowed to create databases); both default to the local
servers. Each run gets databases `bench_<tag>_<hex>` and exchanges `bench-<tag>-<hex>`
(the services name their queues after the exchange), removed afterwards;
`scripts/clean-test-namespaces` removes what an interrupted run left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import aio_pika
import asyncpg
from sqlalchemy.engine import make_url

from bench.progress import say
from demo.databases import fetch
from demo.scratch import (
    DEFAULT_ADMIN_DATABASE_URL,
    DEFAULT_AMQP_URL,
    admin_execute,
    asyncpg_dsn,
    delete_namespace,
    settings_for,
)
from shared.db.migrate import upgrade
from shared.settings import DatabaseSettings


@dataclass(frozen=True)
class Servers:
    """Where RabbitMQ and PostgreSQL (an admin URL) are."""

    amqp_url: str
    admin_database_url: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Servers:
        return cls(
            amqp_url=(environ.get("AMQP_URL") or environ.get("TEST_AMQP_URL")
                      or DEFAULT_AMQP_URL),
            admin_database_url=environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_DATABASE_URL)

    def preflight(self) -> None:
        """Fail in seconds, not minutes, when PostgreSQL or RabbitMQ does not answer."""
        async def check() -> None:
            connection = await asyncpg.connect(asyncpg_dsn(self.admin_database_url),
                                               timeout=10)
            await connection.close()
            amqp = await aio_pika.connect(self.amqp_url, timeout=10)
            await amqp.close()

        try:
            asyncio.run(asyncio.wait_for(check(), timeout=30))
        except Exception as exc:
            sys.exit(f"bench: PostgreSQL or RabbitMQ ({self.amqp_url.split('@')[-1]}) does "
                     f"not answer: {type(exc).__name__}: {exc}")


def dsn(database: DatabaseSettings) -> str:
    """The database's URL as an operator writes it (`postgresql://`): what the bench gives
    the services and the baselines, and shows in its commands."""
    return asyncpg_dsn(database.url)


def database_name(database: DatabaseSettings) -> str:
    return make_url(database.url).database or ""


@contextlib.contextmanager
def fresh_database(servers: Servers, tag: str) -> Iterator[DatabaseSettings]:
    """A new database at the newest migration, dropped (connections and all) afterwards."""
    name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(servers.admin_database_url, f'CREATE DATABASE "{name}"'))
    try:
        database = settings_for(servers.admin_database_url, name)
        asyncio.run(upgrade(database))
        yield database
    finally:
        asyncio.run(admin_execute(servers.admin_database_url,
                                  f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def remove_namespace(servers: Servers, exchange: str) -> None:
    """Delete the exchange and its queues, bounded in time; a failure is said, not raised
    (it must not cost the figures of the run that is ending)."""
    try:
        await asyncio.wait_for(delete_namespace(servers.amqp_url, exchange), timeout=60)
    except Exception as exc:
        say(f"  WARNING: could not delete the AMQP namespace {exchange!r} "
            f"({type(exc).__name__}: {exc}); scripts/clean-test-namespaces removes it")


@contextlib.contextmanager
def fresh_namespace(servers: Servers, tag: str) -> Iterator[str]:
    """A new `AMQP_EXCHANGE` name, its exchange and queues deleted afterwards."""
    exchange = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield exchange
    finally:
        asyncio.run(remove_namespace(servers, exchange))


def count_rows(database: DatabaseSettings) -> int:
    """Rows in `tracking_logs`."""
    rows = asyncio.run(fetch(database, "SELECT count(*) AS n FROM tracking_logs"))
    return rows[0]["n"]


def wait_rows(database: DatabaseSettings, target: int, timeout_s: float = 60.0,
              quiet_s: float = 0.6) -> tuple[int, float | None]:
    """Poll until at least `target` rows and no change for `quiet_s`.
    Returns (rows, seconds until `target` was first reached, or None)."""
    t0 = time.monotonic()
    reached: float | None = None
    last, last_change = -1, t0

    async def poll() -> tuple[int, float | None]:
        nonlocal reached, last, last_change
        connection = await asyncpg.connect(dsn(database))
        try:
            while True:
                rows = await connection.fetchval("SELECT count(*) FROM tracking_logs")
                now = time.monotonic()
                if rows != last:
                    last, last_change = rows, now
                if reached is None and rows >= target:
                    reached = now - t0
                if reached is not None and now - last_change >= quiet_s:
                    return rows, reached
                if now - t0 > timeout_s:
                    return rows, reached
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    return asyncio.run(poll())
