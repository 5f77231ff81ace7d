"""End to end, the whole domain lifecycle with real processes: a DNS server the test controls
(answering both the verifier and Pebble), Pebble, certbot, nginx, and the verifier,
certifier, redirector and logger. The platform publishes `domain.created` through the
exchange; the domain is verified, gets a certificate and serves its customer's links over
HTTPS with a chain that verifies to Pebble's root, with no step in between; wrong DNS and
a CAA set forbidding the CA are reported to the customer, and never reach the CA.

The expensive set-up (Pebble, nginx, four services) is started once for the module.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import dns.message
import dns.query
import dns.rdatatype
import pytest

from demo.databases import DatabaseFactory, fetch
from demo.net import first_redirect, https_get
from demo.processes import count_lines
from demo.world import PEBBLE_CAA_IDENTITY, World, local_world
from shared.broker import topology as broker_topology
from shared.broker.names import (
    CERTIFICATE_FAILED,
    CERTIFICATE_ISSUED,
    DOMAIN_CREATED,
    DOMAIN_REJECTED,
    DOMAIN_VERIFIED,
    RETRY_DELAYS_MS,
)
from shared.events import DomainCreated, DomainVerified, Event, EventData, decode_message
from shared.events import encode_event as encode
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env
from tests.support.amqp import message

NAME_A = "track.customer-a.test"
NAME_WRONG = "track.customer-w.test"
WRONG_TARGET = "click.other-esp.test"
NAME_CAA = "track.customer-c.test"
DEADLINE_S = 3.0
VERIFIER_DELAYS_MS = (200, 400)
DESTINATION = "https://shop.example/spring?utm_source=mail"


# --- the module's stack ----------------------------------------------------------------

@pytest.fixture(scope="module")
def namespace(amqp_url: str) -> Iterator[BrokerSettings]:
    settings = BrokerSettings(url=amqp_url, exchange=f"test-lifecycle-{uuid.uuid4().hex[:8]}")
    yield settings

    async def _delete() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            # Every tier any service declared (retry queue names include the delay).
            tiers = tuple(sorted({*RETRY_DELAYS_MS, *VERIFIER_DELAYS_MS}))
            await broker_topology.delete(await connection.channel(), broker_topology.Topology(
                settings.exchange, retry_delays_ms=tiers))

    asyncio.run(_delete())


@pytest.fixture(scope="module")
def module_database(database_factory: DatabaseFactory) -> Iterator[DatabaseSettings]:
    settings = asyncio.run(database_factory.create())
    yield settings
    asyncio.run(database_factory.drop(settings))


@pytest.fixture(scope="module")
def stack(namespace: BrokerSettings, module_database: DatabaseSettings,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("lifecycle")
    env = service_env(namespace, module_database, directory)
    verifier_env = {"VERIFY_DEADLINE_S": str(DEADLINE_S),
                    "VERIFIER_RETRY_DELAYS_MS": ",".join(map(str, VERIFIER_DELAYS_MS))}
    with local_world(directory, env=env, tracking_host=TRACKING_HOST,
                         verifier_env=verifier_env) as started:
        dns_server = started.dns
        dns_server.cname(NAME_A, TRACKING_HOST)
        # Customer A allows the test CA; the happy path goes through the CAA check too.
        dns_server.caa("customer-a.test", f'issue "{PEBBLE_CAA_IDENTITY}"')
        dns_server.cname(NAME_WRONG, WRONG_TARGET)
        dns_server.a(WRONG_TARGET, "192.0.2.80")
        dns_server.cname(NAME_CAA, TRACKING_HOST)
        dns_server.caa("customer-c.test", 'issue "letsencrypt.org"')
        yield started
        statuses = started.terminate()
    assert statuses == dict.fromkeys(statuses, 0), statuses


@pytest.fixture(autouse=True)
def _logs_on_failure(stack: World) -> Iterator[None]:
    yield
    print(stack.logs())  # pytest shows it only when the test failed


@pytest.fixture
def signer(link_keys: tuple[LinkKey, ...]) -> LinkSigner:
    return LinkSigner(link_keys)


# --- the platform's side of the broker ---------------------------------------------------

class Platform:
    """Publishes what the upstream platform publishes; hears the outcomes it would."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.broker = broker
        self.heard: list[Event[Any]] = []

    async def __aenter__(self) -> Platform:
        self._connection = await aio_pika.connect(self.broker.url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(self.broker.exchange)
        self._inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in (DOMAIN_VERIFIED, DOMAIN_REJECTED, CERTIFICATE_ISSUED, CERTIFICATE_FAILED):
            await self._inbox.bind(self._exchange, key)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._connection.close()

    async def publish(self, data: EventData, routing_key: str) -> None:
        await self._exchange.publish(message(encode(data, source="/tests/platform")),
                                     routing_key=routing_key, mandatory=True)

    async def created(self, domain: str, customer_id: str) -> None:
        await self.publish(DomainCreated(domain=domain, customer_id=customer_id),
                           DOMAIN_CREATED)

    async def events(self, domain: str, *, wanted: set[str] | None = None,
                     timeout_s: float = 0.0) -> list[Event[Any]]:
        """What was heard about `domain`: waiting up to `timeout_s` for the `wanted` types,
        or (none wanted) listening for the whole of `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = await self._inbox.get(no_ack=True, fail=False)
            if got is not None:
                for item in decode_message(got.body, got.content_type):
                    assert isinstance(item, Event), item  # our services publish no junk
                    self.heard.append(item)
                continue
            mine = [e for e in self.heard if e.data.domain == domain]
            found_all = wanted is not None and wanted <= {e.type for e in mine}
            if found_all or time.monotonic() >= deadline:
                return mine
            await asyncio.sleep(0.02)


async def wait_row(database: DatabaseSettings, name: str,
                   condition: Callable[[dict[str, Any]], bool], timeout_s: float,
                   what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await fetch(database, "SELECT * FROM tracking_domains WHERE name = $1", name)
        if rows and condition(dict(rows[0])):
            return dict(rows[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never {what} within {timeout_s} s: "
                                 f"{[dict(r) for r in rows]}")
        await asyncio.sleep(0.02)


async def acme_counts(database: DatabaseSettings, name: str) -> dict[str, int]:
    rows = await fetch(database, "SELECT kind, count(*) AS n FROM acme_events WHERE name = $1 "
                                 "GROUP BY kind", name)
    return {row["kind"]: row["n"] for row in rows}


async def ensure_active(stack: World, platform: Platform, database: DatabaseSettings,
                        name: str, customer_id: str) -> dict[str, Any]:
    """Customer A's domain, active (made so here if this test runs alone)."""
    rows = await fetch(database, "SELECT status FROM tracking_domains WHERE name = $1", name)
    if not rows or rows[0]["status"] != "active":
        await platform.created(name, customer_id)
    return await wait_row(database, name, lambda r: r["status"] == "active", 30, "active")


def pebble_validations(stack: World, name: str) -> int:
    """HTTP-01 fetches Pebble's VA made for `name` (three per order: concurrent validations)."""
    return count_lines(stack.pebble_log(), "Attempting to validate w/ HTTP", f"//{name}:")


# --- the tests ---------------------------------------------------------------------------

async def test_created_domain_is_verified_certified_and_served_over_https(
        stack: World, namespace: BrokerSettings, module_database: DatabaseSettings,
        signer: LinkSigner) -> None:
    # The DNS server answers as resolvers do: an A question about the customer's name gets
    # the CNAME chain and the platform host's address (what Pebble connects to for HTTP-01).
    query = dns.message.make_query(NAME_A, "A")
    answer = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", timeout=2,
                                     port=stack.dns.port)
    assert [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype),
             [rdata.to_text() for rdata in rrset]) for rrset in answer.answer] == [
        (f"{NAME_A}.", "CNAME", [f"{TRACKING_HOST}."]), (f"{TRACKING_HOST}.", "A", ["127.0.0.1"])]

    https = stack.nginx.https_port
    async with Platform(namespace) as platform:
        started = time.monotonic()
        await platform.created(NAME_A, "cust-a")
        row = await wait_row(module_database, NAME_A, lambda r: r["status"] == "active", 20,
                             "became active")
        active_s = time.monotonic() - started
        token = signer.mint_token(customer_id="cust-a", campaign_id="camp-1",
                                  recipient_id="rcpt-1", url=DESTINATION)
        status, headers, _ = await asyncio.to_thread(
            first_redirect, https, NAME_A, f"/t/{token}", stack.trusted_context(), 10)
        first_302_s = time.monotonic() - started
        # A valid chain: the handshake above verified it against Pebble's root (and the name).
        assert status == 302
        assert headers["Location"] == DESTINATION
        print(f"\ndomain.created -> active {active_s:.2f} s, first HTTPS 302 {first_302_s:.2f} s")

        assert row["verified"] is True and row["matched_by"] == "cname"
        assert row["dns_chain"] == f"{NAME_A} -> {TRACKING_HOST}"
        assert row["customer_id"] == "cust-a" and row["last_error"] is None
        assert row["certificate_serial"] and row["certificate_expires_at"] > datetime.now(UTC)
        events = await platform.events(NAME_A, wanted={DOMAIN_VERIFIED, CERTIFICATE_ISSUED},
                                       timeout_s=5)
        by_type = {event.type: event.data for event in events}
        assert by_type[DOMAIN_VERIFIED].chain == [NAME_A, TRACKING_HOST]
        assert by_type[CERTIFICATE_ISSUED].serial == row["certificate_serial"]
        assert by_type[CERTIFICATE_ISSUED].customer_id == "cust-a"

        # Without Pebble's root the chain does not verify (curl's error 60).
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(https_get, https, NAME_A, f"/t/{token}",
                                    ssl.create_default_context())

        # The CA resolved the name through our DNS server and validated through nginx.
        assert stack.dns.query_count(NAME_A, "A") >= 1
        assert pebble_validations(stack, NAME_A) >= 1
        assert await acme_counts(module_database, NAME_A) == {"order": 1, "certificate": 1}

        # The click became a row, with the client's address passed on by nginx.
        deadline = time.monotonic() + 15
        while not (clicks := await fetch(module_database, "SELECT * FROM tracking_logs WHERE "
                                                          "domain = $1 AND campaign_id = 'camp-1'",
                                         NAME_A)):
            assert time.monotonic() < deadline, "the click never became a row"
            await asyncio.sleep(0.05)
        assert len(clicks) == 1
        click = clicks[0]
        assert (click["customer_id"], click["campaign_id"], click["recipient_id"], click["url"],
                click["ip"]) == ("cust-a", "camp-1", "rcpt-1", DESTINATION, "127.0.0.1")


async def test_a_second_domain_verified_issues_nothing(
        stack: World, namespace: BrokerSettings, module_database: DatabaseSettings) -> None:
    async with Platform(namespace) as platform:
        row = await ensure_active(stack, platform, module_database, NAME_A, "cust-a")
        await platform.events(NAME_A)  # drain what making it active announced, if anything
        platform.heard.clear()
        before = await acme_counts(module_database, NAME_A)
        validations = pebble_validations(stack, NAME_A)
        needles = ('"certificate.certify"', f'"{NAME_A}"', '"already-certified"')
        seen = count_lines(stack.certifier.log_text(), *needles)

        # A redelivered domain.verified, and the platform asking for the domain again
        # (the verifier re-announces domain.verified for an active domain).
        await platform.publish(DomainVerified(domain=NAME_A, customer_id="cust-a",
                                              matched_by="cname", chain=[NAME_A, TRACKING_HOST]),
                               DOMAIN_VERIFIED)
        await platform.created(NAME_A, "cust-a")
        deadline = time.monotonic() + 15
        while count_lines(stack.certifier.log_text(), *needles) < seen + 2:
            assert time.monotonic() < deadline, "the certifier never handled both"
            await asyncio.sleep(0.05)

        assert await acme_counts(module_database, NAME_A) == before == {"order": 1,
                                                                         "certificate": 1}
        assert pebble_validations(stack, NAME_A) == validations
        after = await wait_row(module_database, NAME_A, lambda r: True, 1, "read")
        assert (after["status"], after["certificate_serial"]) == ("active",
                                                                  row["certificate_serial"])
        heard = {event.type for event in await platform.events(NAME_A, timeout_s=0.3)}
        assert heard == {DOMAIN_VERIFIED}  # the re-announcement; no certificate.issued


async def test_customer_b_link_on_customer_a_domain_is_refused_over_https(
        stack: World, namespace: BrokerSettings, module_database: DatabaseSettings,
        signer: LinkSigner) -> None:
    async with Platform(namespace) as platform:
        await ensure_active(stack, platform, module_database, NAME_A, "cust-a")
    context = stack.trusted_context()
    own = signer.mint_token(customer_id="cust-a", campaign_id="camp-2", recipient_id="r",
                            url=DESTINATION)
    status, _, _ = await asyncio.to_thread(
        first_redirect, stack.nginx.https_port, NAME_A, f"/t/{own}", context, 10)
    assert status == 302
    foreign = signer.mint_token(customer_id="cust-b", campaign_id="camp-9", recipient_id="r",
                                url=DESTINATION)
    status, headers, body = await asyncio.to_thread(
        https_get, stack.nginx.https_port, NAME_A, f"/t/{foreign}", context)
    assert status == 404 and "Location" not in headers and b"Link not found" in body
    await asyncio.sleep(0.5)  # a refused link is never logged as a click
    assert await fetch(module_database,
                       "SELECT 1 FROM tracking_logs WHERE customer_id = 'cust-b'") == []


async def test_wrong_cname_stays_pending_then_is_rejected_naming_the_wrong_target(
        stack: World, namespace: BrokerSettings, module_database: DatabaseSettings) -> None:
    async with Platform(namespace) as platform:
        started = time.monotonic()
        await platform.created(NAME_WRONG, "cust-w")
        # Not right yet: pending, saying what the name points to and what it should.
        pending = await wait_row(
            module_database, NAME_WRONG,
            lambda r: r["status"] == "pending" and (r["last_error"] or "").startswith(
                "wrong_target: "), DEADLINE_S - 0.5, "was pending with wrong_target")
        assert f"points to {WRONG_TARGET}" in pending["last_error"]
        assert f"should point to {TRACKING_HOST}" in pending["last_error"]
        assert pending["verified"] is False
        assert await platform.events(NAME_WRONG) == []  # nothing final before the deadline

        rejected = await wait_row(module_database, NAME_WRONG,
                                  lambda r: r["status"] == "rejected", DEADLINE_S + 10,
                                  "was rejected")
        elapsed = time.monotonic() - started
        assert elapsed >= DEADLINE_S - 0.2, f"rejected after {elapsed:.2f} s, before the deadline"
        assert rejected["last_error"].startswith("wrong_target: ")
        [event] = await platform.events(NAME_WRONG, wanted={DOMAIN_REJECTED}, timeout_s=5)
        assert (event.type, event.data.code, event.data.customer_id) == (
            DOMAIN_REJECTED, "wrong_target", "cust-w")
        assert WRONG_TARGET in event.data.reason and TRACKING_HOST in event.data.reason
        # Rechecked while pending (delayed messages), not judged once.
        assert stack.dns.query_count(NAME_WRONG, "CNAME") >= 3
        assert await acme_counts(module_database, NAME_WRONG) == {}


async def test_caa_forbidding_the_ca_is_rejected_before_any_order(
        stack: World, namespace: BrokerSettings, module_database: DatabaseSettings) -> None:
    async with Platform(namespace) as platform:
        await platform.created(NAME_CAA, "cust-c")
        pending = await wait_row(
            module_database, NAME_CAA,
            lambda r: r["status"] == "pending" and (r["last_error"] or "").startswith(
                "caa_forbids: "), DEADLINE_S - 0.5, "was pending with caa_forbids")
        assert "customer-c.test" in pending["last_error"]
        assert PEBBLE_CAA_IDENTITY in pending["last_error"]
        await wait_row(module_database, NAME_CAA, lambda r: r["status"] == "rejected",
                       DEADLINE_S + 10, "was rejected")
        events = await platform.events(NAME_CAA, wanted={DOMAIN_REJECTED}, timeout_s=5)
        assert [(e.type, e.data.code) for e in events] == [(DOMAIN_REJECTED, "caa_forbids")]
        assert 'issue "letsencrypt.org"' in events[0].data.reason

    # No order: the certifier never heard of it, certbot never ran for it, the CA saw
    # nothing (Debian's Pebble would have issued: it checks no CAA itself).
    assert await acme_counts(module_database, NAME_CAA) == {}
    assert NAME_CAA not in stack.certifier.log_text()
    assert not list(stack.certbot_dir.glob(f"logs/*{NAME_CAA}*"))
    assert not (stack.certbot_dir / "config" / "live" / NAME_CAA).exists()
    assert NAME_CAA not in stack.pebble_log()
