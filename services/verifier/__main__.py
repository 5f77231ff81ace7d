"""Entry point: `python -m services.verifier`. Judge domains' DNS; re-check them on a schedule."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

from services.verifier import settings as verifier_settings
from services.verifier.announcer import Announcer
from services.verifier.census import census_forever
from services.verifier.destination_store import DestinationStore
from services.verifier.destinations import dbl_of, start_watch
from services.verifier.handlers import handle_domain_events, utc_now
from services.verifier.reputation.dnspython import DnspythonListResolver
from services.verifier.reputation.engine import ReputationEngine
from services.verifier.reputation.store import ReputationStore
from services.verifier.reputation.watch import ReputationWatch
from services.verifier.schedule import Rechecker
from services.verifier.settings import VerifierSettings
from services.verifier.store import VerificationStore
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import VERIFIER_QUEUE
from shared.broker.publisher import Publisher
from shared.db.migrate import open_migrated
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.metrics import MetricsServer, VerifierMetrics, new_registry
from shared.verification.checks import DomainChecker
from shared.verification.dns import DnsResolver


async def open_verifier(life: Lifecycle, settings: VerifierSettings) -> None:
    """Open the verifier's resources in order; `life` closes them in reverse: the
    consumer finishes the domains it holds, the running recheck batch ends (each up
    to 30 s), the census stops, then the connection, /metrics and the database go."""
    source = event_source("verifier")
    engine = await open_migrated(settings.database, service="verifier",
                                 pool_size=settings.db_pool_size)
    life.on_stop(engine.dispose)
    store = VerificationStore(engine)
    registry = new_registry()
    metrics = VerifierMetrics(registry)
    await life.enter(MetricsServer(registry, settings.metrics_bind))
    resolver = DnsResolver(settings.nameservers, timeout_s=settings.dns_timeout_s)
    checker = DomainChecker(resolver, target=settings.policy.tracking_host,
                            aliases=settings.policy.tracking_host_aliases,
                            ca_identity=settings.policy.caa_identity)
    connection = await connect(settings.broker, name=f"verifier {source}")
    life.on_stop(connection.close, quiet=True)
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
    # Both loops end on their own once `life.stopping` is set.
    census = asyncio.create_task(census_forever(life.stopping, engine, metrics),
                                 name="census")
    life.on_stop(functools.partial(_cancel, census))
    schedule = asyncio.create_task(rechecker.run(life.stopping), name="recheck")
    life.on_stop(functools.partial(_finish, schedule, timeout_s=30))
    reputation = settings.reputation
    dbl = None
    if reputation is not None:
        engine_ = ReputationEngine(
            DnspythonListResolver(reputation.nameservers, timeout_s=reputation.timeout_s),
            reputation.lists, daily_budget=reputation.daily_budget,
            concurrency=reputation.concurrency)
        watch = ReputationWatch(
            store=ReputationStore(engine), engine=engine_, announcer=announcer,
            policy=reputation, clock=utc_now, metrics=metrics.reputation,
            platform_hosts=(settings.policy.tracking_host,
                            *settings.policy.tracking_host_aliases))
        watching = asyncio.create_task(watch.run(life.stopping), name="reputation")
        life.on_stop(functools.partial(_finish, watching, timeout_s=10))
        # The destination watch shares the engine: one cache and one daily budget per list.
        dbl = dbl_of(engine_) if settings.destinations.enabled else None
        if dbl is not None:
            wanted = settings.destinations
            destinations = await start_watch(
                connection=connection, topology=topology, engine=engine_, blocklist=dbl,
                store=DestinationStore(engine), source=source, metrics=metrics.destinations,
                consumer_metrics=metrics.consumer, recheck_s=wanted.recheck_s,
                memory=wanted.memory, prefetch=wanted.prefetch,
                max_attempts=settings.max_attempts)
            life.on_stop(destinations.stop)
    life.on_stop(consumer.stop)
    await consumer.start()
    life.describe(queue=topology.queue(VERIFIER_QUEUE),
                  tracking_host=settings.policy.tracking_host,
                  tracking_host_aliases=list(settings.policy.tracking_host_aliases) or None,
                  nameservers=resolver.description, prefetch=settings.prefetch,
                  reputation_lists=[b.label for b in reputation.lists] if reputation else None,
                  destination_watch=dbl.label if dbl else None,
                  database=settings.database.safe_url, broker=settings.broker.safe_url)


async def _finish(task: asyncio.Task[None], *, timeout_s: float) -> None:
    """Let `task` end by itself within `timeout_s` (it watches `stopping`), else cancel it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await task


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def serve(settings: VerifierSettings, stop: asyncio.Event) -> None:
    await Lifecycle("verifier").run(functools.partial(open_verifier, settings=settings), stop)


def main() -> None:
    service_main("verifier", verifier_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
