"""Entry point: `python -m services.logger`. Consume clicks, write rows, ack after commit."""

from __future__ import annotations

import asyncio
import functools
import os

from services.logger import settings as logger_settings
from services.logger.batcher import BatchWriter
from services.logger.database import click_store
from services.logger.handlers import record_clicks, sweep_forever
from services.logger.partitions import PartitionKeeper
from services.logger.settings import LoggerSettings
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.db.migrate import open_migrated
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.metrics import LoggerMetrics, MetricsServer, new_registry


async def open_logger(life: Lifecycle, settings: LoggerSettings) -> None:
    """Open the logger's resources in order; `life` closes them in reverse: the consumer
    stops taking messages, the writer commits what it holds (and its messages are acked
    on the still-open channel), then the connection, /metrics and the database go."""
    source = event_source("logger")
    # No pre-ping: the click store invalidates a connection that failed (database.py),
    # and a ping per commit was about a tenth of the logger's CPU.
    engine = await open_migrated(settings.database, service="logger", pool_size=2,
                                 pre_ping=False)
    life.on_stop(engine.dispose)
    partitions = PartitionKeeper(engine, retention_days=settings.retention_days)
    await partitions.start()
    life.on_stop(partitions.stop)
    registry = new_registry()
    metrics = LoggerMetrics(registry)
    store = click_store(engine)
    writer = BatchWriter(store, max_rows=settings.batch_rows,
                         flush_s=settings.flush_ms / 1000,
                         max_backoff_s=settings.max_backoff_s, metrics=metrics)
    metrics.watch(pending_rows=lambda: writer.pending_rows)
    await life.enter(MetricsServer(registry, settings.metrics_bind))
    connection = await connect(settings.broker, name=f"logger {source}")
    life.on_stop(connection.close, quiet=True)
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange)
    exchange = await broker_topology.declare(channel, topology)
    writer.start()
    life.on_stop(writer.stop)
    consumer = Consumer(
        channel=channel, topology=topology, queue=LOGGER_QUEUE,
        handler=functools.partial(record_clicks, writer=writer, store=store),
        publisher=Publisher(channel, exchange, source=source),
        policy=ConsumePolicy(prefetch=settings.prefetch), metrics=metrics.consumer,
    )
    life.on_stop(consumer.stop)
    sweeper = asyncio.create_task(sweep_forever(store), name="classification-sweep")
    life.on_stop(sweeper.cancel)
    await consumer.start()
    life.describe(queue=topology.queue(LOGGER_QUEUE), database=settings.database.safe_url,
                  broker=settings.broker.safe_url)
    life.summarize(lambda: {"committed": writer.committed})


async def serve(settings: LoggerSettings, stop: asyncio.Event) -> None:
    await Lifecycle("logger").run(functools.partial(open_logger, settings=settings), stop)


def main() -> None:
    service_main("logger", logger_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
