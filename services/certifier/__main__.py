"""Entry point: `python -m services.certifier`. Certificates for verified domains, and renewals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.certifier import settings as certifier_settings
from services.certifier.certbot import Certbot
from services.certifier.handlers import Policy, handle_events, served_sites
from services.certifier.issuance import Issuer
from services.certifier.nginx import NginxError, NginxSites, local_address
from services.certifier.renewal import RenewalPolicy, renew_forever
from services.certifier.settings import CertifierSettings
from services.certifier.store import CertificateStore
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer, Handler
from shared.broker.names import CERTIFIER_QUEUE, RETRY_DELAYS_MS
from shared.broker.publisher import Publisher
from shared.db.migrate import open_migrated
from shared.events import Event
from shared.lifecycle import event_source, service_main
from shared.metrics import CertifierMetrics, MetricsServer, new_registry

log = structlog.get_logger("services.certifier")


class InFlight:
    """The consumer's handler, keeping the tasks running it: what `stop()` abandons if they
    outlive the drain timeout (cancelling one kills its certbot and leaves its message
    unacked, so the broker delivers it again)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __call__(self, events: Sequence[Event[Any]]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handler(events)
        finally:
            self.tasks.discard(task)


@dataclass
class Running:
    """A started certifier: what `stop()` has to wind down (tests start one in-process)."""

    engine: AsyncEngine
    connection: AbstractRobustConnection
    consumer: Consumer
    handling: InFlight
    renewal: asyncio.Task[None]
    stopping: asyncio.Event
    certbot: Certbot
    sites: NginxSites
    store: CertificateStore
    outcomes: Counter[str]
    drain_timeout_s: float = 60.0

    async def stop(self) -> None:
        """SIGTERM: stop consuming and start no certbot run. The run in progress (an
        event's or a renewal's) may finish within `drain_timeout_s`; events waiting for
        certbot are handed back (`Stopping`) as soon as that run has ended, or at once
        when another process holds the directory. Whatever still runs at the deadline is
        abandoned: certbot is killed and the event stays unacked for the broker to
        deliver again (the handlers are idempotent)."""
        log.info("certifier.stopping", drain_timeout_s=self.drain_timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        self.stopping.set()
        self.certbot.refuse_new_work()
        await self.consumer.stop(timeout_s=self.drain_timeout_s)
        await asyncio.wait({self.renewal}, timeout=max(deadline - loop.time(), 0.0))
        abandoned = [task for task in (*self.handling.tasks, self.renewal) if not task.done()]
        for task in abandoned:
            task.cancel()
        if abandoned:
            log.warning("certifier.abandoned", tasks=len(abandoned),
                        drain_timeout_s=self.drain_timeout_s)
            await asyncio.wait(abandoned, timeout=10)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.renewal
        with contextlib.suppress(Exception):
            await self.connection.close()
        await self.engine.dispose()
        log.info("certifier.stopped", drained=not abandoned, abandoned=len(abandoned),
                 certbot_runs=self.certbot.runs, nginx_reloads=self.sites.reloads,
                 outcomes=dict(self.outcomes))


async def start(settings: CertifierSettings, metrics: CertifierMetrics | None = None) -> Running:
    """Start consuming and renewing; `metrics` is what `serve` exports (tests pass none)."""
    if metrics is None:
        metrics = CertifierMetrics(new_registry(process=False))
    source = event_source("certifier")
    engine = await open_migrated(settings.database, service="certifier", pool_size=2)
    store = CertificateStore(engine)
    certbot = Certbot(
        command=settings.certbot_command, base_dir=settings.certbot_dir,
        server=settings.acme_directory_url, email=settings.acme_email,
        ca_bundle=settings.acme_ca_bundle, challenge_dir=settings.challenge_dir,
        timeout_s=settings.certbot_timeout_s,
    )
    issuer = Issuer(certbot=certbot, store=store, limits=settings.limits)
    nginx = settings.nginx
    sites = NginxSites(
        conf_path=nginx.conf_path, reload_command=nginx.reload_command,
        sites=functools.partial(served_sites, store=store, certbot=certbot),
        https_listen=nginx.https_listen, http_listen=nginx.http_listen,
        upstreams=nginx.upstreams,
        verify_address=local_address(nginx.https_listen) if nginx.verify_tls else None,
    )
    try:  # the file matches the database and the disk from the start
        await sites.sync()
    except NginxError as exc:
        log.error("nginx.sync_failed", error=str(exc))
    policy = Policy(validation_attempts=settings.validation_attempts,
                    validation_retry_s=settings.validation_retry_s,
                    tracking_host=settings.tracking_host)
    rng = random.Random()
    outcomes: Counter[str] = Counter()

    connection = await connect(settings.broker, name=f"certifier {source}")
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange,
                                        retry_delays_ms=settings.retry_delays_ms
                                        or RETRY_DELAYS_MS)
    exchange = await broker_topology.declare(channel, topology)
    publisher = Publisher(channel, exchange, source=source, observe=metrics.published)
    handling = InFlight(functools.partial(
        handle_events, store=store, issuer=issuer, sites=sites, publisher=publisher,
        policy=policy, rng=rng, outcomes=outcomes))
    consumer = Consumer(
        channel=channel, topology=topology, queue=CERTIFIER_QUEUE, handler=handling,
        publisher=publisher,
        policy=ConsumePolicy(prefetch=settings.prefetch, max_attempts=settings.max_attempts),
        metrics=metrics.consumer,
    )
    await consumer.start()
    stopping = asyncio.Event()
    renewal = asyncio.create_task(renew_forever(
        stopping, interval_s=settings.renew_check_s, store=store, issuer=issuer, sites=sites,
        publisher=publisher, policy=policy, rng=rng,
        renewal=RenewalPolicy(retry=timedelta(seconds=settings.renew_retry_s),
                              warning=timedelta(days=settings.expiry_warning_days)),
        metrics=metrics,
    ), name="renewal")
    log.info("certifier.started", queue=topology.queue(CERTIFIER_QUEUE),
             acme_directory=settings.acme_directory_url, certbot_dir=str(settings.certbot_dir),
             challenge_dir=str(settings.challenge_dir), nginx_conf=str(nginx.conf_path),
             nginx_reload=" ".join(nginx.reload_command) or None,
             database=settings.database.safe_url, broker=settings.broker.safe_url)
    return Running(engine=engine, connection=connection, consumer=consumer, handling=handling,
                   renewal=renewal, stopping=stopping, certbot=certbot, sites=sites,
                   store=store, outcomes=outcomes, drain_timeout_s=settings.drain_timeout_s)


async def serve(settings: CertifierSettings, stop: asyncio.Event) -> None:
    registry = new_registry()
    metrics_server = MetricsServer(registry, settings.metrics_bind)
    await metrics_server.start()
    running = await start(settings, CertifierMetrics(registry))
    await stop.wait()
    await running.stop()
    await metrics_server.stop()


def main() -> None:
    service_main("certifier", certifier_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
