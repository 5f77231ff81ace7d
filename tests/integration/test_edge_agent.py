"""The edge agent against a real nginx, RabbitMQ and PostgreSQL: certificates put in the
store reach nginx (per-handshake files, no reload), events are followed, an agent that
was stopped catches up, and a deleted or lapsed domain stops being served; an
announcement the broker refused is sent again, exactly for what is missing; one bad
domain (a key that does not open, a chain that does not parse, a file that cannot be
written) holds back none of the others and is installed once repaired."""

from __future__ import annotations

import asyncio
import shutil
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from demo.databases import execute, fetch
from demo.nginx import Nginx, certificate_directory, worker_group
from services.edge.__main__ import Running, start
from services.edge.settings import EdgeSettings
from shared.broker import topology as broker_topology
from shared.broker.names import CERTIFICATE_INSTALLED, PLATFORM_QUEUE
from shared.broker.publisher import Publisher
from shared.certificates import CertStore, Keyring
from shared.db.engine import create_engine
from shared.events import (
    CertificateInstalled,
    CertificateIssued,
    DomainDeleted,
    DomainLapsed,
    Event,
    EventData,
    decode_message,
)
from shared.handshake import presented_serial
from shared.metrics import EdgeMetrics, new_registry
from shared.settings import CERT_STORE_KEYS, BrokerSettings, DatabaseSettings
from tests.support.amqp import connected, get_messages
from tests.support.certificates import self_signed_pem

KEYS = "k1:" + "s" * 40
EDGE = "edge-it"
A, B, C, D = (f"track.customer-{x}.test" for x in "abcd")


@dataclass
class World:
    nginx: Nginx
    channel: AbstractChannel
    exchange: str
    platform_queue: str
    settings: EdgeSettings
    store: CertStore
    database: DatabaseSettings
    publish: Callable[[EventData], Awaitable[object]]

    async def presented(self, name: str) -> str | None:
        return await presented_serial("127.0.0.1", self.nginx.https_port, name)

    async def wait_presented(self, name: str, serial: str | None, timeout_s: float = 5) -> None:
        deadline = time.monotonic() + timeout_s
        while (seen := await self.presented(name)) != serial:
            assert time.monotonic() < deadline, f"{name}: nginx presents {seen}, not {serial}"
            await asyncio.sleep(0.05)

    async def issue(self, name: str, status: str = "active") -> str:
        """A domain row (if new) with `status`, and a fresh certificate in the store."""
        await execute(self.database, "INSERT INTO tracking_domains (name, customer_id, status, "
                      "verified) VALUES ($1, $2, $3, true) ON CONFLICT (name) DO UPDATE SET "
                      "status = $3", name, f"cust-{name[15]}", status)
        chain, key = self_signed_pem(name)
        return (await self.store.put(name, chain, key)).serial

    async def rows(self) -> dict[str, str]:
        return {row["domain"]: row["serial"] for row in await fetch(
            self.database, "SELECT domain, serial FROM edge_certificates WHERE edge_id = $1",
            EDGE)}

    async def unannounced(self) -> set[str]:
        return {row["domain"] for row in await fetch(
            self.database, "SELECT domain FROM edge_certificates WHERE edge_id = $1 "
            "AND NOT announced", EDGE)}

    async def announcements(self, expected: int,
                            timeout_s: float = 5) -> list[tuple[str, str]]:
        """(domain, serial) of the certificate.installed events on the platform queue
        (other events taken there are dropped), waiting for `expected`."""
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            for message in await get_messages(self.channel, self.platform_queue, 1, 0.2):
                event = decode_message(message.body, message.content_type)[0]
                if isinstance(event, Event) and isinstance(event.data, CertificateInstalled):
                    assert event.data.edge_id == EDGE
                    found.append((event.data.domain, event.data.serial))
        return sorted(found)


@pytest.fixture
async def world(broker: BrokerSettings, database: DatabaseSettings,
                tmp_path: Path) -> AsyncIterator[World]:
    cert_dir = certificate_directory()
    engine: AsyncEngine = create_engine(database)
    nginx = Nginx(tmp_path / "nginx", upstreams=["127.0.0.1:9"], cert_dir=cert_dir)
    settings = EdgeSettings(
        edge_id=EDGE, broker=broker, database=database,
        store_keys=CERT_STORE_KEYS.parse(KEYS), cert_dir=cert_dir, cert_group=worker_group(),
        reconcile_s=3600, conf_path=nginx.include, reload_command=tuple(nginx.reload_command),
        https_listen=nginx.https_listen, http_listen=nginx.http_listen,
        upstreams=("127.0.0.1:9",), verify_tls=True, log_level="INFO")
    topology = broker_topology.Topology(broker.exchange)
    try:
        with nginx:
            async with connected(broker.url) as connection:
                channel = await connection.channel()
                exchange = await broker_topology.declare(channel, topology)
                publisher = Publisher(channel, exchange, source="/tests/edge")
                yield World(nginx, channel, broker.exchange, topology.queue(PLATFORM_QUEUE),
                            settings,
                            CertStore(engine, Keyring(settings.store_keys)), database,
                            publisher.publish_event)
                for name in broker_topology.edge_queue_names(topology, EDGE):
                    await channel.queue_delete(name)
    finally:
        await engine.dispose()
        shutil.rmtree(cert_dir.parent)


async def test_an_edge_serves_the_store_follows_events_and_catches_up(world: World) -> None:
    a1, b1 = await world.issue(A), await world.issue(B)
    await world.issue(C, status="lapsed")  # stored, but its DNS left us: not served

    running: Running = await start(world.settings)
    try:
        # The first sync, before any event: every served certificate, confirmed by nginx.
        assert await world.presented(A) == a1 and await world.presented(B) == b1
        assert await world.presented(C) is None
        assert await world.rows() == {A: a1, B: b1}
        assert running.edge.behind() == 0
        told = [decode_message(m.body, m.content_type)[0] for m in
                await get_messages(world.channel, world.platform_queue, expected=2)]
        assert {(e.data.edge_id, e.data.domain, e.data.serial) for e in told
                if isinstance(e, Event) and isinstance(e.data, CertificateInstalled)} \
            == {(EDGE, A, a1), (EDGE, B, b1)}
        key_file = world.settings.cert_dir / f"{A}.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o640  # never world-readable
        assert stat.S_IMODE(world.settings.cert_dir.stat().st_mode) == 0o751

        # A renewal: the new serial is served within seconds, without a reload.
        include_before = world.nginx.include.stat().st_mtime_ns
        a2 = await world.issue(A)
        await world.publish(issued(A, a2))
        await world.wait_presented(A, a2)
        assert world.nginx.include.stat().st_mtime_ns == include_before

        # Deleted and lapsed domains disappear (and stay away: the certifier forgets a
        # deleted domain's certificate, the verifier marks a lapsed one).
        await world.store.delete(B)
        await world.publish(DomainDeleted(domain=B, customer_id="cust-b"))
        await world.wait_presented(B, None)
        await execute(world.database,
                      "UPDATE tracking_domains SET status = 'lapsed' WHERE name = $1", A)
        await world.publish(DomainLapsed(domain=A, customer_id="cust-a", code="cname",
                                          reason="gone"))
        await world.wait_presented(A, None)
        assert await world.rows() == {}
    finally:
        await running.stop()

    # While the agent is down: a new domain, and a renewal of one served again.
    await execute(world.database,
                  "UPDATE tracking_domains SET status = 'active' WHERE name = $1", A)
    a3, d1 = await world.issue(A), await world.issue(D)
    await world.publish(issued(D, d1))  # waits in the edge's own queue
    restarted = await start(replace(world.settings, reconcile_s=3600))
    try:
        await world.wait_presented(D, d1)
        await world.wait_presented(A, a3)
        assert await world.rows() == {A: a3, D: d1}
        assert restarted.edge.behind() == 0
    finally:
        await restarted.stop()


def issued(name: str, serial: str) -> CertificateIssued:
    now = datetime.now(UTC)
    return CertificateIssued(domain=name, customer_id=f"cust-{name[15]}", not_before=now,
                             not_after=now + timedelta(days=90), serial=serial)



async def test_an_announcement_the_broker_refused_is_sent_again_exactly_once(
        world: World) -> None:
    registry = new_registry(process=False)
    running = await start(world.settings, EdgeMetrics(registry, EDGE))
    # (The agent declares the topology at start: the binding goes after.)
    platform = await world.channel.get_queue(world.platform_queue, ensure=False)
    try:
        # Nothing bound to certificate.installed: every publish comes back unroutable.
        await platform.unbind(world.exchange, CERTIFICATE_INSTALLED)
        a1, b1, c1 = await world.issue(A), await world.issue(B), await world.issue(C)
        assert (await running.edge.reconcile())["installed"] == 3
        # Installed and recorded all the same, each row marked "not announced".
        assert {n: await world.presented(n) for n in (A, B, C)} == {A: a1, B: b1, C: c1}
        assert await world.rows() == {A: a1, B: b1, C: c1}
        assert await world.unannounced() == {A, B, C}
        assert running.edge.failed == {A: "announce", B: "announce", C: "announce"}
        assert registry.get_sample_value("tracking_edge_certificate_failures_total",
                                         {"edge": EDGE, "reason": "announce"}) == 3

        await platform.bind(world.exchange, CERTIFICATE_INSTALLED)
        # The event retried (nothing to install) announces its domain, only it...
        await world.publish(issued(A, a1))
        assert await world.announcements(1) == [(A, a1)]
        assert await world.unannounced() == {B, C}
        # ... and the next reconciliation the others: each missing one once, no more.
        counts = await running.edge.reconcile()
        assert counts["announced"] == 2 and counts["installed"] == 0
        assert await world.announcements(2) == [(B, b1), (C, c1)]
        assert await world.unannounced() == set() and running.edge.failed == {}
        assert (await running.edge.reconcile())["announced"] == 0
        assert await world.announcements(1, timeout_s=1) == []
    finally:
        await running.stop()
        await platform.bind(world.exchange, CERTIFICATE_INSTALLED)


async def test_one_bad_domain_holds_back_none_of_the_others(world: World) -> None:
    a1, b1 = await world.issue(A), await world.issue(B)
    # C's key sealed under a key this edge's CERT_STORE_KEYS does not list.
    await world.issue(C)
    engine = create_engine(world.database)
    try:
        await CertStore(engine, Keyring(CERT_STORE_KEYS.parse("k9:" + "x" * 40))).put(
            C, *self_signed_pem(C))
    finally:
        await engine.dispose()
    # D's chain altered in the store: it does not parse.
    await world.issue(D)
    await execute(world.database, "UPDATE certificates SET chain_pem = 'garbage' "
                  "WHERE name = $1", D)
    # B's file cannot be written (a directory stands where it goes).
    blocker = world.settings.cert_dir / f"{B}.pem"
    blocker.mkdir(parents=True)
    registry = new_registry(process=False)
    running = await start(world.settings, EdgeMetrics(registry, EDGE))
    try:
        assert await world.presented(A) == a1
        assert running.edge.failed == {B: "write", C: "seal", D: "chain"}
        for reason in ("write", "seal", "chain"):
            assert registry.get_sample_value("tracking_edge_certificate_failures_total",
                                             {"edge": EDGE, "reason": reason}) == 1
        assert running.edge.behind() == 3
        assert not list((world.settings.cert_dir / ".incoming").iterdir())  # no key left

        # An event for a bad domain fails alone; the next one is followed.
        e1 = await world.issue("track.customer-e.test")
        await world.publish(issued(C, "1"))
        await world.publish(issued("track.customer-e.test", e1))
        await world.wait_presented("track.customer-e.test", e1)

        # Repaired, each is installed by the next reconciliation.
        blocker.rmdir()
        c2, d2 = await world.issue(C), await world.issue(D)
        counts = await running.edge.reconcile()
        assert counts["installed"] == 3 and counts["failed"] == 0
        for name, serial in ((B, b1), (C, c2), (D, d2)):
            assert await world.presented(name) == serial
        assert running.edge.failed == {} and running.edge.behind() == 0

        # A chain that breaks later: the file served stays as it was.
        await execute(world.database, "UPDATE certificates SET chain_pem = 'garbage', "
                      "serial = 'abc' WHERE name = $1", A)
        assert (await running.edge.reconcile())["failed"] == 1
        assert await world.presented(A) == a1 and running.edge.failed == {A: "chain"}
    finally:
        await running.stop()
