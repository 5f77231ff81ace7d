"""Entry point: `python -m services.certifier`. Certificates for verified domains, and renewals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import structlog

from services.certifier import settings as certifier_settings
from services.certifier.ari import AriClient
from services.certifier.certbot import Certbot
from services.certifier.challenges import ChallengeRelay
from services.certifier.handlers import Policy, handle_events
from services.certifier.issuance import Issuer
from services.certifier.renewal import RenewalPolicy, renew_forever
from services.certifier.settings import CertifierSettings
from services.certifier.store import CertificateStore
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import CANCEL_GRACE_S, ConsumePolicy, Consumer
from shared.broker.names import CERTIFIER_QUEUE, RETRY_DELAYS_MS
from shared.broker.publisher import Publisher
from shared.certificates import AcmeAccounts, CertStore, ChallengeAnswers, Keyring
from shared.db.migrate import open_migrated
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.metrics import CertifierMetrics, MetricsServer, new_registry

log = structlog.get_logger("services.certifier")


@dataclass
class Running:
    """A started certifier (tests start one in-process with `start()`)."""

    lifecycle: Lifecycle
    consumer: Consumer
    certbot: Certbot
    store: CertificateStore
    issuer: Issuer
    outcomes: Counter[str]

    async def stop(self) -> None:
        """SIGTERM: see `drain`; then the connection and the database are closed."""
        await self.lifecycle.stop()


async def drain(life: Lifecycle, *, consumer: Consumer, renewal: asyncio.Task[None],
                certbot: Certbot) -> None:
    """Stop consuming and start no certbot run. The run in progress (an event's or a
    renewal's) may finish within the drain timeout; events waiting for certbot are
    handed back (`Stopping`) as soon as that run has ended, or at once when another
    process holds the directory. Whatever still runs at the deadline is abandoned:
    certbot is killed and the event stays unacked for the broker to deliver again (the
    handlers are idempotent)."""
    certbot.refuse_new_work()  # the renewal loop saw `life.stopping` already

    async def renewal_or_deadline() -> bool:
        """Wait for the renewal pass in progress; False if it had to be cancelled."""
        await asyncio.wait({renewal}, timeout=life.remaining_s())
        if renewal.done():
            return True
        renewal.cancel()
        await asyncio.wait({renewal}, timeout=CANCEL_GRACE_S)
        return False

    handlers, renewal_finished = await asyncio.gather(
        consumer.stop(timeout_s=life.remaining_s(), cancel_after=True),
        renewal_or_deadline())
    abandoned = handlers + int(not renewal_finished)
    if abandoned:
        log.warning("certifier.abandoned", tasks=abandoned,
                    drain_timeout_s=life.drain_timeout_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await renewal
    life.note(drained=not abandoned, abandoned=abandoned)


async def open_certifier(life: Lifecycle, settings: CertifierSettings,
                         metrics: CertifierMetrics | None = None) -> Running:
    """Open the certifier's resources in order (`life` closes them in reverse);
    `metrics` is what `serve` exports (tests pass none)."""
    if metrics is None:
        metrics = CertifierMetrics(new_registry(process=False))
    source = event_source("certifier")
    engine = await open_migrated(settings.database, service="certifier", pool_size=2)
    life.on_stop(engine.dispose)
    store = CertificateStore(engine)
    keyring = Keyring(settings.store_keys)
    vault = CertStore(engine, keyring)
    relay = ChallengeRelay(ChallengeAnswers(engine))
    await relay.start()
    life.on_stop(relay.close)
    certbot = Certbot(
        command=settings.certbot_command, base_dir=settings.certbot_dir,
        server=settings.acme_directory_url, email=settings.acme_email,
        ca_bundle=settings.acme_ca_bundle, challenge_dir=settings.challenge_dir,
        timeout_s=settings.certbot_timeout_s, profile=settings.acme_profile,
        hook_socket=relay.path,
    )
    issuer = Issuer(certbot=certbot, store=store, vault=vault,
                    accounts=AcmeAccounts(engine, keyring), limits=settings.limits,
                    ari=AriClient(settings.acme_directory_url, ca_bundle=settings.acme_ca_bundle))
    policy = Policy(validation_attempts=settings.validation_attempts,
                    validation_retry_s=settings.validation_retry_s,
                    tracking_host=settings.tracking_host)
    rng = random.Random()
    outcomes: Counter[str] = Counter()

    connection = await connect(settings.broker, name=f"certifier {source}")
    life.on_stop(connection.close, quiet=True)
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange,
                                        retry_delays_ms=settings.retry_delays_ms
                                        or RETRY_DELAYS_MS)
    exchange = await broker_topology.declare(channel, topology)
    publisher = Publisher(channel, exchange, source=source, observe=metrics.published)
    consumer = Consumer(
        channel=channel, topology=topology, queue=CERTIFIER_QUEUE,
        handler=functools.partial(
            handle_events, store=store, issuer=issuer, publisher=publisher,
            policy=policy, rng=rng, outcomes=outcomes),
        publisher=publisher,
        policy=ConsumePolicy(prefetch=settings.prefetch, max_attempts=settings.max_attempts),
        metrics=metrics.consumer,
    )
    renewal = asyncio.create_task(renew_forever(
        life.stopping, interval_s=settings.renew_check_s, store=store, issuer=issuer,
        publisher=publisher, policy=policy, rng=rng,
        renewal=RenewalPolicy(retry=timedelta(seconds=settings.renew_retry_s),
                              warning=timedelta(days=settings.expiry_warning_days)),
        metrics=metrics,
    ), name="renewal")
    life.on_stop(functools.partial(drain, life, consumer=consumer, renewal=renewal,
                                   certbot=certbot))
    await consumer.start()
    life.describe(queue=topology.queue(CERTIFIER_QUEUE),
                  acme_directory=settings.acme_directory_url,
                  certbot_dir=str(settings.certbot_dir),
                  challenge_dir=str(settings.challenge_dir) if settings.challenge_dir else None,
                  store_key=keyring.current_kid, acme_profile=settings.acme_profile,
                  database=settings.database.safe_url, broker=settings.broker.safe_url)
    life.summarize(lambda: {"certbot_runs": certbot.runs, "outcomes": dict(outcomes)})
    return Running(lifecycle=life, consumer=consumer, certbot=certbot,
                   store=store, issuer=issuer, outcomes=outcomes)


def new_lifecycle(settings: CertifierSettings) -> Lifecycle:
    return Lifecycle("certifier", drain_timeout_s=settings.drain_timeout_s)


async def start(settings: CertifierSettings, metrics: CertifierMetrics | None = None) -> Running:
    """A certifier started in this process; `await running.stop()` is its SIGTERM."""
    return await new_lifecycle(settings).start(
        functools.partial(open_certifier, settings=settings, metrics=metrics))


async def serve(settings: CertifierSettings, stop: asyncio.Event) -> None:
    async def open_served(life: Lifecycle) -> Running:
        registry = new_registry()
        await life.enter(MetricsServer(registry, settings.metrics_bind))
        return await open_certifier(life, settings, CertifierMetrics(registry))

    await new_lifecycle(settings).run(open_served, stop)


def main() -> None:
    service_main("certifier", certifier_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
