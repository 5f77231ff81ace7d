"""The verifier's handler and scheduler against a real DNS server on loopback (that the
test controls), the real PostgreSQL and the real RabbitMQ."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from demo.databases import execute, fetch
from demo.dns import DnsServer
from services.verifier.announcer import Announcer
from services.verifier.handlers import VerifierOutcome, handle_domain_events, handle_event
from services.verifier.schedule import Rechecker
from services.verifier.settings import VerifyPolicy
from services.verifier.store import VerificationStore
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import (
    DOMAIN_CREATED,
    DOMAIN_LAPSED,
    DOMAIN_REJECTED,
    DOMAIN_VERIFIED,
    VERIFIER_QUEUE,
)
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from shared.domain_status import DomainStatus
from shared.domains import normalise_domain, registered_domain
from shared.errors import TransientError
from shared.events import (
    DomainCreated,
    DomainDeleted,
    Event,
    EventData,
    decode_event,
    encode_event,
)
from shared.settings import BrokerSettings, DatabaseSettings
from shared.verification.checks import DomainChecker
from shared.verification.dns import DnsResolver
from tests.support.amqp import assert_no_more, decoded_messages, message, message_count

HOST = "click.platform.test"
HOST_V4, HOST_V6 = "192.0.2.10", "2001:db8::10"
NAME = "track.customer-a.test"
CUSTOMER = "cust-a"


def event(data: EventData, when: datetime | None = None) -> Event[Any]:
    decoded = decode_event(encode_event(data, source="/tests/verifier", time=when))
    assert isinstance(decoded, Event)
    return decoded


def created(domain: str = NAME, customer: str = CUSTOMER) -> Event[Any]:
    return event(DomainCreated(domain=domain, customer_id=customer))


@dataclass
class Harness:
    dns: DnsServer
    database: DatabaseSettings
    store: VerificationStore
    checker: DomainChecker
    announcer: Announcer
    policy: VerifyPolicy
    channel: AbstractChannel
    exchange: AbstractExchange
    observed: AbstractQueue

    async def handle(self, item: Event[Any]) -> VerifierOutcome | TransientError:
        try:
            return await handle_event(item, store=self.store, checker=self.checker,
                                      announcer=self.announcer, policy=self.policy)
        except TransientError as exc:
            return exc

    async def row(self, name: str = NAME) -> dict[str, Any] | None:
        rows = await fetch(self.database, "SELECT * FROM tracking_domains WHERE name = $1",
                           name)
        return dict(rows[0]) if rows else None

    async def events(self, expected: int, timeout_s: float = 3.0) -> list[dict[str, Any]]:
        """Events the verifier published (verified, rejected, lapsed), in order."""
        return await decoded_messages(self.observed, expected, timeout_s)

    async def no_more_events(self) -> None:
        await assert_no_more(self.observed)

    async def seed(self, name: str, status: str, customer: str = CUSTOMER, *,
                   due: datetime | None = None, chain: str | None = None) -> None:
        await execute(self.database, (
            "INSERT INTO tracking_domains (name, customer_id, status, verified, matched_by, "
            "dns_chain, check_due_at, registered_domain) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            name, customer, status, status in ("verified", "active"),
            "cname" if status in ("verified", "active") else None,
            chain or f"{name} -> {HOST}", due, registered_domain(name))


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.a(HOST, HOST_V4)
        server.aaaa(HOST, HOST_V6)
        yield server


def fast_policy(**overrides: Any) -> VerifyPolicy:
    values: dict[str, Any] = {
        "tracking_host": HOST, "min_recheck_delay_s": 0.2, "max_recheck_delay_s": 0.4,
        "tombstone_s": 1.0,
    }
    values.update(overrides)
    return VerifyPolicy(**values)


@pytest.fixture
async def harness(database: DatabaseSettings, broker: BrokerSettings, topology: Topology,
                  dns_server: DnsServer) -> AsyncIterator[Harness]:
    engine = create_engine(database, pool_size=5)
    connection = await connect(broker, name="test-verifier", attempts=1)
    try:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        observed = await channel.declare_queue(f"{broker.exchange}.observer", exclusive=True)
        for routing_key in (DOMAIN_VERIFIED, DOMAIN_REJECTED, DOMAIN_LAPSED):
            await observed.bind(exchange, routing_key)
        publisher = Publisher(channel, exchange, source="/tests/verifier", timeout_s=5)
        resolver = DnsResolver((("127.0.0.1", dns_server.port),), timeout_s=0.5)
        yield Harness(
            dns=dns_server, database=database, store=VerificationStore(engine),
            checker=DomainChecker(resolver, target=HOST, ca_identity="letsencrypt.org"),
            announcer=Announcer(publisher), policy=fast_policy(), channel=channel,
            exchange=exchange, observed=observed,
        )
    finally:
        await connection.close()
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- success ------------------------------------------------------------------------------

async def test_a_multi_hop_cname_chain_to_the_host_is_verified_and_announced(
        harness: Harness) -> None:
    harness.dns.cname(NAME, "edge.customer-a.test")
    harness.dns.cname("edge.customer-a.test", HOST)
    before = datetime.now(UTC)

    outcome = await harness.handle(created("Track.Customer-A.test."))

    assert outcome == VerifierOutcome("verified", matched_by="cname")
    row = await harness.row()
    assert row is not None
    assert (row["status"], row["verified"], row["matched_by"], row["customer_id"]) == (
        "verified", True, "cname", CUSTOMER)
    assert row["dns_chain"] == f"{NAME} -> edge.customer-a.test -> {HOST}"
    assert row["last_error"] is None
    assert row["verified_at"] >= before
    # The first periodic re-check is about an hour away (jittered).
    assert timedelta(minutes=50) < row["check_due_at"] - before < timedelta(minutes=70)
    [verified] = await harness.events(1)
    assert verified["type"] == "domain.verified"
    assert verified["data"] == {"domain": NAME, "customer_id": CUSTOMER, "matched_by": "cname",
                                "chain": [NAME, "edge.customer-a.test", HOST],
                                "registered_domain": "customer-a.test",
                                "isolation_warning": None}


# --- isolation: a registered domain shared with another customer or the platform host -----

@pytest.mark.parametrize(("other", "other_status", "name", "shared"), [
    # Two customers under one registered domain share one fate on SURBL/URIBL.
    ("track-a.shop-builder.test", "active", "track-b.shop-builder.test",
     "shop-builder.test"),
    ("a.shop.co.uk", "pending", "b.links.shop.co.uk", "shop.co.uk"),
    ("x.alice.github.io", "verified", "y.alice.github.io", "alice.github.io"),
    # An IDN groups with its A-label spelling.
    ("track.xn--bcher-kva.test", "active", "links.bücher.test", "xn--bcher-kva.test"),
    # Different registered domains under the same public suffix: isolated.
    ("a.shop.co.uk", "active", "b.other.co.uk", None),
    ("x.alice.github.io", "active", "y.bob.github.io", None),
    # A deleted (tombstoned) domain no longer counts.
    ("track-a.shop-builder.test", "tombstone", "track-b.shop-builder.test", None),
])
async def test_a_registered_domain_shared_with_another_customer_is_warned_about(
        harness: Harness, other: str, other_status: str, name: str,
        shared: str | None) -> None:
    if other_status == "tombstone":
        await harness.seed(other, "rejected", "cust-other", due=datetime.now(UTC))
    else:
        await harness.seed(other, other_status, "cust-other")
    await harness.seed("mine." + (shared or "own.test"), "active")  # its own: never a warning
    ascii_name = normalise_domain(name)
    harness.dns.cname(ascii_name, HOST)

    assert await harness.handle(created(name)) == VerifierOutcome("verified",
                                                                  matched_by="cname")

    row = await harness.row(ascii_name)
    assert row is not None
    [verified] = await harness.events(1)
    assert row["registered_domain"] == verified["data"]["registered_domain"] == (
        shared or registered_domain(ascii_name))
    warning = row["isolation_warning"]
    assert verified["data"]["isolation_warning"] == warning
    if shared is None:
        assert warning is None
        return
    assert warning == (
        f"{ascii_name} shares its registered domain {shared} with another customer's "
        "tracking domain: SURBL and URIBL list registered domains, so a listing caused by "
        "one lands on all of them. Use a name under a domain of the customer's own.")
    assert other not in warning  # the other customer's name is never told
    # A redelivery re-announces the stored warning.
    assert await harness.handle(created(name)) == VerifierOutcome("already-verified",
                                                                  matched_by="cname")
    [again] = await harness.events(1)
    assert again["data"]["isolation_warning"] == warning


async def test_a_name_under_the_platform_hosts_registered_domain_is_warned_about(
        harness: Harness) -> None:
    harness.policy = fast_policy(tracking_host_aliases=("old-click.legacy.test",))
    name, legacy = "track.platform.test", "track.legacy.test"
    for domain in (name, legacy):
        harness.dns.cname(domain, HOST)
    await harness.seed("b.platform.test", "pending", "cust-b")
    await harness.seed("c.platform.test", "active", "cust-c")

    for domain in (name, legacy):
        assert await harness.handle(created(domain)) == VerifierOutcome("verified",
                                                                        matched_by="cname")

    row = await harness.row(name)
    assert row is not None
    assert row["isolation_warning"].startswith(
        f"{name} shares its registered domain platform.test with 2 other customers' tracking "
        f"domains and the platform host ({HOST}): ")
    legacy_row = await harness.row(legacy)
    assert legacy_row is not None
    assert legacy_row["isolation_warning"].startswith(
        f"{legacy} shares its registered domain legacy.test with the platform host "
        "(old-click.legacy.test): ")


async def test_a_flattened_name_with_the_hosts_addresses_is_verified_by_address(
        harness: Harness) -> None:
    harness.dns.a(NAME, HOST_V4)
    harness.dns.aaaa(NAME, HOST_V6)
    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="address")
    row = await harness.row()
    assert row is not None and row["matched_by"] == "address" and row["verified"]
    assert HOST_V4 in row["dns_chain"] and HOST in row["dns_chain"]
    [verified] = await harness.events(1)
    assert verified["data"]["matched_by"] == "address"
    assert verified["data"]["chain"] == [NAME]


async def test_flattening_with_only_part_of_the_hosts_addresses_stays_pending(
        harness: Harness) -> None:
    harness.dns.a(NAME, HOST_V4)  # the AAAA is missing
    result = await harness.handle(created())
    assert isinstance(result, TransientError)
    row = await harness.row()
    assert row is not None and row["status"] == "pending"
    assert row["last_error"].startswith("no_cname: ")
    assert HOST_V6 in row["last_error"]


# --- not yet correct: pending with the reason, rechecked ----------------------------------

async def test_nxdomain_stays_pending_with_a_delayed_recheck(harness: Harness) -> None:
    result = await harness.handle(created())
    assert isinstance(result, TransientError)
    assert result.delay_s == pytest.approx(0.2)
    row = await harness.row()
    assert row is not None and row["status"] == "pending" and not row["verified"]
    assert row["last_error"].startswith(f"nxdomain: {NAME} does not exist")
    assert row["check_due_at"] is not None
    await harness.no_more_events()


async def test_a_wrong_target_names_both_names_and_verifies_once_fixed(
        harness: Harness) -> None:
    harness.dns.cname(NAME, "click.other-esp.test")
    harness.dns.a("click.other-esp.test", "198.51.100.7")
    result = await harness.handle(created())
    assert isinstance(result, TransientError)
    row = await harness.row()
    assert row is not None and row["status"] == "pending"
    assert row["last_error"].startswith("wrong_target: ")
    assert "points to click.other-esp.test" in row["last_error"]
    assert f"should point to {HOST}" in row["last_error"]

    harness.dns.cname(NAME, HOST)
    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="cname")
    row = await harness.row()
    assert row is not None and row["status"] == "verified" and row["last_error"] is None


async def test_a_cname_loop_and_an_over_long_chain_are_named(harness: Harness) -> None:
    harness.dns.cname(NAME, "a.loop.test")
    harness.dns.cname("a.loop.test", "b.loop.test")
    harness.dns.cname("b.loop.test", "a.loop.test")
    assert isinstance(await harness.handle(created()), TransientError)
    row = await harness.row()
    assert row is not None
    assert row["last_error"].startswith("cname_loop: ")
    assert "a.loop.test -> b.loop.test -> a.loop.test" in row["last_error"]

    names = [NAME, *(f"h{i}.long.test" for i in range(10)), HOST]
    for here, there in itertools.pairwise(names):
        harness.dns.cname(here, there)
    assert isinstance(await harness.handle(created()), TransientError)
    row = await harness.row()
    assert row is not None and row["last_error"].startswith("chain_too_long: ")


async def test_servfail_and_timeouts_are_transient_and_keep_the_domain_pending(
        harness: Harness) -> None:
    harness.dns.fault(NAME, "servfail")
    result = await harness.handle(created())
    assert isinstance(result, TransientError)
    assert result.reason.startswith("dns_servfail: ") and "SERVFAIL" in result.reason
    row = await harness.row()
    assert row is not None and row["status"] == "pending"

    harness.dns.fault(NAME, "timeout")
    started = time.monotonic()
    result = await harness.handle(created())
    assert isinstance(result, TransientError) and result.reason.startswith("dns_timeout: ")
    assert time.monotonic() - started < 3

    # A slow answer within the timeout is just an answer.
    harness.dns.fault(NAME, None)
    harness.dns.cname(NAME, HOST)
    harness.dns.delay(NAME, 0.2)
    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="cname")


async def test_caa_that_forbids_the_ca_keeps_it_pending_and_allowing_it_verifies(
        harness: Harness) -> None:
    harness.dns.cname(NAME, HOST)
    harness.dns.caa("customer-a.test", 'issue "digicert.com"', 'iodef "mailto:x@customer-a.test"')
    assert isinstance(await harness.handle(created()), TransientError)
    row = await harness.row()
    assert row is not None and row["status"] == "pending"
    assert row["last_error"].startswith("caa_forbids: ")
    assert "customer-a.test" in row["last_error"] and "letsencrypt.org" in row["last_error"]

    # The closest non-empty set wins: allowing it at the name itself is enough.
    harness.dns.caa(NAME, 'issue "letsencrypt.org"')
    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="cname")


async def test_caa_at_the_cname_target_is_the_names_caa(harness: Harness) -> None:
    # DNS resolution follows the CNAME for the CAA question too (RFC 8659 §3).
    harness.dns.cname(NAME, HOST)
    harness.dns.caa(HOST, 'issue ";"')
    assert isinstance(await harness.handle(created()), TransientError)
    row = await harness.row()
    assert row is not None and row["last_error"].startswith("caa_forbids: ")


# --- rejected at once ------------------------------------------------------------------------

@pytest.mark.parametrize("domain, code", [
    ("192.0.2.1", "invalid_name"),
    ("*.customer-a.test", "invalid_name"),
    ("track..customer-a.test", "invalid_name"),
    ("track.customer-a.test/x", "invalid_name"),
    (HOST, "platform_host"),
    (f"x.{HOST}", "platform_host"),
])
async def test_bad_names_are_rejected_at_once_without_a_row(
        harness: Harness, domain: str, code: str) -> None:
    assert await harness.handle(created(domain)) == VerifierOutcome("rejected", code)
    [rejected] = await harness.events(1)
    assert rejected["type"] == "domain.rejected"
    assert rejected["data"]["code"] == code and rejected["data"]["domain"] == domain
    assert rejected["data"]["reason"]
    assert await fetch(harness.database, "SELECT name FROM tracking_domains") == []
    assert harness.dns.queries == {}


async def test_a_name_owned_by_another_customer_is_rejected_and_left_alone(
        harness: Harness) -> None:
    harness.dns.cname(NAME, HOST)
    await harness.seed(NAME, "active", customer="cust-b")
    assert await harness.handle(created()) == VerifierOutcome("rejected", "owned_by_other_customer")
    [rejected] = await harness.events(1)
    assert rejected["data"]["code"] == "owned_by_other_customer"
    assert rejected["data"]["customer_id"] == CUSTOMER
    row = await harness.row()
    assert row is not None and (row["customer_id"], row["status"]) == ("cust-b", "active")


async def test_a_rejection_nobody_listens_for_is_logged_not_retried(harness: Harness) -> None:
    await harness.observed.unbind(harness.exchange, DOMAIN_REJECTED)
    assert await harness.handle(created("*.customer-a.test")) == VerifierOutcome("rejected",
                                                                          "invalid_name")


async def test_a_batch_is_judged_together_and_retried_if_any_domain_needs_a_recheck(
        harness: Harness) -> None:
    harness.dns.cname("good.customer-a.test", HOST)
    batch = [created("good.customer-a.test"), created("bad.customer-a.test")]
    with pytest.raises(TransientError) as retry:
        await handle_domain_events(batch, store=harness.store, checker=harness.checker,
                                   announcer=harness.announcer, policy=harness.policy)
    assert retry.value.reason.startswith("nxdomain: ") and retry.value.delay_s == 0.2
    good, bad = await harness.row("good.customer-a.test"), await harness.row("bad.customer-a.test")
    assert good is not None and good["status"] == "verified"
    assert bad is not None and bad["status"] == "pending"
    # The retried batch: the verified one is only re-announced, the other checked again.
    harness.dns.cname("bad.customer-a.test", HOST)
    await handle_domain_events(batch, store=harness.store, checker=harness.checker,
                               announcer=harness.announcer, policy=harness.policy)
    bad = await harness.row("bad.customer-a.test")
    assert bad is not None and bad["status"] == "verified"
    assert [e["data"]["domain"] for e in await harness.events(3)].count(
        "good.customer-a.test") == 2


# --- deadline, idempotence, deletion ---------------------------------------------------------

async def test_past_the_deadline_it_is_rejected_and_redeliveries_only_reannounce(
        harness: Harness) -> None:
    harness.dns.cname(NAME, "click.other-esp.test")
    original = created()
    assert isinstance(await harness.handle(original), TransientError)
    await execute(harness.database, "UPDATE tracking_domains SET created_at = now() - "
                  "interval '49 hours' WHERE name = $1", NAME)

    assert await harness.handle(original) == VerifierOutcome("rejected", "wrong_target")
    row = await harness.row()
    assert row is not None and row["status"] == "rejected" and not row["verified"]
    assert row["last_error"].startswith("wrong_target: ") and "48 h" in row["last_error"]
    [rejected] = await harness.events(1)
    assert rejected["data"]["code"] == "wrong_target"
    assert "click.other-esp.test" in rejected["data"]["reason"]
    assert HOST in rejected["data"]["reason"]

    # The same message again (a redelivery): announced again, nothing re-checked.
    queries = sum(harness.dns.queries.values())
    assert await harness.handle(original) == VerifierOutcome("already-rejected", "wrong_target")
    assert sum(harness.dns.queries.values()) == queries
    assert (await harness.events(1))[0]["data"]["code"] == "wrong_target"

    # The customer fixes DNS and asks again: a new event starts afresh.
    harness.dns.cname(NAME, HOST)
    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="cname")


@pytest.mark.parametrize("status", ["verified", "active"])
async def test_a_repeated_created_never_downgrades_and_reannounces(
        harness: Harness, status: str) -> None:
    await harness.seed(NAME, status)
    harness.dns.cname(NAME, "somewhere.else.test")  # would fail if it were checked
    assert await harness.handle(created()) == VerifierOutcome(f"already-{status}",
                                                              matched_by="cname")
    row = await harness.row()
    assert row is not None and row["status"] == status and row["verified"]
    [verified] = await harness.events(1)
    assert verified["data"]["chain"] == [NAME, HOST]


async def test_deleted_removes_the_row_idempotently_and_a_late_recheck_cannot_revive_it(
        harness: Harness) -> None:
    await harness.seed("active.customer-a.test", "active")
    gone = event(DomainDeleted(domain="Active.Customer-A.test", customer_id=CUSTOMER))
    assert await harness.handle(gone) == VerifierOutcome("deleted")
    assert await harness.handle(gone) == VerifierOutcome("absent")
    assert await harness.row("active.customer-a.test") is None

    # Another customer cannot delete someone's domain.
    await harness.seed("b.customer-b.test", "active", customer="cust-b")
    theirs = event(DomainDeleted(domain="b.customer-b.test", customer_id=CUSTOMER))
    assert await harness.handle(theirs) == VerifierOutcome("not-owner")
    assert await harness.row("b.customer-b.test") is not None

    # A pending domain: its recheck is still in a retry tier when it is deleted.
    original = created()
    assert isinstance(await harness.handle(original), TransientError)
    assert await harness.handle(event(DomainDeleted(domain=NAME, customer_id=CUSTOMER))) == \
        VerifierOutcome("tombstoned")
    harness.dns.cname(NAME, HOST)
    assert await harness.handle(original) == VerifierOutcome("ignored-deleted")
    row = await harness.row()
    assert row is not None and row["status"] == "rejected" and not row["verified"]
    await harness.no_more_events()
    # The scheduler purges the tombstone once its time is up.
    rechecker = Rechecker(store=harness.store, checker=harness.checker,
                          announcer=harness.announcer, policy=harness.policy, poll_s=1)
    await asyncio.sleep(harness.policy.tombstone_s)
    await rechecker.run_once()
    assert await harness.row() is None


# --- through the consumer: rechecks are delayed messages ----------------------------------

async def test_records_fixed_during_the_test_are_verified_by_a_delayed_recheck(
        harness: Harness, topology: Topology, side: AbstractConnection) -> None:
    harness.dns.cname(NAME, "click.other-esp.test")
    consumer = Consumer(
        channel=harness.channel, topology=topology, queue=VERIFIER_QUEUE,
        handler=functools.partial(handle_domain_events, store=harness.store,
                                  checker=harness.checker, announcer=harness.announcer,
                                  policy=harness.policy),
        publisher=Publisher(harness.channel, harness.exchange, source="/tests/verifier"),
        policy=ConsumePolicy(prefetch=16, max_attempts=100),
    )
    await consumer.start()
    try:
        await harness.exchange.publish(
            message(encode_event(DomainCreated(domain=NAME, customer_id=CUSTOMER),
                                  source="/tests/platform")),
            routing_key=DOMAIN_CREATED, mandatory=True)

        async def wrong_seen() -> bool:
            row = await harness.row()
            return row is not None and (row["last_error"] or "").startswith("wrong_target")

        assert await eventually(wrong_seen)
        # The message now waits in a retry tier, not in a sleeping handler.
        assert await eventually(lambda: _in_retry_tiers(side, topology))
        checks_before = harness.dns.query_count(NAME, "CNAME")
        harness.dns.cname(NAME, HOST)

        async def verified() -> bool:
            row = await harness.row()
            return row is not None and row["status"] == "verified"

        assert await eventually(verified)
        assert harness.dns.query_count(NAME, "CNAME") > checks_before
        [announced] = await harness.events(1)
        assert announced["type"] == "domain.verified"
    finally:
        await consumer.stop(timeout_s=5)


async def _in_retry_tiers(side: AbstractConnection, topology: Topology) -> bool:
    counts = [await message_count(side, topology.retry_queue(VERIFIER_QUEUE, delay))
              for delay in topology.retry_delays_ms]
    return sum(counts) > 0


# --- periodic re-verification --------------------------------------------------------------

def rechecker(harness: Harness, **overrides: Any) -> Rechecker:
    values: dict[str, Any] = {"store": harness.store, "checker": harness.checker,
                              "announcer": harness.announcer, "policy": harness.policy,
                              "poll_s": 0.05}
    values.update(overrides)
    return Rechecker(**values)


async def make_due(harness: Harness, name: str = NAME) -> None:
    await execute(harness.database, "UPDATE tracking_domains SET check_due_at = now() - "
                  "interval '1 second' WHERE name = $1", name)


async def test_a_domain_whose_dns_moved_away_lapses_and_comes_back_when_fixed(
        harness: Harness) -> None:
    harness.dns.cname(NAME, HOST)
    await harness.seed(NAME, "active")  # check_due_at NULL: never checked, so due
    await harness.seed("pending.customer-a.test", "pending")
    scheduler = rechecker(harness)

    assert await scheduler.run_once() == 1  # pending domains are not the schedule's
    row = await harness.row()
    assert row is not None and row["status"] == "active"
    assert row["check_due_at"] > datetime.now(UTC) + timedelta(minutes=50)
    assert await scheduler.run_once() == 0  # not due again for an hour
    await harness.no_more_events()

    harness.dns.cname(NAME, "click.other-esp.test")
    harness.dns.a("click.other-esp.test", "198.51.100.7")
    await make_due(harness)
    assert await scheduler.run_once() == 1
    row = await harness.row()
    assert row is not None and (row["status"], row["verified"]) == ("lapsed", False)
    assert row["last_error"].startswith("wrong_target: ")
    assert "click.other-esp.test" in row["last_error"]
    [lapsed] = await harness.events(1)
    assert lapsed["type"] == "domain.lapsed"
    assert lapsed["data"]["code"] == "wrong_target"
    assert lapsed["data"]["customer_id"] == CUSTOMER

    # Still wrong: stays lapsed, nothing announced again.
    await make_due(harness)
    assert await scheduler.run_once() == 1
    await harness.no_more_events()

    harness.dns.cname(NAME, HOST)
    await make_due(harness)
    assert await scheduler.run_once() == 1
    row = await harness.row()
    assert row is not None and (row["status"], row["verified"]) == ("verified", True)
    [verified] = await harness.events(1)
    assert verified["type"] == "domain.verified"


async def test_a_caa_change_on_an_active_domain_warns_without_lapsing(
        harness: Harness) -> None:
    harness.dns.cname(NAME, HOST)
    harness.dns.caa("customer-a.test", 'issue "digicert.com"')
    await harness.seed(NAME, "active")
    assert await rechecker(harness).run_once() == 1
    row = await harness.row()
    assert row is not None and row["status"] == "active"
    assert row["last_error"].startswith("caa_forbids: ")
    assert "renewals will fail" in row["last_error"]
    await harness.no_more_events()


async def test_resolver_trouble_never_lapses_a_domain_and_looks_again_sooner(
        harness: Harness) -> None:
    harness.dns.fault(NAME, "servfail")
    await harness.seed(NAME, "verified")
    assert await rechecker(harness).run_once() == 1
    row = await harness.row()
    assert row is not None and row["status"] == "verified"
    # A tenth of the interval (± jitter), not a whole one.
    assert row["check_due_at"] < datetime.now(UTC) + timedelta(minutes=10)
    await harness.no_more_events()


async def test_two_replicas_never_check_the_same_domain_twice(harness: Harness) -> None:
    names = [f"t{i}.customer-a.test" for i in range(120)]
    for name in names:
        harness.dns.cname(name, HOST)
        await harness.seed(name, "active")
    harness.dns.delay_s = 0.02  # checks overlap for real
    first, second = rechecker(harness, batch=40), rechecker(harness, batch=40)

    async def drain(scheduler: Rechecker) -> int:
        total = 0
        while claimed := await scheduler.run_once():
            total += claimed
        return total

    counts = await asyncio.gather(drain(first), drain(second))
    assert sum(counts) == len(names)
    assert all(count > 0 for count in counts)
    assert [harness.dns.query_count(name, "CNAME") for name in names] == [1] * len(names)


async def test_the_service_loop_runs_the_schedule_until_stopped(harness: Harness) -> None:
    harness.dns.cname(NAME, "elsewhere.test")
    await harness.seed(NAME, "active")
    stop = asyncio.Event()
    task = asyncio.create_task(rechecker(harness).run(stop))

    async def lapsed() -> bool:
        row = await harness.row()
        return row is not None and row["status"] == "lapsed"

    assert await eventually(lapsed)
    stop.set()
    await asyncio.wait_for(task, timeout=2)


# --- SQLite (development): the same store, a simple select instead of row locks -----------

async def test_the_store_works_on_sqlite(tmp_path: Path, dns_server: DnsServer) -> None:
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'tracking.db'}")
    await upgrade(settings)
    engine = create_engine(settings)
    try:
        store = VerificationStore(engine)
        now = datetime.now(UTC)
        added = await store.add_pending(NAME, CUSTOMER, now)
        assert added is not None and added.status == "pending"
        assert await store.add_pending(NAME, "cust-b", now) is None
        row = await store.get(NAME)
        assert row == added and row.created_at.tzinfo is not None
        assert await store.note_pending(NAME, CUSTOMER, last_error="nxdomain: x",
                                        check_due_at=now, now=now)
        assert await store.mark_verified(NAME, CUSTOMER, from_status=DomainStatus.PENDING,
                                         matched_by="cname", dns_chain=f"{NAME} -> {HOST}",
                                         check_due_at=now - timedelta(seconds=1), now=now)
        claimed = await store.claim_due(datetime.now(UTC), 10,
                                        lambda: now + timedelta(hours=1))
        assert [r.name for r in claimed] == [NAME]
        assert await store.claim_due(datetime.now(UTC), 10, lambda: now) == []
        stale = await store.get(NAME)
        assert stale is not None
        assert await store.mark_lapsed(NAME, CUSTOMER, last_error="no_cname: x",
                                       now=datetime.now(UTC))
        assert not await store.restart(stale, CUSTOMER, now)  # it changed since: no restart
        row = await store.get(NAME)
        assert row is not None and row.status == "lapsed"
        assert await store.restart(row, CUSTOMER, datetime.now(UTC))
        assert await store.forget(NAME, CUSTOMER, now=now, tombstone_until=now) == "tombstoned"
        assert await store.purge_tombstones(datetime.now(UTC)) == 1
        assert await store.get(NAME) is None
    finally:
        await engine.dispose()


# --- the platform host moving: TRACKING_HOST_ALIASES ------------------------------------

OLD_HOST = "click.old-platform.test"  # the alias: the platform host being moved away from


def with_alias(harness: Harness) -> Harness:
    """The harness's verifier, configured as during a move: OLD_HOST is an alias of HOST."""
    harness.policy = fast_policy(tracking_host_aliases=(OLD_HOST,))
    harness.checker = DomainChecker(DnsResolver((("127.0.0.1", harness.dns.port),),
                                                timeout_s=0.5),
                                    target=HOST, aliases=(OLD_HOST,),
                                    ca_identity="letsencrypt.org")
    harness.dns.a(OLD_HOST, "192.0.2.20")
    return harness


async def test_a_domain_cnamed_to_an_alias_is_verified_and_its_reason_names_the_alias(
        harness: Harness) -> None:
    harness = with_alias(harness)
    harness.dns.cname(NAME, OLD_HOST)  # pointed at the old host, never moved
    harness.dns.cname("track.customer-b.test", HOST)  # already on the new one

    assert await harness.handle(created()) == VerifierOutcome("verified", matched_by="cname")
    assert await harness.handle(created("track.customer-b.test", "cust-b")) == VerifierOutcome(
        "verified", matched_by="cname")

    row = await harness.row()
    assert row is not None and (row["status"], row["matched_by"]) == ("verified", "cname")
    assert row["dns_chain"] == (f"{NAME} -> {OLD_HOST} [{OLD_HOST} is an alias of {HOST} in "
                                "TRACKING_HOST_ALIASES]")
    other = await harness.row("track.customer-b.test")
    assert other is not None and other["dns_chain"] == f"track.customer-b.test -> {HOST}"
    chains = {e["data"]["domain"]: e["data"]["chain"] for e in await harness.events(2)}
    assert chains == {NAME: [NAME, OLD_HOST],
                      "track.customer-b.test": ["track.customer-b.test", HOST]}
    # The operator's query for the domains that depend on the alias (docs/operations.md).
    depending = await fetch(harness.database, "SELECT name FROM tracking_domains WHERE "
                                              "dns_chain LIKE '%in TRACKING_HOST_ALIASES]'")
    assert [r["name"] for r in depending] == [NAME]


async def test_an_alias_is_never_a_customers_domain_and_other_targets_stay_wrong(
        harness: Harness) -> None:
    harness = with_alias(harness)
    assert await harness.handle(created(f"x.{OLD_HOST}")) == VerifierOutcome("rejected",
                                                                      "platform_host")
    [rejected] = await harness.events(1)
    assert rejected["type"] == "domain.rejected"
    assert f"CNAME to {HOST}" in rejected["data"]["reason"]
    assert await harness.row(f"x.{OLD_HOST}") is None

    harness.dns.cname(NAME, "click.other-esp.test")
    harness.dns.a("click.other-esp.test", "198.51.100.7")
    pending = await harness.handle(created())
    assert isinstance(pending, TransientError) and "wrong_target" in pending.reason
    assert f"should point to {HOST}" in pending.reason
