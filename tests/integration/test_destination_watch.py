"""The destination watch on the real broker, PostgreSQL and a DBL zone on the loopback DNS
server: a click to a listed destination tells its customer once, a second click does not,
a clean destination never does, and a restart neither asks the list again nor tells again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec
import pytest
from aio_pika.abc import AbstractConnection, AbstractExchange
from prometheus_client import CollectorRegistry
from sqlalchemy import Table, func, select

from demo.blocklists import ListZones
from demo.dns import DnsServer
from demo.processes import ROOT
from services.verifier.destination_store import DestinationStore
from services.verifier.destinations import dbl_of, event_id_for, start_watch
from services.verifier.reputation.blocklists import Kind, parse_lists
from services.verifier.reputation.dnspython import DnspythonListResolver
from services.verifier.reputation.engine import ReputationEngine
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.names import (
    CLICK_TRACKED,
    DESTINATIONS_QUEUE,
    LOGGER_QUEUE,
    PLATFORM_QUEUE,
    QUEUE_ARGUMENTS,
)
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.db.engine import create_engine
from shared.db.models import DestinationCheck, DestinationListing
from shared.events import DestinationListed, decode_message, encode_batch, encode_event
from shared.metrics import ConsumerMetrics, DestinationMetrics
from shared.settings import BrokerSettings, DatabaseSettings
from tests.support.amqp import batch_message, click, get_messages, message_count

PHISHING = "phish.test"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as running:
        yield running


@pytest.fixture
def zones(dns: DnsServer) -> ListZones:
    found = ListZones(dns)
    found.list("dbl", PHISHING, "phishing")
    return found


@dataclass
class Watch:
    registry: CollectorRegistry
    exchange: AbstractExchange

    def clicks_read(self) -> float:
        return self.registry.get_sample_value("tracking_destination_clicks_total") or 0.0

    def checked(self, outcome: str) -> float:
        return self.registry.get_sample_value("tracking_destination_checks_total",
                                              {"outcome": outcome}) or 0.0

    async def send(self, *urls: tuple[str, str, str]) -> None:
        """One batched message of clicks: (customer, campaign, destination URL) each."""
        raws = [encode_event(click(n, customer_id=customer, campaign_id=campaign, url=url),
                             source="/tests/destinations", event_id=str(uuid.uuid4()))
                for n, (customer, campaign, url) in enumerate(urls)]
        await self.exchange.publish(batch_message(raws), routing_key=CLICK_TRACKED,
                                    mandatory=True)


@asynccontextmanager
async def watching(broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
                   dns: DnsServer, zones: ListZones, daily_budget: int = 1000,
                   ) -> AsyncIterator[Watch]:
    """A destination watch as the verifier starts it, with a fresh engine and memory (a
    new process, as far as the watch can tell); stopped on the way out."""
    engine = ReputationEngine(DnspythonListResolver((("127.0.0.1", dns.port),),
                                                    timeout_s=0.3),
                              parse_lists(zones.setting), retry_delay_s=0.01,
                              daily_budget=daily_budget)
    blocklist = dbl_of(engine)
    assert blocklist is not None and blocklist.kind == Kind.DBL
    db = create_engine(database)
    connection = await connect(broker, name="test-destinations", attempts=1)
    registry = CollectorRegistry()
    try:
        consumer = await start_watch(
            connection=connection, topology=topology, engine=engine, blocklist=blocklist,
            store=DestinationStore(db), source="/tests/verifier",
            metrics=DestinationMetrics(registry), consumer_metrics=ConsumerMetrics(registry),
            recheck_s=3600, memory=1000, prefetch=4, max_attempts=3)
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        try:
            yield Watch(registry, exchange)
        finally:
            await consumer.stop(timeout_s=5)
    finally:
        await connection.close()
        await db.dispose()


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def told(side: AbstractConnection, topology: Topology,
               expected: int) -> list[DestinationListed]:
    """The destination.listed events in the platform's queue (taken), at most one more
    than expected, so a surplus shows."""
    channel = await side.channel()
    try:
        queue = topology.queue(PLATFORM_QUEUE)
        messages = await get_messages(channel, queue, expected, timeout_s=10.0)
        messages += await get_messages(channel, queue, 1, timeout_s=0.5)
    finally:
        await channel.close()
    events = [item for m in messages for item in decode_message(m.body, m.content_type)]
    data = [getattr(e, "data", None) for e in events]
    assert all(isinstance(d, DestinationListed) for d in data), events
    return [d for d in data if isinstance(d, DestinationListed)]


async def rows(database: DatabaseSettings, table: Table) -> int:
    db = create_engine(database)
    try:
        async with db.connect() as connection:
            return (await connection.execute(
                select(func.count()).select_from(table))).scalar_one()
    finally:
        await db.dispose()


async def test_a_listed_destination_is_told_once_per_customer_a_clean_one_never(
        broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
        dns: DnsServer, zones: ListZones, side: AbstractConnection) -> None:
    async with watching(broker, topology, database, dns, zones) as watch:
        await watch.send(("cust-1", "spring", "https://www.phish.test/login?r=1"),
                         ("cust-1", "spring", "https://shop.fine.test/sale"))
        [event] = await told(side, topology, 1)
        assert msgspec.structs.asdict(event) == {
            "customer_id": "cust-1", "campaign_id": "spring", "destination": PHISHING,
            "blocklist": "dbl", "categories": ["phishing"],
            "fix_url": "https://check.spamhaus.org/"}
        assert watch.checked("listed") == 1 and watch.checked("not_listed") == 1

        # A second click to it (another campaign, another host under it): nothing more.
        await watch.send(("cust-1", "autumn", "https://phish.test/other"),
                         ("cust-1", "autumn", "https://fine.test/"))
        await until(lambda: watch.clicks_read() == 4)
        assert await told(side, topology, 0) == []
        # Another customer linking there is told on its own.
        await watch.send(("cust-2", "promo", "http://PHISH.test./x"))
        [other] = await told(side, topology, 1)
        assert (other.customer_id, other.campaign_id, other.destination) == (
            "cust-2", "promo", PHISHING)
        # One question for the listed destination whatever the clicks, customers, hosts.
        assert dns.queries[(zones.qname("dbl", PHISHING), "A")] == 1
        assert await message_count(side, topology.queue(DESTINATIONS_QUEUE)) == 0
        assert await message_count(side, topology.dead_queue(DESTINATIONS_QUEUE)) == 0
    assert await rows(database, DestinationListing.__table__) == 2
    assert await rows(database, DestinationCheck.__table__) == 2
    # What the operator sees: both customers, newest first; the table names them too.
    report = trackctl(database, "--json")
    assert report.returncode == 0, report.stderr
    listed = json.loads(report.stdout)["destinations"]
    assert [(r["customer_id"], r["destination"], r["list"], r["categories"], r["campaign_id"])
            for r in listed] == [("cust-2", PHISHING, "dbl", ["phishing"], "promo"),
                                 ("cust-1", PHISHING, "dbl", ["phishing"], "spring")]
    text = trackctl(database, "--customer", "cust-1").stdout
    assert "cust-1" in text and PHISHING in text and "cust-2" not in text


def trackctl(database: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "trackctl"), "reputation", "--destinations", *args],
        env={**os.environ, "DATABASE_URL": database.url}, cwd=ROOT, capture_output=True,
        text=True, timeout=60)


async def test_a_restart_neither_asks_the_list_again_nor_tells_again(
        broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
        dns: DnsServer, zones: ListZones, side: AbstractConnection) -> None:
    async with watching(broker, topology, database, dns, zones) as watch:
        await watch.send(("cust-1", "spring", "https://phish.test/a"),
                         ("cust-1", "spring", "https://fine.test/a"))
        [event] = await told(side, topology, 1)
        assert event.destination == PHISHING
    asked = zones.queries("dbl")
    async with watching(broker, topology, database, dns, zones) as restarted:
        await restarted.send(("cust-1", "summer", "https://phish.test/b"),
                             ("cust-1", "summer", "https://fine.test/b"))
        await until(lambda: restarted.clicks_read() == 2)
        assert await told(side, topology, 0) == []
        assert restarted.checked("listed") == restarted.checked("not_listed") == 0
    assert zones.queries("dbl") == asked  # from destination_checks: not even the controls


async def test_a_redelivered_listing_keeps_its_event_id(
        broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
        dns: DnsServer, zones: ListZones, side: AbstractConnection) -> None:
    async with watching(broker, topology, database, dns, zones) as watch:
        await watch.send(("cust-1", "spring", "https://phish.test/a"))
        channel = await side.channel()
        [message] = await get_messages(channel, topology.queue(PLATFORM_QUEUE), 1)
        await channel.close()
    assert message.message_id == event_id_for("cust-1", PHISHING, Kind.DBL)


async def test_a_list_refusing_this_resolver_gives_no_verdict_and_tells_nobody(
        broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
        dns: DnsServer, zones: ListZones, side: AbstractConnection) -> None:
    zones.refuse("dbl")
    async with watching(broker, topology, database, dns, zones) as watch:
        await watch.send(("cust-1", "spring", "https://phish.test/a"))
        await until(lambda: watch.clicks_read() == 1)
        assert await told(side, topology, 0) == []
        assert watch.checked("unusable") == 1
    assert await rows(database, DestinationCheck.__table__) == 0


async def test_half_the_daily_budget_stays_for_the_tracking_domains(
        broker: BrokerSettings, topology: Topology, database: DatabaseSettings,
        dns: DnsServer, zones: ListZones) -> None:
    # 8 a day: the controls take 2, so 6 are left and 4 are kept back: 2 destinations.
    async with watching(broker, topology, database, dns, zones, daily_budget=8) as watch:
        await watch.send(*(("cust-1", "spring", f"https://shop{n}.test/") for n in range(4)))
        await until(lambda: watch.checked("not_listed") + watch.checked("budget") >= 4)
        assert (watch.checked("not_listed"), watch.checked("budget")) == (2, 2)
    assert zones.queries("dbl") == 2 + 2
    assert await rows(database, DestinationCheck.__table__) == 2


async def test_a_full_destination_queue_drops_its_oldest_and_never_refuses_a_click(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no watch reading it, the copy fills to its bound and then drops its oldest
    messages; every publish of the clicks is still confirmed, and the logger's queue gets
    them all. (The real bound is 256 MiB; a small one here, in a namespace of the test's.)"""
    monkeypatch.setitem(QUEUE_ARGUMENTS, DESTINATIONS_QUEUE,
                        {"x-max-length-bytes": 20_000, "x-overflow": "drop-head"})
    connection = await connect(broker, name="test-destinations-bound", attempts=1)
    try:
        channel = await open_channel(connection)
        publisher = Publisher(channel, await broker_topology.declare(channel, topology),
                              source="/tests/redirector")
        for number in range(40):  # about 2 kB each: twice the bound in all
            body = encode_batch([encode_event(click(number * 4 + n), source="/tests")
                                 for n in range(4)])
            await publisher.publish(CLICK_TRACKED, body, batch=True)  # confirmed, mandatory
    finally:
        await connection.close()
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 40
    kept = await message_count(side, topology.queue(DESTINATIONS_QUEUE))
    assert 0 < kept < 20
