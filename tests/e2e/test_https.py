"""End to end over HTTPS: real Pebble (resolving through challtestsrv), certbot, nginx, and the
redirector, logger, certifier and edge agent processes. A verified domain gets a certificate
with no human step (the certifier stores it, the edge agent installs it in nginx), and its
links answer 302 over HTTPS with a chain that verifies to Pebble's root."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.databases import execute, fetch
from demo.net import free_port
from demo.nginx import Nginx
from demo.pebble import Pebble
from demo.processes import ServiceProcess
from shared.broker import topology as broker_topology
from shared.broker.publisher import Publisher
from shared.events import DomainVerified, Event, decode_message
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env
from tests.support.amqp import connected, get_messages

NAME = "track.customer-a.test"
ISSUE_DEADLINE_S = 30.0


def request(port: int, host: str, path: str, context: ssl.SSLContext | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """GET `path` from 127.0.0.1:`port` as `host` (SNI and Host), like curl --resolve."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=5)
        connection.sock = raw
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=5, context=context)
        connection.sock = context.wrap_socket(raw, server_hostname=host)
    try:
        connection.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (e2e)"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


async def wait_row(database: DatabaseSettings, query: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (await fetch(database, query)):
        assert time.monotonic() < deadline, f"never true: {query}"
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    pebble: Pebble
    nginx: Nginx
    challenges: Path
    redirector: ServiceProcess
    logger: ServiceProcess
    certifier: ServiceProcess
    edge: ServiceProcess


@contextmanager
def https_stack(broker: BrokerSettings, database: DatabaseSettings,
                tmp_path: Path) -> Iterator[Stack]:
    """Pebble + challtestsrv, nginx, and the redirector, logger, certifier and edge agent
    processes."""
    challenges = tmp_path / "challenges"
    redirector_port = free_port()
    upstream = f"127.0.0.1:{redirector_port}"
    nginx = Nginx(tmp_path / "nginx", upstreams=[upstream])
    # Pebble validates HTTP-01 through nginx's plain-HTTP port, as the CA would on port 80.
    with Pebble(tmp_path / "pebble", http_port=nginx.http_port) as pebble, nginx:
        common = service_env(broker, database, tmp_path, ACME_CHALLENGE_DIR=str(challenges))
        redirector_env = {**common, "REDIRECTOR_BIND": upstream,
                          "TRUSTED_PROXIES": "127.0.0.1", "DOMAIN_REFRESH_S": "0.2"}
        certifier_env = {
            **common, "ACME_DIRECTORY_URL": pebble.directory_url,
            "ACME_CA_BUNDLE": str(pebble.listener_ca), "ACME_EMAIL": "certs@platform.test",
            "CERTBOT_DIR": str(tmp_path / "certbot")}
        with ServiceProcess("redirector", redirector_env, tmp_path) as redirector, \
                ServiceProcess("logger", common, tmp_path) as logger, \
                ServiceProcess("certifier", certifier_env, tmp_path) as certifier, \
                ServiceProcess("edge", {**common, **nginx.edge_env()}, tmp_path) as edge:
            redirector.wait_http(f"http://{upstream}/healthz")
            logger.wait_for_log("logger.started")
            certifier.wait_for_log("certifier.started")
            edge.wait_for_log("edge.started")
            try:
                yield Stack(pebble, nginx, challenges, redirector, logger, certifier, edge)
            except BaseException:
                for process in (redirector, logger, certifier, edge):
                    print(f"----- {process.name} -----\n{process.log_text()[-3000:]}")
                print(f"----- nginx -----\n{nginx.log_text()[-2000:]}\n{pebble.logs()}")
                raise


async def test_verified_domain_serves_its_links_over_https_with_a_valid_chain(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
        link_keys: tuple[LinkKey, ...]) -> None:
    await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, verified) "
                            f"VALUES ('{NAME}', 'cust-a', 'verified', true)")
    with https_stack(broker, database, tmp_path) as stack:
        https, plain = stack.nginx.https_port, stack.nginx.http_port
        async with connected(broker.url) as amqp:
            # The platform's side: a queue for certificate.*, and domain.verified published.
            channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await broker_topology.declare(
                channel, broker_topology.Topology(broker.exchange))
            platform = await channel.declare_queue(exclusive=True, auto_delete=True)
            await platform.bind(exchange, "certificate.*")
            publisher = Publisher(channel, exchange, source="/tests/e2e")
            started = time.monotonic()
            await publisher.publish_event(DomainVerified(
                domain=NAME, customer_id="cust-a", matched_by="cname",
                chain=[NAME, TRACKING_HOST]))

            await wait_row(database, f"SELECT 1 FROM tracking_domains WHERE name = '{NAME}' "
                                     "AND status = 'active'", ISSUE_DEADLINE_S)
            active_s = time.monotonic() - started
            # certificate.issued (stored), then the edge agent's certificate.installed
            # (nginx presents it): the certifier itself touches no nginx.
            issued, installed = [
                event for message in await get_messages(channel, platform.name, 2, timeout_s=10)
                for event in decode_message(message.body, message.content_type)]
            assert isinstance(issued, Event) and isinstance(installed, Event)
            assert issued.type == "certificate.issued" and issued.data.domain == NAME
            assert installed.type == "certificate.installed"
            assert (installed.data.edge_id, installed.data.serial) == ("edge-1",
                                                                       issued.data.serial)

            root = tmp_path / "pebble-root.pem"
            root.write_text(stack.pebble.root_pem())
            trusted = ssl.create_default_context(cafile=str(root))
            signer = LinkSigner(link_keys)
            destination = "https://shop.example/spring?utm_source=mail"
            token = signer.mint_token(customer_id="cust-a", campaign_id="camp-1",
                                      recipient_id="rcpt-1", url=destination)
            # The redirector picks up the newly active domain within DOMAIN_REFRESH_S.
            deadline = time.monotonic() + 10
            while True:
                status, headers, _ = await asyncio.to_thread(
                    request, https, NAME, f"/t/{token}", trusted)
                if status == 302 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            first_302_s = time.monotonic() - started
            assert status == 302
            assert headers["Location"] == destination
            print(f"\ndomain.verified -> active {active_s:.2f} s, "
                  f"first HTTPS 302 {first_302_s:.2f} s")

            # The chain is Pebble's: without its root the handshake fails (curl's error 60).
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(request, https, NAME, f"/t/{token}",
                                        ssl.create_default_context())
            # A name we hold no certificate for: the handshake is refused.
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(request, https, "track.other.test", f"/t/{token}",
                                        trusted)

            # Customer B's link on customer A's domain: refused over HTTPS too.
            foreign = signer.mint_token(customer_id="cust-b", campaign_id="camp-9",
                                        recipient_id="r", url=destination)
            status, headers, _ = await asyncio.to_thread(
                request, https, NAME, f"/t/{foreign}", trusted)
            assert status == 404 and "Location" not in headers

            # Plain HTTP: redirected to HTTPS, except the ACME challenge path.
            status, headers, _ = await asyncio.to_thread(request, plain, NAME, f"/t/{token}")
            assert status == 301
            assert headers["Location"] == f"https://{NAME}:{https}/t/{token}"
            (stack.challenges / "e2e-token").write_text("e2e-token.thumbprint")
            status, _, body = await asyncio.to_thread(
                request, plain, NAME, "/.well-known/acme-challenge/e2e-token")
            assert (status, body) == (200, b"e2e-token.thumbprint")

            # The click became a row, with the client's address passed on by nginx.
            await wait_row(database, "SELECT 1 FROM tracking_logs", 15)
            rows = await fetch(database, "SELECT * FROM tracking_logs")
            assert len(rows) == 1
            assert (rows[0]["domain"], rows[0]["customer_id"], rows[0]["url"], rows[0]["ip"]) \
                == (NAME, "cust-a", destination, "127.0.0.1")

            # A second domain.verified issues nothing.
            await publisher.publish_event(DomainVerified(domain=NAME, customer_id="cust-a",
                                                         matched_by="cname"))
            await asyncio.to_thread(stack.certifier.wait_for_log, "already-certified")
            counts = await fetch(database, "SELECT kind, count(*) AS n FROM acme_events "
                                           "GROUP BY kind ORDER BY kind")
            assert [(r["kind"], r["n"]) for r in counts] == [("certificate", 1), ("order", 1)]
            assert await get_messages(channel, platform.name, 1, timeout_s=0.3) == []

        assert stack.certifier.terminate() == 0
        assert stack.edge.terminate() == 0
        assert stack.redirector.terminate() == 0
        assert stack.logger.terminate() == 0
