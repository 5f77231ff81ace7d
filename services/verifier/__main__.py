"""Entry point: `python -m services.verifier`. Judge domains' DNS; re-check them on a schedule."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

import structlog

from services.verifier import settings as verifier_settings
from services.verifier.announcer import Announcer
from services.verifier.census import census_forever
from services.verifier.handlers import handle_domain_events
from services.verifier.schedule import Rechecker
from services.verifier.settings import VerifierSettings
from services.verifier.store import VerificationStore
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import VERIFIER_QUEUE
from shared.broker.publisher import Publisher
from shared.db.migrate import open_migrated
from shared.lifecycle import event_source, service_main
from shared.metrics import MetricsServer, VerifierMetrics, new_registry
from shared.verification.checks import DomainChecker
from shared.verification.dns import DnsResolver

log = structlog.get_logger("services.verifier")


async def serve(settings: VerifierSettings, stop: asyncio.Event) -> None:
    source = event_source("verifier")
    engine = await open_migrated(settings.database, service="verifier",
                                 pool_size=settings.db_pool_size)
    store = VerificationStore(engine)
    registry = new_registry()
    metrics = VerifierMetrics(registry)
    metrics_server = MetricsServer(registry, settings.metrics_bind)
    await metrics_server.start()
    resolver = DnsResolver(settings.nameservers, timeout_s=settings.dns_timeout_s)
    checker = DomainChecker(resolver, target=settings.policy.tracking_host,
                            aliases=settings.policy.tracking_host_aliases,
                            ca_identity=settings.policy.caa_identity)
    connection = await connect(settings.broker, name=f"verifier {source}")
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange,
                                        retry_delays_ms=settings.retry_delays_ms)
    exchange = await broker_topology.declare(channel, topology)
    publisher = Publisher(channel, exchange, source=source)
    announcer = Announcer(publisher)
    consumer = Consumer(
        channel=channel, topology=topology, queue=VERIFIER_QUEUE,
        handler=functools.partial(handle_domain_events, store=store, checker=checker,
                                  announcer=announcer, policy=settings.policy,
                                  metrics=metrics),
        publisher=publisher,
        policy=ConsumePolicy(prefetch=settings.prefetch, max_attempts=settings.max_attempts),
        metrics=metrics.consumer,
    )
    rechecker = Rechecker(store=store, checker=checker, announcer=announcer,
                          policy=settings.policy, poll_s=settings.schedule_poll_s,
                          batch=settings.recheck_batch,
                          concurrency=settings.recheck_concurrency, metrics=metrics)
    await consumer.start()
    schedule = asyncio.create_task(rechecker.run(stop), name="recheck")
    census = asyncio.create_task(census_forever(stop, engine, metrics), name="census")
    log.info("verifier.started", queue=topology.queue(VERIFIER_QUEUE),
             tracking_host=settings.policy.tracking_host,
             tracking_host_aliases=list(settings.policy.tracking_host_aliases) or None,
             nameservers=resolver.description, prefetch=settings.prefetch,
             database=settings.database.safe_url, broker=settings.broker.safe_url)
    await stop.wait()

    log.info("verifier.stopping")
    await consumer.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await schedule
    census.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await census
    with contextlib.suppress(Exception):
        await connection.close()
    await engine.dispose()
    await metrics_server.stop()
    log.info("verifier.stopped")


def main() -> None:
    service_main("verifier", verifier_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
