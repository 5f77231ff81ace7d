"""Opening the database and the broker for one command, with one clear error when they fail.

trackctl never declares the broker topology: the services declare it when they
start. A mistyped `AMQP_EXCHANGE` must be an error ("no such exchange"), not a new
namespace where a published event waits for a consumer that never comes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aio_pika
import sqlalchemy.exc
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker.topology import Topology
from shared.db.engine import create_engine
from shared.settings import BrokerSettings, DatabaseSettings
from trackctl.output import CliError
from trackctl.settings import reader

CONNECT_TIMEOUT_S = 10.0


def source() -> str:
    """The CloudEvents `source` of what an operator publishes: who, where."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"/trackctl/{user}@{socket.gethostname()}/{os.getpid()}"


@asynccontextmanager
async def database(environ: Mapping[str, str]) -> AsyncIterator[AsyncEngine]:
    """An engine on DATABASE_URL; connection and schema problems become `CliError`."""
    settings = DatabaseSettings.read(reader(environ))
    engine = create_engine(settings, pool_size=1)
    try:
        yield engine
    except (OSError, TimeoutError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise CliError(database_problem(settings, exc)) from None
    finally:
        await engine.dispose()


def database_problem(settings: DatabaseSettings, exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300] or type(exc).__name__
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return (f"the database at {settings.safe_url} has no tracking-domains schema ({text}); "
                "check DATABASE_URL, or run `trackctl db upgrade`")
    return f"cannot query the database at {settings.safe_url}: {text}"


@asynccontextmanager
async def broker(environ: Mapping[str, str]) -> AsyncIterator[
        tuple[BrokerSettings, AbstractConnection, AbstractChannel]]:
    """A plain (not reconnecting) connection and a channel with publisher confirms."""
    settings = BrokerSettings.read(reader(environ))
    try:
        connection = await aio_pika.connect(
            settings.url, timeout=CONNECT_TIMEOUT_S,
            client_properties={"connection_name": f"trackctl {source()}"})
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise CliError(f"cannot reach RabbitMQ at {settings.safe_url}: "
                       f"{str(exc) or type(exc).__name__}") from None
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        yield settings, connection, channel
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing to do
            await connection.close()


async def existing_exchange(connection: AbstractConnection, channel: AbstractChannel,
                            settings: BrokerSettings) -> AbstractExchange:
    """The deployment's exchange, which must exist already (passive declare)."""
    probe = await connection.channel()
    try:
        await probe.get_exchange(settings.exchange, ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise CliError(
            f"the exchange {settings.exchange!r} does not exist on {settings.safe_url}: check "
            "AMQP_EXCHANGE (the services declare it when they start)") from None
    finally:
        if not probe.is_closed:
            await probe.close()
    return await channel.get_exchange(settings.exchange, ensure=False)


async def existing_queue(connection: AbstractConnection, channel: AbstractChannel,
                         name: str) -> tuple[AbstractQueue, int]:
    """(queue, ready message count) of a queue that must exist (passive declare)."""
    probe = await connection.channel()
    try:
        declared = await probe.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise CliError(f"the queue {name!r} does not exist: check AMQP_EXCHANGE (the services "
                       "declare their queues when they start)") from None
    finally:
        if not probe.is_closed:
            await probe.close()
    # DeclareOk always carries the count; pamqp types it optional, as for any frame field.
    count = declared.declaration_result.message_count or 0
    return await channel.get_queue(name, ensure=False), count


def topology(settings: BrokerSettings) -> Topology:
    return Topology(settings.exchange)
