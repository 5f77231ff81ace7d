"""End to end: clicks served by the real redirector reach the real verifier's destination
watch, which asks a DBL zone on a DNS server the test controls. A click to a listed
destination yields one `destination.listed`; a second click to it, and a click to a clean
destination, none."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from demo.blocklists import ListZones
from demo.databases import fetch
from demo.dns import DnsServer
from demo.net import free_port, https_get
from demo.processes import ServiceProcess, count_lines
from shared.broker.names import DESTINATION_LISTED
from shared.broker.topology import Topology
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env
from tests.support.amqp import assert_no_more, decoded_messages, observing


def handled(verifier: ServiceProcess) -> int:
    """Click messages the verifier's destination watch has handled so far."""
    return count_lines(verifier.log_text(), '"message.handled"', ".verifier.destinations")


async def checked(database: DatabaseSettings, count: int, timeout_s: float = 20.0) -> None:
    """Until `destination_checks` holds `count` verdicts."""
    deadline = time.monotonic() + timeout_s
    while (await fetch(database, "SELECT count(*) AS n FROM destination_checks"))[0]["n"] < count:
        assert time.monotonic() < deadline, "the watch never stored its verdicts"
        await asyncio.sleep(0.1)


async def test_a_click_to_a_listed_destination_tells_its_customer_once(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
        link_keys: tuple[LinkKey, ...]) -> None:
    port = free_port()
    signer = LinkSigner(link_keys)

    def click(campaign: str, recipient: str, url: str) -> None:
        token = signer.mint_token(customer_id="cust-a", campaign_id=campaign,
                                  recipient_id=recipient, url=url)
        status, headers, _ = https_get(port, TRACKING_HOST, f"/t/{token}")
        assert (status, headers.get("Location")) == (302, url)

    with DnsServer() as dns:
        zones = ListZones(dns)
        zones.list("dbl", "phish.test", "phishing")
        env = service_env(broker, database, tmp_path, REDIRECTOR_BIND=f"127.0.0.1:{port}",
                          DNS_NAMESERVERS=dns.address, REPUTATION_LISTS=zones.setting,
                          REPUTATION_NAMESERVERS=dns.address, CLICK_LINGER_MS="5")
        async with observing(broker.url, Topology(broker.exchange),
                             DESTINATION_LISTED) as (_exchange, observed):
            with ServiceProcess("verifier", env, tmp_path) as verifier, \
                    ServiceProcess("redirector", env, tmp_path) as redirector:
                await asyncio.to_thread(verifier.wait_for_log, "verifier.started")
                assert '"destination_watch": "dbl.test"' in verifier.log_text()
                await asyncio.to_thread(redirector.wait_http,
                                        f"http://127.0.0.1:{port}/healthz")
                await asyncio.to_thread(click, "spring", "r1", "https://www.phish.test/login")
                await asyncio.to_thread(click, "spring", "r2", "https://fine.test/sale")
                events = await decoded_messages(observed, 1, timeout_s=20)
                assert len(events) == 1, verifier.log_text()[-3000:]
                assert events[0]["type"] == DESTINATION_LISTED
                assert events[0]["data"] == {
                    "customer_id": "cust-a", "campaign_id": "spring",
                    "destination": "phish.test", "blocklist": "dbl",
                    "fix_url": "https://check.spamhaus.org/", "categories": ["phishing"]}
                await assert_no_more(observed, 1.0)
                await checked(database, 2)

                # A second click to it (another campaign), and the clean one again: nothing.
                before = handled(verifier)
                await asyncio.to_thread(click, "autumn", "r3", "https://phish.test/again")
                await asyncio.to_thread(click, "autumn", "r4", "https://fine.test/")
                deadline = time.monotonic() + 15
                while handled(verifier) == before:  # the watch has read them
                    assert time.monotonic() < deadline, "the watch never read the clicks"
                    await asyncio.sleep(0.05)
                await assert_no_more(observed, 1.0)
                assert dns.queries[(zones.qname("dbl", "phish.test"), "A")] == 1
