"""The reputation watch against list zones on the loopback DNS server, the real PostgreSQL
and the real RabbitMQ: listings and delistings (event, row, metric, trackctl output), a
refused resolver, a list whose controls fail."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from prometheus_client import CollectorRegistry

from demo.blocklists import ListZones
from demo.databases import execute, fetch
from demo.dns import DnsServer
from demo.processes import ROOT
from services.verifier.announcer import Announcer
from services.verifier.reputation.blocklists import parse_lists
from services.verifier.reputation.dnspython import DnspythonListResolver
from services.verifier.reputation.engine import ReputationEngine
from services.verifier.reputation.store import ReputationStore
from services.verifier.reputation.watch import ReputationWatch
from services.verifier.settings import ReputationPolicy
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.names import DOMAIN_DELISTED, DOMAIN_LISTED, PLATFORM_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.db.engine import create_engine
from shared.domains import registered_domain
from shared.metrics import VerifierMetrics, new_registry
from shared.settings import BrokerSettings, DatabaseSettings
from tests.support.amqp import assert_no_more, decoded_messages

HOST = "click.platform.test"
A, B, PENDING = "track.shop-a.test", "track.shop-b.test", "track.shop-c.test"
TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
INTERVAL_S = 1800.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def next_round(self) -> None:
        """Past every row's next lookup (an interval, jittered, or sooner)."""
        self.now += timedelta(seconds=INTERVAL_S * 1.2)


@dataclass
class Harness:
    dns: DnsServer
    zones: ListZones
    database: DatabaseSettings
    watch: ReputationWatch
    clock: Clock
    registry: CollectorRegistry
    observed: AbstractQueue
    channel: AbstractChannel
    exchange: AbstractExchange
    topology: Topology

    async def events(self, expected: int) -> list[dict[str, Any]]:
        return await decoded_messages(self.observed, expected)

    async def no_more_events(self) -> None:
        await assert_no_more(self.observed)

    async def rows(self, name: str) -> dict[str, dict[str, Any]]:
        return {row["blocklist"]: dict(row) for row in await fetch(
            self.database, "SELECT * FROM domain_reputation WHERE name = $1", name)}

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def next_round(self) -> list[Any]:
        self.clock.next_round()
        return await self.watch.run_once()


async def seed(database: DatabaseSettings, name: str, customer: str, status: str) -> None:
    await execute(database, (
        "INSERT INTO tracking_domains (name, customer_id, status, verified, "
        "registered_domain) VALUES ($1, $2, $3, $4, $5)"),
        name, customer, status, status in ("verified", "active"), registered_domain(name))


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as running:
        yield running


@pytest.fixture
def daily_budget() -> int:
    """Questions per list and day (a test parametrizes it to spend it)."""
    return 100_000


@pytest.fixture
async def harness(database: DatabaseSettings, broker: BrokerSettings, topology: Topology,
                  dns: DnsServer, daily_budget: int) -> AsyncIterator[Harness]:
    await seed(database, A, "cust-a", "active")
    await seed(database, B, "cust-b", "verified")
    await seed(database, PENDING, "cust-c", "pending")
    zones = ListZones(dns, ttl=0)
    engine = create_engine(database, pool_size=3)
    connection = await connect(broker, name="test-reputation", attempts=1)
    try:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        observed = await channel.declare_queue(f"{broker.exchange}.observer", exclusive=True)
        for routing_key in (DOMAIN_LISTED, DOMAIN_DELISTED):
            await observed.bind(exchange, routing_key)
        registry = new_registry()
        metrics = VerifierMetrics(registry)
        policy = ReputationPolicy(lists=parse_lists(zones.setting), interval_s=INTERVAL_S,
                                  poll_s=60)
        lookups = ReputationEngine(
            DnspythonListResolver((("127.0.0.1", dns.port),), timeout_s=0.3,
                                  negative_ttl_s=0),
            policy.lists, retry_delay_s=0.01, attempts=2, daily_budget=daily_budget)
        clock = Clock()
        watch = ReputationWatch(
            store=ReputationStore(engine), engine=lookups,
            announcer=Announcer(Publisher(channel, exchange, source="/tests/rep",
                                          timeout_s=5)),
            policy=policy, platform_hosts=(HOST,), clock=clock,
            metrics=metrics.reputation)
        yield Harness(dns, zones, database, watch, clock, registry, observed, channel,
                      exchange, topology)
    finally:
        await connection.close()
        await engine.dispose()


def trackctl(database: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database.url}
    return subprocess.run([str(TRACKCTL), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


async def test_a_domain_becomes_listed_then_delisted(harness: Harness) -> None:
    first = await harness.watch.run_once()
    assert {r.blocklist: r.claimed for r in first} == {"dbl": 3, "surbl": 3, "uribl": 3}
    assert all(r.controls_passed for r in first)
    await harness.no_more_events()  # clean names, first looked up: nothing to announce
    assert {k: r["status"] for k, r in (await harness.rows(A)).items()} == {
        "dbl": "not_listed", "surbl": "not_listed", "uribl": "not_listed"}
    assert await harness.rows(PENDING) == {}  # only verified and active domains

    harness.zones.list("dbl", A, "phishing", "malware")
    harness.zones.list("surbl", "shop-a.test", "ph")
    await harness.next_round()
    events = sorted(await harness.events(2), key=lambda e: e["data"]["blocklist"])
    assert [e["type"] for e in events] == ["domain.listed", "domain.listed"]
    assert events[0]["data"] == {
        "domain": A, "customer_id": "cust-a", "blocklist": "dbl",
        "zone": "dbl.test", "listed_name": A, "categories": ["phishing", "malware"],
        "fix_url": "https://check.spamhaus.org/"}
    assert events[1]["data"]["listed_name"] == "shop-a.test"
    assert events[1]["data"]["categories"] == ["ph"]
    await harness.no_more_events()
    dbl = (await harness.rows(A))["dbl"]
    assert (dbl["status"], dbl["categories"], dbl["raw"]) == (
        "listed", "phishing,malware", "127.0.1.4,127.0.1.5")
    assert dbl["first_listed_at"] == dbl["last_checked_at"] == harness.clock.now
    assert harness.metric("tracking_reputation_listed", list="dbl", category="phishing") == 1
    assert harness.metric("tracking_reputation_listed", list="surbl", category="ph") == 1
    assert harness.metric("tracking_reputation_platform_host_listed", list="dbl") == 0

    shown = json.loads(trackctl(harness.database, "reputation", "--json").stdout)
    assert {(r["name"], r["blocklist"]) for r in shown["listed"]} == {(A, "dbl"), (A, "surbl")}
    assert shown["lists"]["dbl"]["watched"] == 3 and shown["lists"]["dbl"]["listed"] == 1
    text = trackctl(harness.database, "reputation").stdout
    assert "listed now:" in text and A in text and "https://www.surbl.org/surbl-analysis" in text
    show = trackctl(harness.database, "domain", "show", A)
    assert "dbl (dbl.test): LISTED (phishing, malware)" in show.stdout, show.stderr
    assert "surbl (surbl.test): LISTED (ph)" in show.stdout

    # Still listed next round: no second event, first_listed_at kept.
    listed_at = harness.clock.now
    await harness.next_round()
    await harness.no_more_events()
    assert (await harness.rows(A))["dbl"]["first_listed_at"] == listed_at

    harness.zones.delist("dbl", A)
    harness.zones.delist("surbl", "shop-a.test")
    await harness.next_round()
    events = sorted(await harness.events(2), key=lambda e: e["data"]["blocklist"])
    assert [e["type"] for e in events] == ["domain.delisted", "domain.delisted"]
    assert events[0]["data"]["listed_since"].startswith(listed_at.strftime("%Y-%m-%dT%H:%M"))
    assert (await harness.rows(A))["dbl"]["status"] == "not_listed"
    assert harness.metric("tracking_reputation_listed", list="dbl", category="phishing") == 0
    assert "nothing is listed now" in trackctl(harness.database, "reputation").stdout


async def test_the_platform_host_listed_is_the_operators_not_a_customers(
        harness: Harness) -> None:
    harness.zones.list("uribl", "platform.test", "black")
    with structlog.testing.capture_logs() as logs:
        await harness.watch.run_once()
    await harness.no_more_events()
    assert (await harness.rows(HOST))["uribl"]["status"] == "listed"
    [line] = [entry for entry in logs if entry["event"] == "reputation.pass"]
    assert line["listed"] == [f"{HOST}@uribl"]
    [warning] = [entry for entry in logs if entry["event"] == "reputation.platform_host_listed"]
    assert (warning["host"], warning["list"], warning["categories"]) == (HOST, "uribl",
                                                                        ["black"])
    assert harness.metric("tracking_reputation_platform_host_listed", list="uribl") == 1
    assert harness.metric("tracking_reputation_listed", list="uribl", category="black") is None


async def test_a_refused_resolver_lists_nothing_and_tells_the_operator(
        harness: Harness) -> None:
    harness.zones.list("dbl", A, "spam")
    harness.zones.refuse("dbl")  # 127.255.255.254: a public resolver
    with structlog.testing.capture_logs() as logs:
        rounds = {r.blocklist: r for r in await harness.watch.run_once()}
    assert rounds["dbl"].controls_passed is False
    assert rounds["dbl"].results == {"discarded": 3}
    await harness.no_more_events()
    assert {r["status"] for r in (await harness.rows(A)).values()} == {"unchecked",
                                                                       "not_listed"}
    assert (await harness.rows(A))["dbl"]["status"] == "unchecked"
    assert harness.metric("tracking_reputation_list_unusable", list="dbl") == 1
    assert harness.metric("tracking_reputation_list_unusable", list="surbl") == 0
    assert harness.metric("tracking_reputation_lookups_total", list="dbl",
                          result="discarded") == 3
    [line] = [entry for entry in logs if entry["event"] == "reputation.list_unusable"]
    assert line["list"] == "dbl" and "dbltest.com answered refused" in line["why"]

    # Served again: the discarded names are due again soon, and now listed.
    harness.zones.serve("dbl")
    harness.clock.now += timedelta(seconds=INTERVAL_S * 0.2)
    await harness.watch.run_once()
    [event] = await harness.events(1)
    assert event["data"]["domain"] == A and event["data"]["categories"] == ["spam"]
    assert harness.metric("tracking_reputation_list_unusable", list="dbl") == 0


async def test_a_list_failing_its_controls_is_ignored_for_the_round(harness: Harness) -> None:
    await harness.watch.run_once()
    harness.zones.list("uribl", "shop-b.test", "black")
    harness.zones.list("uribl", "invalid", "black")  # the negative control listed
    rounds = {r.blocklist: r for r in await harness.next_round()}
    assert rounds["uribl"].controls_passed is False and rounds["dbl"].controls_passed
    await harness.no_more_events()
    assert (await harness.rows(B))["uribl"]["status"] == "not_listed"
    harness.zones.delist("uribl", "invalid")
    await harness.next_round()
    [event] = await harness.events(1)
    assert (event["data"]["domain"], event["data"]["blocklist"]) == (B, "uribl")


async def test_servfail_and_timeouts_are_no_verdict(harness: Harness) -> None:
    await harness.watch.run_once()
    harness.zones.list("dbl", B, "spam")
    harness.dns.fault(f"{B}.dbl.test", "servfail")
    rounds = {r.blocklist: r for r in await harness.next_round()}
    assert rounds["dbl"].results["error"] == 1
    await harness.no_more_events()
    assert (await harness.rows(B))["dbl"]["status"] == "not_listed"
    assert harness.dns.query_count(f"{B}.dbl.test") == 1 + 2  # the first round, 2 attempts


async def test_names_no_longer_watched_lose_their_rows(harness: Harness) -> None:
    await harness.watch.run_once()
    await execute(harness.database, "UPDATE tracking_domains SET status = 'lapsed' "
                                    "WHERE name = $1", B)
    await harness.watch.run_once()
    assert await harness.rows(B) == {}
    assert len(await harness.rows(A)) == 3


async def test_a_change_that_cannot_be_announced_is_not_written_and_comes_back_soon(
        harness: Harness) -> None:
    await harness.watch.run_once()
    harness.zones.list("dbl", A, "malware")
    # Nothing bound to domain.listed: the broker returns it, the publisher raises.
    platform = await harness.channel.get_queue(harness.topology.queue(PLATFORM_QUEUE),
                                               ensure=False)
    await platform.unbind(harness.exchange, DOMAIN_LISTED)
    await harness.observed.unbind(harness.exchange, DOMAIN_LISTED)
    with structlog.testing.capture_logs() as logs:
        rounds = {r.blocklist: r for r in await harness.next_round()}
    assert rounds["dbl"].results["announce-failed"] == 1, rounds
    assert any(entry["event"] == "reputation.announce_failed" for entry in logs)
    row = (await harness.rows(A))["dbl"]
    assert row["status"] == "not_listed"  # not written: the next pass announces again
    soon = row["next_check_at"] - harness.clock.now
    assert timedelta(0) < soon <= timedelta(seconds=INTERVAL_S * 0.1 * 1.1)


@pytest.mark.parametrize("daily_budget", [3])
async def test_the_daily_budget_is_never_exceeded_and_the_rest_waits_for_midnight(
        harness: Harness) -> None:
    first = {r.blocklist: r for r in await harness.watch.run_once()}
    # 3 questions: the 2 controls and 1 of the 3 names; the other 2 are no verdict.
    assert first["dbl"].results == {"not_listed": 1, "budget-spent": 2}
    assert harness.zones.queries("dbl") == 3
    assert harness.metric("tracking_reputation_budget_remaining", list="dbl") == 0
    with structlog.testing.capture_logs() as logs:
        second = {r.blocklist: r for r in await harness.next_round()}
    assert second["dbl"].results == {"budget-spent": 3}
    assert harness.zones.queries("dbl") == 3
    [line] = [e for e in logs if e["event"] == "reputation.budget_spent" and e["list"] == "dbl"]
    assert line["deferred"] == 3
    # Deferred past the next UTC midnight, when the budget (real time) is whole again.
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
    for row in (await harness.rows(A), await harness.rows(B)):
        assert row["dbl"]["next_check_at"] >= midnight - timedelta(seconds=1)

