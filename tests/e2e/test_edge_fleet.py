"""A fleet on one machine: three edges (each its nginx, redirector and edge agent, sharing
no directory), one certifier with an empty certbot directory, Pebble, the test DNS server.

Pebble validates through edge B only (its HTTP port is edge B's: the name "resolves to
edge B"); the certifier answers the challenge from the database. Every edge serves the
certificate from the store, catches up after being down, and a fourth edge started
later serves everything at its first sync. One fleet (module scope) serves every test,
in order.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest

from demo.databases import DatabaseFactory, execute, fetch
from demo.dns import DnsServer
from demo.net import free_port
from demo.nginx import Nginx, certificate_directory, worker_group
from demo.pebble import Pebble
from demo.processes import ServiceProcess
from shared.broker import topology as broker_topology
from shared.broker.publisher import Publisher
from shared.events import DomainDeleted, DomainVerified, EventData
from shared.handshake import presented_serial
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env
from tests.e2e.test_https import request

A_NAME = "track.customer-a.test"
A2_NAME = "links.customer-a.test"
SERVED_WITHIN_S = 10.0  # "within seconds" of the certificate being stored


@dataclass
class Edge:
    """One edge: its nginx, its redirector and its agent (which may be stopped)."""

    edge_id: str
    nginx: Nginx
    redirector: ServiceProcess
    agent_env: dict[str, str]
    log_dir: Path
    agent: ServiceProcess | None = None

    def start_agent(self) -> None:
        self.agent = ServiceProcess("edge", self.agent_env, self.log_dir).start()
        self.agent.wait_for_log("edge.started", timeout_s=30)

    def stop_agent(self) -> None:
        assert self.agent is not None and self.agent.terminate() == 0
        self.agent = None

    async def serial(self, name: str) -> str | None:
        return await presented_serial("127.0.0.1", self.nginx.https_port, name)


@dataclass
class Fleet:
    broker: BrokerSettings
    database: DatabaseSettings
    pebble: Pebble
    edges: dict[str, Edge]
    certifier: ServiceProcess
    root: Path
    tmp: Path
    cleanup: list[Path] = field(default_factory=list)

    async def publish(self, data: EventData) -> None:
        async with await aio_pika.connect(self.broker.url) as connection:
            channel = await connection.channel()
            exchange = await broker_topology.declare(
                channel, broker_topology.Topology(self.broker.exchange))
            await Publisher(channel, exchange, source="/tests/fleet").publish_event(data)

    async def stored_serial(self, name: str) -> str | None:
        rows = await fetch(self.database,
                           f"SELECT serial FROM certificates WHERE name = '{name}'")
        return rows[0]["serial"] if rows else None

    async def wait_stored(self, name: str, other_than: str | None = None,
                          timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while (serial := await self.stored_serial(name)) in (None, other_than):
            assert time.monotonic() < deadline, f"{name}: nothing new stored\n" \
                f"{self.certifier.log_text()[-3000:]}"
            await asyncio.sleep(0.1)
        assert serial is not None
        return serial

    async def wait_served(self, edges: list[str], name: str, serial: str | None,
                          timeout_s: float = SERVED_WITHIN_S) -> float:
        started = time.monotonic()
        for edge_id in edges:
            while (seen := await self.edges[edge_id].serial(name)) != serial:
                assert time.monotonic() - started < timeout_s, \
                    f"edge {edge_id} presents {seen} for {name}, not {serial}"
                await asyncio.sleep(0.05)
        return time.monotonic() - started

    def add_edge(self, edge_id: str, http_port: int | None = None) -> Edge:
        cert_dir = certificate_directory(f"fleet-{edge_id}-")
        self.cleanup.append(cert_dir.parent)
        upstream = f"127.0.0.1:{free_port()}"
        nginx = Nginx(self.tmp / f"nginx-{edge_id}", upstreams=[upstream],
                      http_port=http_port, cert_dir=cert_dir).start()
        common = service_env(self.broker, self.database, self.tmp)
        redirector = ServiceProcess("redirector", {
            **common, "REDIRECTOR_BIND": upstream, "TRUSTED_PROXIES": "127.0.0.1",
            "DOMAIN_REFRESH_S": "0.2", "SPOOL_DIR": str(self.tmp / f"spool-{edge_id}")},
            self.tmp).start()
        redirector.wait_http(f"http://{upstream}/healthz")
        edge = Edge(edge_id, nginx, redirector, {
            **common, "EDGE_ID": edge_id, "EDGE_CERT_DIR": str(cert_dir),
            "EDGE_CERT_GROUP": worker_group() or "", "NGINX_CONF_PATH": str(nginx.include),
            "NGINX_HTTPS_LISTEN": nginx.https_listen, "NGINX_HTTP_LISTEN": nginx.http_listen,
            "NGINX_UPSTREAMS": upstream}, self.tmp)
        edge.start_agent()
        self.edges[edge_id] = edge
        return edge

    def stop(self) -> None:
        for edge in self.edges.values():
            if edge.agent is not None:
                edge.agent.terminate()
            edge.redirector.terminate()
            edge.nginx.stop()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(database_factory: DatabaseFactory, amqp_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    database = asyncio.run(database_factory.create())
    broker = BrokerSettings(url=amqp_url, exchange=f"test-{uuid.uuid4().hex[:10]}")
    asyncio.run(execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                                  "verified) VALUES ($1, 'cust-a', 'verified', true), "
                                  "($2, 'cust-a', 'verified', true)", A_NAME, A2_NAME))
    fleet: Fleet | None = None
    with DnsServer() as dns:
        for name in (A_NAME, A2_NAME):
            dns.a(name, "127.0.0.1")
        # The CA reaches every name at 127.0.0.1 on edge B's plain-HTTP port: edge B only.
        edge_b_http = free_port()
        with Pebble(tmp / "pebble", http_port=edge_b_http, dns_server=dns.address) as pebble:
            root = tmp / "pebble-root.pem"
            root.write_text(pebble.root_pem())
            certifier = ServiceProcess("certifier", {
                **service_env(broker, database, tmp),
                "ACME_DIRECTORY_URL": pebble.directory_url,
                "ACME_CA_BUNDLE": str(pebble.listener_ca), "ACME_EMAIL": "certs@platform.test",
                "CERTBOT_DIR": str(tmp / "certbot-empty"), "CERTIFIER_RENEW_CHECK_S": "1",
                "CERTIFIER_RETRY_DELAYS_MS": "200,500,1000"}, tmp).start()
            logger = ServiceProcess("logger", service_env(broker, database, tmp), tmp).start()
            try:
                certifier.wait_for_log("certifier.started")
                logger.wait_for_log("logger.started")
                fleet = Fleet(broker, database, pebble, {}, certifier, root, tmp)
                fleet.add_edge("edge-a")
                fleet.add_edge("edge-b", http_port=edge_b_http)
                fleet.add_edge("edge-c")
                yield fleet
            finally:
                if fleet is not None:
                    fleet.stop()
                certifier.terminate()
                logger.terminate()
    asyncio.run(delete_namespace(broker))
    asyncio.run(database_factory.drop(database))


async def delete_namespace(broker: BrokerSettings) -> None:
    topology = broker_topology.Topology(broker.exchange)
    async with await aio_pika.connect(broker.url) as connection:
        channel = await connection.channel()
        for edge_id in ("edge-a", "edge-b", "edge-c", "edge-d"):
            for queue in broker_topology.edge_queue_names(topology, edge_id):
                await channel.queue_delete(queue)
        await broker_topology.delete(channel, topology)


def trusted(fleet: Fleet) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(fleet.root))


async def click(fleet: Fleet, edge: Edge, name: str, token: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = await asyncio.to_thread(
        request, edge.nginx.https_port, name, f"/t/{token}", trusted(fleet))
    return status, headers


async def test_issued_once_served_by_every_edge_and_every_click_is_a_row(
        fleet: Fleet, link_keys: tuple[LinkKey, ...]) -> None:
    await fleet.publish(DomainVerified(domain=A_NAME, customer_id="cust-a",
                                       matched_by="cname", chain=[A_NAME, TRACKING_HOST]))
    serial = await fleet.wait_stored(A_NAME)
    await fleet.wait_served(["edge-a", "edge-b", "edge-c"], A_NAME, serial)
    # (Pebble could only reach edge B, whose redirector answered from the database.)

    signer = LinkSigner(link_keys)
    destination = "https://shop.example/spring"
    own = signer.mint_token(customer_id="cust-a", campaign_id="fleet", recipient_id="r",
                            url=destination)
    foreign = signer.mint_token(customer_id="cust-b", campaign_id="fleet", recipient_id="r",
                                url=destination)
    for edge in fleet.edges.values():
        # The chain verifies to Pebble's root on every edge; the redirector may take
        # DOMAIN_REFRESH_S to see the domain active.
        deadline = time.monotonic() + 10
        while (answer := await click(fleet, edge, A_NAME, own))[0] != 302:
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.1)
        assert answer[1]["Location"] == destination
        status, headers = await click(fleet, edge, A_NAME, foreign)
        assert status == 404 and "Location" not in headers
    deadline = time.monotonic() + 15
    while len(rows := await fetch(fleet.database, "SELECT domain, customer_id FROM "
                                  "tracking_logs")) < len(fleet.edges):
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.1)
    assert [(r["domain"], r["customer_id"]) for r in rows] == [(A_NAME, "cust-a")] * 3
    # Each edge says what it serves: certificate.installed's rows.
    served = await fetch(fleet.database, "SELECT edge_id, serial FROM edge_certificates "
                                         "WHERE domain = $1 ORDER BY edge_id", A_NAME)
    assert [(r["edge_id"], r["serial"]) for r in served] == \
        [("edge-a", serial), ("edge-b", serial), ("edge-c", serial)]


async def test_an_edge_down_during_an_issuance_and_a_renewal_catches_up_in_seconds(
        fleet: Fleet) -> None:
    old = await fleet.wait_stored(A_NAME)
    edge_c = fleet.edges["edge-c"]
    edge_c.stop_agent()
    # An issuance and a renewal while edge C's agent is down.
    await fleet.publish(DomainVerified(domain=A2_NAME, customer_id="cust-a",
                                       matched_by="cname"))
    issued = await fleet.wait_stored(A2_NAME)
    await execute(fleet.database, "UPDATE tracking_domains SET certificate_renew_at = $1 "
                                  "WHERE name = $2", datetime.now(UTC) - timedelta(minutes=1),
                  A_NAME)
    renewed = await fleet.wait_stored(A_NAME, other_than=old)
    await fleet.wait_served(["edge-a", "edge-b"], A2_NAME, issued)
    await fleet.wait_served(["edge-a", "edge-b"], A_NAME, renewed)
    assert await edge_c.serial(A_NAME) == old and await edge_c.serial(A2_NAME) is None

    started = time.monotonic()
    edge_c.start_agent()
    await fleet.wait_served(["edge-c"], A2_NAME, issued)
    await fleet.wait_served(["edge-c"], A_NAME, renewed)
    print(f"\nedge C, restarted, serves both new serials after {time.monotonic() - started:.2f} s")


async def test_a_fourth_edge_started_later_serves_every_certificate(fleet: Fleet) -> None:
    serials = {name: await fleet.wait_stored(name) for name in (A_NAME, A2_NAME)}
    fleet.add_edge("edge-d")  # returns once its first sync is done
    for name, serial in serials.items():
        assert await fleet.edges["edge-d"].serial(name) == serial


async def test_a_deleted_domain_disappears_from_every_edge(fleet: Fleet) -> None:
    serial = await fleet.wait_stored(A2_NAME)
    await fleet.wait_served(list(fleet.edges), A2_NAME, serial)
    await fleet.publish(DomainDeleted(domain=A2_NAME, customer_id="cust-a"))
    await fleet.wait_served(list(fleet.edges), A2_NAME, None)
    deadline = time.monotonic() + 10  # the certifier forgets it too, at its own pace
    while await fleet.stored_serial(A2_NAME) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert await fetch(fleet.database, "SELECT 1 FROM edge_certificates WHERE domain = $1",
                       A2_NAME) == []
