"""The certifier in-process against real Pebble, certbot, RabbitMQ, PostgreSQL, and the real
redirector process answering the HTTP-01 challenges from the database (no shared
directory)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiohttp import web

from demo.databases import execute, fetch
from demo.net import free_port
from demo.pebble import Pebble, make_listener_ca
from demo.processes import ServiceProcess
from services.certifier import settings as certifier_settings
from services.certifier.__main__ import Running, start
from services.certifier.ari import AriClient
from services.certifier.certbot import Certbot, read_certificate
from services.certifier.handlers import Policy, certify
from services.certifier.issuance import Issuer, renewal_due
from services.certifier.ratelimits import FAILED_VALIDATION, Limits
from services.certifier.renewal import RenewalPolicy, renew_due
from shared.broker import topology as broker_topology
from shared.broker.consumer import ERROR_HEADER
from shared.broker.names import CERTIFIER_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.errors import TransientError
from shared.events import (
    DomainDeleted,
    DomainLapsed,
    DomainVerified,
    Event,
    EventData,
    decode_message,
)
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import FAST_DELAYS_MS, TRACKING_HOST, service_env
from tests.support.amqp import connected, get_messages, message_count, wait_count

NAME = "track.customer-a.test"
CERT_STORE_KEYS = "k2026:" + "c" * 40


def certifier_env(broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
                  directory_url: str, ca_bundle: Path, **extra: str) -> dict[str, str]:
    return {
        "AMQP_URL": broker.url, "AMQP_EXCHANGE": broker.exchange, "DATABASE_URL": database.url,
        "TRACKING_HOST": TRACKING_HOST, "ACME_DIRECTORY_URL": directory_url,
        "ACME_CA_BUNDLE": str(ca_bundle), "ACME_EMAIL": "certs@platform.test",
        "CERTBOT_DIR": str(tmp_path / "certbot"), "CERT_STORE_KEYS": CERT_STORE_KEYS,
        "CERTIFIER_RETRY_DELAYS_MS": ",".join(str(d) for d in FAST_DELAYS_MS),
        "CERTIFIER_RENEW_CHECK_S": "3600", **extra,
    }


async def insert_domain(database: DatabaseSettings, name: str = NAME,
                        customer: str = "cust-a", status: str = "verified") -> None:
    await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, verified) "
                            "VALUES ($1, $2, $3, true)", name, customer, status)


async def domain_row(database: DatabaseSettings, name: str = NAME) -> Any:
    return (await fetch(database, "SELECT * FROM tracking_domains WHERE name = $1", name))[0]


async def acme_counts(database: DatabaseSettings) -> dict[str, int]:
    rows = await fetch(database, "SELECT kind, count(*) AS n FROM acme_events GROUP BY kind")
    return {row["kind"]: row["n"] for row in rows}


async def wait_until_active(database: DatabaseSettings) -> Any:
    """The row, once active: it becomes so just after certificate.issued is published."""
    row = await domain_row(database)
    deadline = time.monotonic() + 5
    while row["status"] != "active" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        row = await domain_row(database)
    assert row["status"] == "active"
    return row


class Platform:
    """What the upstream platform sees: a queue bound to certificate.*, and a publisher."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue,
                 publisher: Publisher) -> None:
        self.channel = channel
        self.queue = queue
        self.publisher = publisher

    async def received(self, expected: int = 1, timeout_s: float = 30.0) -> list[Event[Any]]:
        messages = await get_messages(self.channel, self.queue.name, expected, timeout_s)
        events = [e for m in messages for e in decode_message(m.body, m.content_type)]
        return [e for e in events if isinstance(e, Event)]

    async def send(self, data: EventData) -> None:
        await self.publisher.publish_event(data)


@asynccontextmanager
async def platform(broker: BrokerSettings, topology: Topology) -> AsyncIterator[Platform]:
    async with connected(broker.url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await broker_topology.declare(channel, topology)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "certificate.*")
        yield Platform(channel, queue, Publisher(channel, exchange, source="/tests/platform"))


async def stored_serial(running: Running) -> str | None:
    """The serial the certificate store holds for NAME (what every edge agent installs)."""
    stored = await running.issuer.vault.get(NAME)
    return stored.serial if stored is not None else None


async def wait_for(condition: Callable[[], Any], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@contextmanager
def pebble_and_redirector(broker: BrokerSettings, database: DatabaseSettings,
                          tmp_path: Path) -> Iterator[tuple[Pebble, ServiceProcess]]:
    """Pebble, and a redirector where Pebble validates HTTP-01 (answers from the database)."""
    with Pebble(tmp_path / "pebble", http_port=free_port()) as pebble, \
            ServiceProcess("redirector", service_env(
                broker, database, tmp_path,
                REDIRECTOR_BIND=f"127.0.0.1:{pebble.http_port}"), tmp_path) as redirector:
        redirector.wait_http(f"http://127.0.0.1:{pebble.http_port}/healthz")
        yield pebble, redirector


@asynccontextmanager
async def certifier(env: dict[str, str]) -> AsyncIterator[Running]:
    running = await start(certifier_settings.load(env))
    try:
        yield running
    finally:
        await running.stop()


async def test_verified_domain_is_certified_once_renewed_warned_and_removed(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    await insert_domain(database)
    with pebble_and_redirector(broker, database, tmp_path) as (pebble, redirector):
        env = certifier_env(broker, database, tmp_path, pebble.directory_url,
                            pebble.listener_ca)
        async with platform(broker, topology) as upstream, certifier(env) as running:
            started = time.monotonic()
            await upstream.send(DomainVerified(domain=NAME, customer_id="cust-a",
                                               matched_by="cname", chain=[NAME, TRACKING_HOST]))
            [issued] = await upstream.received()
            elapsed = time.monotonic() - started
            assert issued.type == "certificate.issued"
            assert issued.data.domain == NAME and issued.data.customer_id == "cust-a"

            live = tmp_path / "certbot" / "config" / "live" / NAME
            on_disk = read_certificate(live / "cert.pem")
            assert (live / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2
            assert (live / "privkey.pem").is_file()
            assert (issued.data.serial, issued.data.not_before, issued.data.not_after) == (
                on_disk.serial, on_disk.not_before, on_disk.not_after)
            row = await wait_until_active(database)
            assert row["last_error"] is None
            assert row["certificate_serial"] == on_disk.serial
            assert row["certificate_expires_at"] == on_disk.not_after
            third = on_disk.lifetime / 3
            assert on_disk.not_after - third * 1.1 <= row["certificate_renew_at"] \
                <= on_disk.not_after - third
            # The answer was served from the database; the cleanup hook removed it.
            assert await fetch(database, "SELECT token FROM acme_challenges") == []
            stored = await running.issuer.vault.get(NAME)
            assert stored is not None and stored.serial == on_disk.serial
            assert stored.chain_pem == (live / "fullchain.pem").read_text()
            assert stored.key_pem == (live / "privkey.pem").read_bytes()
            assert await acme_counts(database) == {"order": 1, "certificate": 1}
            print(f"issuance took {elapsed:.2f} s")

            # A repeated domain.verified issues nothing.
            await upstream.send(DomainVerified(domain=NAME, customer_id="cust-a",
                                               matched_by="cname"))
            await wait_for(lambda: running.outcomes["already-certified"] == 1)
            assert running.certbot.runs == 1
            assert await acme_counts(database) == {"order": 1, "certificate": 1}
            assert await upstream.received(timeout_s=0.3) == []

            # Renewal, with the clock moved to when a third of the lifetime remains.
            later = renewal_due(on_disk) + timedelta(hours=1)
            issuer = Issuer(certbot=running.certbot, store=running.store,
                            vault=running.issuer.vault, accounts=running.issuer.accounts,
                            limits=Limits(), clock=lambda: later)
            common: dict[str, Any] = {
                "store": running.store,
                "publisher": upstream.publisher, "policy": Policy(), "rng": random.Random(1),
                "renewal": RenewalPolicy(), "clock": lambda: later}
            assert await renew_due(issuer=issuer, **common) == 1
            [renewed] = await upstream.received()
            assert renewed.type == "certificate.issued"
            assert renewed.data.serial != on_disk.serial
            assert read_certificate(live / "cert.pem").serial == renewed.data.serial
            assert (await domain_row(database))["certificate_serial"] == renewed.data.serial
            assert (await stored_serial(running)) == renewed.data.serial
            now = {**common, "clock": lambda: datetime.now(UTC)}
            assert await renew_due(issuer=issuer, **now) == 0  # nothing due today

            # Renewal failing close to expiry: certificate.expiring, and a later retry.
            renewed_row = await domain_row(database)
            near_end = renewed_row["certificate_expires_at"] - timedelta(days=7)
            unreachable = Certbot(
                command=running.certbot.command, base_dir=tmp_path / "certbot",
                server=f"https://127.0.0.1:{free_port()}/dir", email=None,
                ca_bundle=pebble.listener_ca, challenge_dir=None)
            failing = Issuer(certbot=unreachable, store=running.store,
                             vault=running.issuer.vault, accounts=running.issuer.accounts,
                             limits=Limits(), clock=lambda: near_end)
            common["clock"] = lambda: near_end
            assert await renew_due(issuer=failing, **common) == 1
            [expiring] = await upstream.received()
            assert expiring.type == "certificate.expiring"
            assert expiring.data.not_after == renewed_row["certificate_expires_at"]
            assert "could not be renewed" in expiring.data.reason
            retry = RenewalPolicy().retry  # plus up to 10%, so failures spread out
            assert near_end + retry <= (await domain_row(database))["certificate_renew_at"] \
                <= near_end + retry * 1.1

            # Lapsed: renewal stops. Deleted: certificate and key go, from disk and store.
            await execute(database, "UPDATE tracking_domains SET status = 'lapsed'")
            await upstream.send(DomainLapsed(domain=NAME, customer_id="cust-a",
                                             code="cname-moved", reason="moved"))
            await wait_for(lambda: running.outcomes["renewal-stopped"] == 1)
            assert (await domain_row(database))["certificate_renew_at"] is None
            await upstream.send(DomainDeleted(domain=NAME, customer_id="cust-a"))
            await upstream.send(DomainDeleted(domain=NAME, customer_id="cust-a"))
            await wait_for(lambda: running.outcomes["removed"] == 1
                           and running.outcomes["nothing-to-remove"] == 1)
            assert not live.exists()
            assert not (tmp_path / "certbot" / "config" / "renewal" / f"{NAME}.conf").exists()
            assert await stored_serial(running) is None
            assert (await domain_row(database))["certificate_serial"] is None
        assert redirector.terminate() == 0


async def test_unanswerable_challenge_becomes_certificate_failed_after_retries(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    await insert_domain(database)
    # Nothing listens where Pebble connects for HTTP-01: every validation fails.
    with Pebble(tmp_path / "pebble", http_port=free_port()) as pebble:
        env = certifier_env(broker, database, tmp_path, pebble.directory_url,
                            pebble.listener_ca, CERTIFIER_VALIDATION_ATTEMPTS="2",
                            CERTIFIER_VALIDATION_RETRY_S="0.1")
        async with platform(broker, topology) as upstream, certifier(env) as running:
            await upstream.send(DomainVerified(domain=NAME, customer_id="cust-a",
                                               matched_by="cname"))
            [failed] = await upstream.received(timeout_s=40)
            assert failed.type == "certificate.failed"
            assert failed.data.code == "connection"
            assert NAME in failed.data.reason and "port 80" in failed.data.reason
            assert "The certificate authority said:" in failed.data.reason
            assert running.certbot.runs == 2
            row = await domain_row(database)
            assert row["status"] == "verified" and row["certificate_serial"] is None
            assert row["last_error"] == failed.data.reason
            counts = await acme_counts(database)
            assert counts["failed_validation"] == 2 and "certificate" not in counts
            assert not (tmp_path / "certbot" / "config" / "live" / NAME).exists()


async def test_unreachable_ca_is_transient_and_retried_until_dead_lettered(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    await insert_domain(database)
    listener_ca, _, _ = make_listener_ca(tmp_path / "listener")
    env = certifier_env(broker, database, tmp_path, f"https://127.0.0.1:{free_port()}/dir",
                        listener_ca, CERTIFIER_MAX_ATTEMPTS="2")
    async with platform(broker, topology) as upstream, certifier(env) as running:
        await upstream.send(DomainVerified(domain=NAME, customer_id="cust-a",
                                           matched_by="cname"))
        [dead] = await get_messages(upstream.channel, topology.dead_queue(CERTIFIER_QUEUE), 1,
                                    timeout_s=20)
        assert "ca-unreachable" in str(dead.headers[ERROR_HEADER])
        assert running.certbot.runs == 2
        assert await acme_counts(database) == {}  # the CA never saw an order
        assert (await domain_row(database))["status"] == "verified"


async def test_failed_validations_hold_work_back_without_running_certbot(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    await insert_domain(database)
    now = datetime.now(UTC)
    for minutes in (50, 40, 30, 20, 10):  # five in the last hour: Let's Encrypt's limit
        await execute(database, "INSERT INTO acme_events (kind, name, registered_domain, at) "
                                "VALUES ($1, $2, 'customer-a.test', $3)",
                      FAILED_VALIDATION, NAME, now - timedelta(minutes=minutes))
    listener_ca, _, _ = make_listener_ca(tmp_path / "listener")
    env = certifier_env(broker, database, tmp_path, f"https://127.0.0.1:{free_port()}/dir",
                        listener_ca)
    async with certifier(env) as running:
        issuer = Issuer(certbot=running.certbot, store=running.store,
                        vault=running.issuer.vault, accounts=running.issuer.accounts,
                        limits=Limits())
        verified = DomainVerified(domain=NAME, customer_id="cust-a", matched_by="cname")
        with pytest.raises(TransientError) as caught:
            # No publisher: the limit is hit before anything could be published.
            await certify(verified, store=running.store, issuer=issuer,
                          publisher=None,  # type: ignore[arg-type]
                          policy=Policy(), rng=random.Random())
        assert "failed-validations" in caught.value.reason
        # The oldest of the five leaves the hour-long window in about 10 minutes.
        assert caught.value.delay_s is not None
        assert 9 * 60 < caught.value.delay_s <= 10 * 60
        assert running.certbot.runs == 0


async def test_a_stopping_certifier_abandons_what_outlives_its_drain_timeout(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    # A certbot that never finishes: the run in progress outlives the drain timeout.
    started = tmp_path / "certbot-started"
    slow = tmp_path / "slow-certbot"
    slow.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 60\n")
    slow.chmod(0o755)
    listener_ca, _, _ = make_listener_ca(tmp_path / "listener")
    env = certifier_env(broker, database, tmp_path, "https://127.0.0.1:9/dir", listener_ca,
                        CERTBOT_COMMAND=str(slow), CERTIFIER_DRAIN_TIMEOUT_S="0.5")
    other = "track.customer-b.test"
    await insert_domain(database)
    await insert_domain(database, other, customer="cust-b")
    queue = topology.queue(CERTIFIER_QUEUE)
    async with platform(broker, topology) as upstream, connected(broker.url) as side:
        running = await start(certifier_settings.load(env))
        try:
            for name, customer in ((NAME, "cust-a"), (other, "cust-b")):
                await upstream.send(DomainVerified(domain=name, customer_id=customer,
                                                   matched_by="cname"))
            await wait_for(started.exists)
            pid = int(started.read_text())
            # One event runs certbot, the other waits behind it for the directory.
            await wait_for(lambda: running.consumer.in_flight == 2)
        finally:
            before = time.monotonic()
            await running.stop()
            took = time.monotonic() - before

        assert took < 3, f"stop took {took:.1f} s with a 0.5 s drain timeout"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # certbot was killed (and reaped), not left behind
        # Neither event finished; both were left unacked, so the broker holds them for
        # the next certifier. Nothing was dead-lettered.
        assert not running.outcomes and running.certbot.runs == 1
        assert await wait_count(side, queue, 2, timeout_s=5) == 2
        assert await message_count(side, topology.dead_queue(CERTIFIER_QUEUE)) == 0
    # The killed run may have placed an order with the CA: it counts against the rate
    # limits (one order, no certificate); the event that never ran certbot counts nothing.
    assert await acme_counts(database) == {"order": 1}
    for name in (NAME, other):
        assert (await domain_row(database, name))["status"] == "verified"


def account_uri(certbot_dir: Path) -> str:
    """The ACME account certbot's directory holds (its URL at the CA)."""
    [regr] = list((certbot_dir / "config" / "accounts").rglob("regr.json"))
    return str(json.loads(regr.read_text())["uri"])


async def test_a_certifier_moved_to_an_empty_directory_carries_on_from_the_store(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    """Certifier A issues; B starts on another "machine" (an empty certbot directory) with
    the store keys rotated (a new key first, the old one still listed): it serves the
    stored certificate, orders nothing for a redelivered event, and renews with A's
    account, no new registration, the new key sealed under the new kid. B also asks for
    a profile the CA does not offer (`--preferred-profile`): the CA's default comes."""
    await insert_domain(database)
    with pebble_and_redirector(broker, database, tmp_path) as (pebble, redirector):
        env_a = certifier_env(broker, database, tmp_path / "a", pebble.directory_url,
                              pebble.listener_ca)
        verified = DomainVerified(domain=NAME, customer_id="cust-a", matched_by="cname")
        async with platform(broker, topology) as upstream:
            async with certifier(env_a):
                await upstream.send(verified)
                [issued] = await upstream.received()
            account = account_uri(tmp_path / "a" / "certbot")
            shutil.rmtree(tmp_path / "a")  # the old machine is gone

            env_b = certifier_env(broker, database, tmp_path / "b", pebble.directory_url,
                                  pebble.listener_ca,
                                  CERT_STORE_KEYS=f"k2027:{'n' * 40},{CERT_STORE_KEYS}",
                                  # Pebble 2.4 has no profiles: the CA's default is issued.
                                  ACME_PROFILE="shortlived")
            async with certifier(env_b) as running:
                # The stored certificate is readable under the rotated keys.
                assert await stored_serial(running) == issued.data.serial
                await upstream.send(verified)  # a redelivery: nothing is ordered
                await wait_for(lambda: running.outcomes["already-certified"] == 1)
                assert running.certbot.runs == 0
                assert await acme_counts(database) == {"order": 1, "certificate": 1}

                stored = await running.issuer.vault.get(NAME)
                assert stored is not None
                later = renewal_due(stored.info) + timedelta(hours=1)
                issuer = Issuer(certbot=running.certbot, store=running.store,
                                vault=running.issuer.vault, accounts=running.issuer.accounts,
                                limits=Limits(), clock=lambda: later)
                assert await renew_due(
                    issuer=issuer, store=running.store,
                    publisher=upstream.publisher, policy=Policy(), rng=random.Random(1),
                    renewal=RenewalPolicy(), clock=lambda: later) == 1
                [renewed] = await upstream.received()
                assert renewed.data.serial != issued.data.serial
                assert running.certbot.runs == 1
                assert account_uri(tmp_path / "b" / "certbot") == account
                assert await acme_counts(database) == {"order": 2, "certificate": 2}
                assert await running.issuer.vault.key_ids() == {"k2027": 1}
                row = (await fetch(database, "SELECT kid FROM acme_accounts"))[0]
                assert row["kid"] == "k2026"  # unchanged account: not re-sealed by a run
                assert await stored_serial(running) == renewed.data.serial
        assert redirector.terminate() == 0


@asynccontextmanager
async def renewal_info_server(windows: dict[str, Any]) -> AsyncIterator[tuple[str, list[str]]]:
    """A CA's ACME Renewal Information, as a small real HTTP server the test controls
    (Pebble 2.4 offers none): the directory names `renewalInfo`; a certificate gets
    `windows[its id]`, else `windows["any"]`: (start, end, Retry-After seconds). Yields
    the directory URL and the certificate identifiers asked for."""
    asked: list[str] = []

    async def directory(_: web.Request) -> web.Response:
        return web.json_response({"renewalInfo": f"{base}/renewal-info"})

    async def renewal_info(request: web.Request) -> web.Response:
        asked.append(request.match_info["id"])
        start, end, retry = windows.get(request.match_info["id"], windows["any"])
        return web.json_response(
            {"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()}},
            headers={"Retry-After": str(retry)})

    app = web.Application()
    app.router.add_get("/dir", directory)
    app.router.add_get("/renewal-info/{id}", renewal_info)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"{base}/dir", asked
    finally:
        await runner.cleanup()


async def test_renewal_follows_the_cas_renewal_information(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    """The CA's window is in the future: only looked at again (at its Retry-After, sooner
    than the window); once the window has begun, renewed, and the new certificate's next
    look is a moment inside its window."""
    await insert_domain(database)
    windows: dict[str, Any] = {}
    with pebble_and_redirector(broker, database, tmp_path) as (pebble, redirector):
        env = certifier_env(broker, database, tmp_path, pebble.directory_url,
                            pebble.listener_ca)
        async with platform(broker, topology) as upstream, certifier(env) as running, \
                renewal_info_server(windows) as (directory, asked):
            await upstream.send(DomainVerified(domain=NAME, customer_id="cust-a",
                                               matched_by="cname"))
            [issued] = await upstream.received()
            await wait_until_active(database)
            stored = await running.issuer.vault.get(NAME)
            assert stored is not None and stored.ari_id is not None
            issuer = Issuer(certbot=running.certbot, store=running.store,
                            vault=running.issuer.vault, accounts=running.issuer.accounts,
                            limits=Limits(), ari=AriClient(directory))
            common: dict[str, Any] = {
                "issuer": issuer, "store": running.store,
                "publisher": upstream.publisher, "policy": Policy(), "rng": random.Random(1),
                "renewal": RenewalPolicy()}

            async def make_due() -> None:
                await execute(database, "UPDATE tracking_domains SET certificate_renew_at = "
                                        "now() - interval '1 minute'")

            now = datetime.now(UTC)
            windows["any"] = (now + timedelta(days=10), now + timedelta(days=12), 3600)
            await make_due()
            assert await renew_due(**common) == 1
            assert asked == [stored.ari_id] and running.certbot.runs == 1
            assert await upstream.received(timeout_s=0.3) == []
            renew = (await domain_row(database))["certificate_renew_at"]
            assert now + timedelta(minutes=59) < renew < now + timedelta(minutes=61)

            windows[stored.ari_id] = (now - timedelta(days=2), now - timedelta(days=1), 3600)
            windows["any"] = (now + timedelta(hours=2), now + timedelta(hours=3), 86400)
            await make_due()
            assert await renew_due(**common) == 1
            [renewed] = await upstream.received()
            assert renewed.data.serial != issued.data.serial and running.certbot.runs == 2
            # The new certificate's next look: a moment inside its own window (two to
            # three hours away; its Retry-After, a day, comes later).
            assert len(asked) == 3 and asked[2] != stored.ari_id
        row = await domain_row(database)
        assert row["certificate_serial"] == renewed.data.serial
        assert now + timedelta(hours=2) <= row["certificate_renew_at"] \
            <= now + timedelta(hours=3)
        assert redirector.terminate() == 0
