"""End to end: the real verifier process watches blocklists. A domain that is listed
when it is first verified is announced (`domain.listed`) within a pass, and shows in
/metrics and in `trackctl reputation`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from demo.blocklists import ListZones
from demo.databases import fetch
from demo.dns import DnsServer
from demo.net import free_port
from demo.processes import ROOT, ServiceProcess
from shared.broker.names import DOMAIN_CREATED, DOMAIN_LISTED
from shared.broker.topology import Topology
from shared.events import DomainCreated, encode_event
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST, service_env
from tests.support.amqp import decoded_messages, message, observing

NAME = "track.customer-a.test"


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as got:
        return str(got.read().decode())


def trackctl_reputation(database: DatabaseSettings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "trackctl"), "reputation", "--json"],
        env={**os.environ, "DATABASE_URL": database.url}, cwd=ROOT, capture_output=True,
        text=True, timeout=60)


async def test_a_domain_listed_at_verification_is_announced_and_shown(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    topology = Topology(broker.exchange, retry_delays_ms=(200, 400))
    metrics = f"127.0.0.1:{free_port()}"
    with DnsServer() as dns:
        dns.a(TRACKING_HOST, "127.0.0.1")
        dns.cname(NAME, TRACKING_HOST)
        zones = ListZones(dns, ttl=0)
        zones.list("dbl", NAME, "phishing")
        env = service_env(broker, database, tmp_path, DNS_NAMESERVERS=dns.address,
                          DNS_TIMEOUT_S="1", VERIFIER_RETRY_DELAYS_MS="200,400",
                          REPUTATION_LISTS=zones.setting, REPUTATION_NAMESERVERS=dns.address,
                          REPUTATION_POLL_S="0.2", REPUTATION_TIMEOUT_S="0.5",
                          METRICS_BIND=metrics)
        async with observing(broker.url, topology, DOMAIN_LISTED) as (exchange, observed):
            with ServiceProcess("verifier", env, tmp_path) as verifier:
                await asyncio.to_thread(verifier.wait_for_log, "verifier.started")
                body = encode_event(DomainCreated(domain=NAME, customer_id="cust-a"),
                                    source="/tests/platform")
                await exchange.publish(message(body), routing_key=DOMAIN_CREATED,
                                       mandatory=True)
                [listed] = await decoded_messages(observed, 1, timeout_s=15)
                assert listed["type"] == "domain.listed"
                assert listed["data"]["domain"] == NAME
                assert listed["data"]["categories"] == ["phishing"]
                # The watch announces a change before it records it (a refused publish is
                # never recorded, so it is tried again): the row follows the event.
                deadline = time.monotonic() + 10
                while True:
                    rows = await fetch(database, "SELECT blocklist, status FROM domain_reputation"
                                                 " WHERE name = $1", NAME)
                    statuses = {r["blocklist"]: r["status"] for r in rows}
                    if statuses.get("dbl") == "listed":
                        break
                    assert time.monotonic() < deadline, statuses
                    await asyncio.sleep(0.1)

                deadline = time.monotonic() + 10
                while True:
                    text = await asyncio.to_thread(scrape, metrics)
                    if 'tracking_reputation_listed{category="phishing",list="dbl"} 1.0' in text:
                        break
                    assert time.monotonic() < deadline, text
                    await asyncio.sleep(0.2)
                assert 'tracking_reputation_list_unusable{list="dbl"} 0.0' in text

                shown = await asyncio.to_thread(trackctl_reputation, database)
                assert shown.returncode == 0, shown.stderr
                assert [r["name"] for r in json.loads(shown.stdout)["listed"]] == [NAME]
                assert verifier.terminate() == 0
            assert "reputation.pass" in verifier.log_text()
