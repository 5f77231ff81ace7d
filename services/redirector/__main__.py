"""Entry point: `python -m services.redirector`. Builds the dependencies, serves, drains."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from services.redirector import settings as redirector_settings
from services.redirector.active_domains import DomainDirectory, load_active, refresh_forever
from services.redirector.bots import ClickReasons, ScannerNetworks, ScannerNetworksError
from services.redirector.caddy_ask import CaddyAsk
from services.redirector.clients import ClientAddress
from services.redirector.forwarder import Forwarder
from services.redirector.handlers import CHALLENGE_LOOKUPS, Redirector, build_server
from services.redirector.settings import RedirectorSettings
from services.redirector.spool import Spool, SpoolError, adopt_orphans_forever
from shared.bot_verdict import Verdict
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.publisher import Publisher
from shared.certificates import ChallengeAnswers
from shared.db.engine import create_engine
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.links import LinkSigner
from shared.metrics import MetricsServer, RedirectorMetrics, new_registry

log = structlog.get_logger("services.redirector")


async def link_broker(settings: RedirectorSettings, forwarder: Forwarder, source: str,
                      held: list[AbstractRobustConnection]) -> None:
    """Connect (waiting as long as it takes), declare topology, give the forwarder a publisher."""
    connection = await connect(settings.broker, name=f"redirector {source}")
    held.append(connection)
    channel = await open_channel(connection)
    exchange = await broker_topology.declare(
        channel, broker_topology.Topology(settings.broker.exchange))
    publisher = Publisher(channel, exchange, source=source)

    async def publish(routing_key: str, body: bytes) -> None:
        await publisher.publish(routing_key, body, batch=True)

    connection.close_callbacks.add(lambda *_: setattr(forwarder, "connected", False))
    connection.reconnect_callbacks.add(lambda *_: setattr(forwarder, "connected", True))
    forwarder.attach(publish)
    log.info("broker.connected", url=settings.broker.safe_url)


async def open_redirector(life: Lifecycle, settings: RedirectorSettings) -> None:
    """Open the redirector's resources in order; `life` closes them in reverse: stop
    serving (HTTP, then the spool drained for what is left of DRAIN_TIMEOUT_S, the
    background tasks and the broker link), then the database, /metrics and, last, the
    spool (synced: what was not published stays for next time). The broker is not
    waited for: clicks are spooled until it answers."""
    source = event_source("redirector")
    try:
        scanner_networks = ScannerNetworks.from_file(settings.scanner_networks_file)
    except ScannerNetworksError as exc:
        raise SystemExit(f"redirector: SCANNER_NETWORKS_FILE {exc}") from None
    spool = Spool(settings.spool_dir, defer_unlinks=True)
    try:
        slot = spool.open()
    except (OSError, SpoolError) as exc:
        # One line an operator can act on (a missing mount, permissions, a full disk).
        raise SystemExit(f"redirector: SPOOL_DIR {settings.spool_dir} cannot be used: "
                         f"{exc}") from None
    life.on_stop(spool.close)
    registry = new_registry()
    metrics = RedirectorMetrics(registry)
    forwarder = Forwarder(spool, batch_size=settings.batch_size,
                          linger_s=settings.linger_ms / 1000, metrics=metrics)
    metrics.watch(backlog_bytes=spool.backlog_bytes, spool_clicks=spool.unconfirmed_lines,
                  connected=lambda: float(forwarder.connected))
    await life.enter(MetricsServer(registry, settings.metrics_bind))
    directory = DomainDirectory(settings.tracking_host, settings.tracking_host_aliases)
    engine = create_engine(settings.database, pool_size=1)
    life.on_stop(engine.dispose)
    # HTTP-01 answers on a pool of their own: a slow challenge lookup never holds up the
    # refresh of active domains (clicks touch no database at all).
    challenge_engine = create_engine(settings.database, pool_size=CHALLENGE_LOOKUPS)
    life.on_stop(challenge_engine.dispose)
    await life.enter(CaddyAsk(challenge_engine, settings.caddy_ask_bind))
    try:
        async with asyncio.timeout(5):
            directory.replace(await load_active(engine))
    except Exception as exc:  # serve the shared host now; custom domains once the DB answers
        log.warning("domains.initial_load_failed", error=str(exc) or type(exc).__name__)
    redirector = Redirector(
        signer=LinkSigner(settings.link_keys), domains=directory,
        clients=ClientAddress(settings.trusted_proxies), spool=spool, forwarder=forwarder,
        source=source, spool_max_bytes=settings.spool_max_bytes,
        access_log=settings.access_log, challenge_dir=settings.challenge_dir,
        challenge_answers=ChallengeAnswers(challenge_engine), metrics=metrics,
        bots=ClickReasons(networks=scanner_networks,
                          soon_after_send_s=settings.soon_after_send_s,
                          verdict=Verdict(weak=settings.weak_reasons)),
    )
    runner = web.ServerRunner(build_server(redirector), handle_signals=False,
                              shutdown_timeout=10)
    await runner.setup()
    life.on_stop(runner.cleanup)
    host, port = settings.bind
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=1024)
    try:
        await site.start()
    except OSError as exc:  # taken by another program, or an address this host lacks
        raise SystemExit(f"redirector: REDIRECTOR_BIND {host}:{port} cannot be used: "
                         f"{exc.strerror or exc}") from None
    # Only once listening: a start-up that fails or is stopped before has tried no
    # broker (no line about it) and has nothing to drain (the spool keeps its clicks).
    held: list[AbstractRobustConnection] = []
    tasks = [
        asyncio.create_task(forwarder.run(), name="forwarder"),
        asyncio.create_task(refresh_forever(directory, engine, settings.domain_refresh_s),
                            name="domains"),
        asyncio.create_task(link_broker(settings, forwarder, source, held), name="broker"),
        asyncio.create_task(adopt_orphans_forever(spool, forwarder.notify), name="adopt"),
    ]
    life.on_stop(functools.partial(stop_serving, life, runner, forwarder, tasks, held))
    life.describe(url=f"http://{host}:{port}/", spool=str(slot),
                  recovered_clicks=spool.recovered, tracking_host=settings.tracking_host,
                  tracking_host_aliases=list(settings.tracking_host_aliases) or None,
                  active_domains=len(directory), scanner_networks=scanner_networks.count)
    life.summarize(lambda: {"published": forwarder.published,
                            "left_in_spool_bytes": spool.backlog_bytes()})


async def stop_serving(life: Lifecycle, runner: web.ServerRunner, forwarder: Forwarder,
                       tasks: list[asyncio.Task[None]],
                       held: list[AbstractRobustConnection]) -> None:
    """Stop accepting and finish the requests in flight (so no click arrives while the
    spool drains; the cleanup registered at setup then finds nothing left to do),
    publish what is spooled within the drain timeout, end the background tasks and
    close the broker connection."""
    await runner.cleanup()
    tasks[0].cancel()  # the forwarder's loop: drain() takes over
    life.note(drained=await forwarder.drain(life.remaining_s()))
    for task in tasks:
        task.cancel()
    # Bounded: a task that ignored its cancellation must not keep the process from
    # exiting (and the spool from being closed and synced).
    done, stuck = await asyncio.wait(tasks, timeout=5)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("redirector.task_failed", task=task.get_name(),
                        error=repr(task.exception()))
    if stuck:
        log.warning("redirector.tasks_still_running", tasks=sorted(t.get_name() for t in stuck))
    for connection in held:
        with contextlib.suppress(Exception):
            await connection.close()


async def serve(settings: RedirectorSettings, stop: asyncio.Event) -> None:
    await Lifecycle("redirector", drain_timeout_s=settings.drain_timeout_s).run(
        functools.partial(open_redirector, settings=settings), stop)


def main() -> None:
    service_main("redirector", redirector_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
