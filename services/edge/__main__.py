"""Entry point: `python -m services.edge`, one per edge host beside its nginx (EDGE_ID)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from dataclasses import dataclass

import structlog

from services.edge import settings as edge_settings
from services.edge.database import EdgeRecords
from services.edge.handlers import RETRY_S, Edge, handle_events, summary
from services.edge.nginx import CertificateFiles, ensure_include, render_include
from services.edge.settings import EdgeSettings
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.publisher import Publisher
from shared.certificates import CertStore, Keyring
from shared.db.migrate import open_migrated
from shared.handshake import local_address
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.metrics import EdgeMetrics, MetricsServer, new_registry

log = structlog.get_logger("services.edge")

DRAIN_TIMEOUT_S = 10.0  # an install is a file write and a handshake: quick to finish


@dataclass
class Running:
    """A started edge agent (tests start one in-process with `start()`)."""

    lifecycle: Lifecycle
    edge: Edge
    consumer: Consumer

    async def stop(self) -> None:
        await self.lifecycle.stop()


async def reconcile_forever(edge: Edge, stopping: asyncio.Event, interval_s: float) -> None:
    """`edge.reconcile()` every `interval_s` (within `RETRY_S` while a domain failed)
    until stopping; a failed pass is logged and the next one tries again."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(interval_s, RETRY_S) if edge.failed else interval_s):
                await stopping.wait()
        if stopping.is_set():
            return
        try:
            await edge.reconcile()
        except Exception as exc:  # the database or nginx may be back next time
            log.warning("edge.reconcile_failed", error=f"{type(exc).__name__}: {exc}")


async def open_edge(life: Lifecycle, settings: EdgeSettings,
                    metrics: EdgeMetrics | None = None) -> Running:
    """Open the agent's resources in order (`life` closes them in reverse): nginx's
    include, the database, the broker; then a full sync before following events."""
    if metrics is None:
        metrics = EdgeMetrics(new_registry(process=False), settings.edge_id)
    files = CertificateFiles(settings.cert_dir, group=settings.cert_group)
    files.prepare()
    await ensure_include(settings.conf_path, render_include(
        cert_dir=settings.cert_dir.resolve(), https_listen=settings.https_listen,
        http_listen=settings.http_listen, upstreams=settings.upstreams),
        settings.reload_command)
    engine = await open_migrated(settings.database, service="edge", pool_size=2)
    life.on_stop(engine.dispose)
    store = CertStore(engine, Keyring(settings.store_keys))

    connection = await connect(settings.broker, name=f"edge {settings.edge_id}")
    life.on_stop(connection.close, quiet=True)
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange)
    exchange = await broker_topology.declare(channel, topology)
    queue = await broker_topology.declare_edge(channel, exchange, topology, settings.edge_id)
    publisher = Publisher(channel, exchange, source=event_source(f"edge/{settings.edge_id}"))
    edge = Edge(edge_id=settings.edge_id, store=store,
                records=EdgeRecords(engine, settings.edge_id), files=files,
                publisher=publisher, metrics=metrics,
                verify_address=local_address(settings.https_listen)
                if settings.verify_tls else None)
    edge.load()
    await edge.reconcile()  # everything the store serves, before any event
    consumer = Consumer(channel=channel, topology=topology, queue=queue,
                        handler=functools.partial(handle_events, edge=edge),
                        publisher=publisher, policy=ConsumePolicy(prefetch=32),
                        metrics=metrics.consumer)
    reconciling = asyncio.create_task(
        reconcile_forever(edge, life.stopping, settings.reconcile_s), name="reconcile")

    async def drain() -> None:
        await consumer.stop(timeout_s=DRAIN_TIMEOUT_S, cancel_after=True)
        reconciling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciling

    life.on_stop(drain)
    await consumer.start()
    life.describe(edge_id=settings.edge_id, queue=topology.queue(queue),
                  cert_dir=str(settings.cert_dir), nginx_conf=str(settings.conf_path),
                  served=len(edge.installed), database=settings.database.safe_url,
                  broker=settings.broker.safe_url)
    life.summarize(lambda: summary(edge))
    return Running(lifecycle=life, edge=edge, consumer=consumer)


def new_lifecycle() -> Lifecycle:
    return Lifecycle("edge", drain_timeout_s=DRAIN_TIMEOUT_S)


async def start(settings: EdgeSettings, metrics: EdgeMetrics | None = None) -> Running:
    """An edge agent started in this process; `await running.stop()` is its SIGTERM."""
    return await new_lifecycle().start(
        functools.partial(open_edge, settings=settings, metrics=metrics))


async def serve(settings: EdgeSettings, stop: asyncio.Event) -> None:
    async def open_served(life: Lifecycle) -> Running:
        registry = new_registry()
        await life.enter(MetricsServer(registry, settings.metrics_bind))
        return await open_edge(life, settings, EdgeMetrics(registry, settings.edge_id))

    await new_lifecycle().run(open_served, stop)


def main() -> None:
    service_main("edge", edge_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
