"""Entry point: `python -m services.logger`. Consume clicks, write rows, ack after commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

import structlog

from services.logger import settings as logger_settings
from services.logger.batcher import BatchWriter
from services.logger.database import click_store
from services.logger.handlers import record_clicks
from services.logger.settings import LoggerSettings
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.db.migrate import open_migrated
from shared.lifecycle import event_source, service_main
from shared.metrics import LoggerMetrics, MetricsServer, new_registry

log = structlog.get_logger("services.logger")


async def serve(settings: LoggerSettings, stop: asyncio.Event) -> None:
    source = event_source("logger")
    # No pre-ping: the click store invalidates a connection that failed (database.py),
    # and a ping per commit was about a tenth of the logger's CPU.
    engine = await open_migrated(settings.database, service="logger", pool_size=2,
                                 pre_ping=False)
    registry = new_registry()
    metrics = LoggerMetrics(registry)
    writer = BatchWriter(click_store(engine), max_rows=settings.batch_rows,
                         flush_s=settings.flush_ms / 1000,
                         max_backoff_s=settings.max_backoff_s, metrics=metrics)
    metrics.watch(pending_rows=lambda: writer.pending_rows)
    metrics_server = MetricsServer(registry, settings.metrics_bind)
    await metrics_server.start()
    writer.start()
    connection = await connect(settings.broker, name=f"logger {source}")
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange)
    exchange = await broker_topology.declare(channel, topology)
    consumer = Consumer(
        channel=channel, topology=topology, queue=LOGGER_QUEUE,
        handler=functools.partial(record_clicks, writer=writer),
        publisher=Publisher(channel, exchange, source=source),
        policy=ConsumePolicy(prefetch=settings.prefetch), metrics=metrics.consumer,
    )
    await consumer.start()
    log.info("logger.started", queue=topology.queue(LOGGER_QUEUE),
             database=settings.database.safe_url, broker=settings.broker.safe_url)
    await stop.wait()

    log.info("logger.stopping")
    await consumer.stop()
    await writer.stop()
    with contextlib.suppress(Exception):
        await connection.close()
    await engine.dispose()
    await metrics_server.stop()
    log.info("logger.stopped", committed=writer.committed)


def main() -> None:
    service_main("logger", logger_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
