"""End to end: the real verifier process, a DNS server the test controls, the real broker
and database. `domain.created` goes in through the exchange; rows and events come out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec

from demo.databases import fetch
from demo.dns import DnsServer
from demo.processes import ServiceProcess
from shared.broker.names import DOMAIN_CREATED, DOMAIN_REJECTED, DOMAIN_VERIFIED
from shared.broker.topology import Topology
from shared.events import DomainCreated, encode_event
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST, service_env
from tests.support.amqp import message, observing

FAST_DELAYS_MS = (200, 400)


async def wait_row(database: DatabaseSettings, name: str, status: str,
                   timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    rows: list[Any] = []
    while time.monotonic() < deadline:
        rows = await fetch(database, "SELECT * FROM tracking_domains WHERE name = $1", name)
        if rows and rows[0]["status"] == status:
            return dict(rows[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became {status}: {[dict(r) for r in rows]}")


async def test_the_verifier_process_verifies_rechecks_and_rejects(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    topology = Topology(broker.exchange, retry_delays_ms=FAST_DELAYS_MS)
    with DnsServer() as dns:
        dns.a(TRACKING_HOST, "127.0.0.1")
        dns.cname("track.customer-a.test", TRACKING_HOST)
        dns.cname("track.customer-b.test", "click.other-esp.test")  # fixed later
        env = service_env(broker, database, tmp_path, DNS_NAMESERVERS=dns.address,
                          DNS_TIMEOUT_S="1", VERIFIER_RETRY_DELAYS_MS="200,400",
                          VERIFIER_SCHEDULE_POLL_S="0.2")
        async with observing(broker.url, topology, DOMAIN_VERIFIED,
                             DOMAIN_REJECTED) as (exchange, observed):
            with ServiceProcess("verifier", env, tmp_path) as verifier:
                await asyncio.to_thread(verifier.wait_for_log, "verifier.started")
                for domain, customer in (("Track.Customer-A.test", "cust-a"),
                                         ("track.customer-b.test", "cust-b"),
                                         ("*.customer-c.test", "cust-c")):
                    body = encode_event(DomainCreated(domain=domain, customer_id=customer),
                                        source="/tests/platform")
                    await exchange.publish(message(body), routing_key=DOMAIN_CREATED,
                                           mandatory=True)

                row = await wait_row(database, "track.customer-a.test", "verified")
                assert row["verified"] and row["matched_by"] == "cname"
                assert row["dns_chain"] == f"track.customer-a.test -> {TRACKING_HOST}"

                pending = await wait_row(database, "track.customer-b.test", "pending")
                deadline = time.monotonic() + 10
                while not (pending["last_error"] or "").startswith("wrong_target"):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                    pending = await wait_row(database, "track.customer-b.test", "pending")
                assert "click.other-esp.test" in pending["last_error"]
                assert TRACKING_HOST in pending["last_error"]
                dns.cname("track.customer-b.test", TRACKING_HOST)
                await wait_row(database, "track.customer-b.test", "verified")

                events: dict[str, dict[str, Any]] = {}
                deadline = time.monotonic() + 10
                while len(events) < 3 and time.monotonic() < deadline:
                    got = await observed.get(no_ack=True, fail=False)
                    if got is None:
                        await asyncio.sleep(0.05)
                        continue
                    decoded = msgspec.json.decode(got.body)
                    events[decoded["data"]["customer_id"]] = decoded
                assert events["cust-a"]["type"] == "domain.verified"
                assert events["cust-a"]["data"]["chain"] == ["track.customer-a.test",
                                                            TRACKING_HOST]
                assert events["cust-b"]["type"] == "domain.verified"
                assert events["cust-c"]["type"] == "domain.rejected"
                assert events["cust-c"]["data"]["code"] == "invalid_name"
                assert verifier.terminate() == 0
            assert "verifier.stopped" in verifier.log_text()
