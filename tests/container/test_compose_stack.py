"""The images built and compose.yaml run for real, through the containers only.

scripts/images builds the project image (bases made from Debian packages: no registry);
the real compose.yaml runs host-networked (tests/container/stack.py says exactly what
that changes) against the machine's RabbitMQ and PostgreSQL, in a vhost and a database
of its own. A DNS server and Pebble run on the host, as in the end-to-end tests. Proved:
migrations ran as the one-shot service and every long-running service is healthy;
`domain.created` ends with an HTTPS 302 served by the nginx container with a chain that
verifies to Pebble's root, and the click becomes a row; stopping the redirector while
clicks flow (its broker link cut, so clicks wait in the spool volume) loses none and
`up` catches up; `down -v` leaves nothing behind.

The stack is started once for the module; the tests run in order and each states what
it needs. Every wait is bounded; the whole module takes about a minute or two here.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest
import yaml

from demo.dns import DnsServer
from demo.net import first_redirect, https_get, listening
from demo.pebble import Pebble
from demo.scratch import admin_execute, fetch, settings_for
from shared.broker.names import DOMAIN_CREATED
from shared.db.migrate import alembic_config
from shared.events import DomainCreated, encode_event
from shared.links import LinkSigner
from shared.settings import DatabaseSettings, LinkKey
from tests.conftest import TEST_CERT_STORE_KEYS, TEST_LINK_KEYS, TRACKING_HOST
from tests.container.conftest import CALL_FAILED, TIMES
from tests.container.stack import (
    APP_IMAGE,
    APP_SERVICES,
    DOCKER,
    LONG_RUNNING,
    NGINX_BASE_IMAGE,
    PYTHON_BASE_IMAGE,
    ROOT,
    ComposeError,
    Ports,
    Project,
    host_networked,
    is_loopback,
    merged,
    nginx_conf_on,
    nginx_worker_gid,
    override,
    run,
)
from tests.fault.harness import RowCounts, amqp_target, amqp_via, assert_exactly_once
from tests.support.amqp import message
from tests.support.proxy import TcpProxy

NAME = "track.customer-a.test"
CUSTOMER = "cust-a"
DESTINATION = "https://shop.example/spring?utm_source=mail"
IMAGES_TIMEOUT_S = 900  # a first build on a clean machine; a cached one takes seconds
HEALTHY_TIMEOUT_S = 120


@dataclass
class Stack:
    """The running project and the host-side world around it."""

    project: Project
    ports: Ports
    database: DatabaseSettings
    amqp_url: str  # the project's vhost, for the platform's side
    dns: DnsServer
    pebble: Pebble
    root: Path  # Pebble's root of this run
    redirector_broker: TcpProxy  # the redirector's (and only its) way to RabbitMQ
    times: dict[str, float] = field(default_factory=dict)
    down_done: bool = False

    def trusted(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root))


def _rabbitmqctl(*args: str) -> None:
    run(["rabbitmqctl", "-q", *args], timeout_s=60)


def _vhost_url(amqp_url: str, vhost: str) -> str:
    base = amqp_url.rstrip("/")
    assert base.count("/") == 2, f"TEST_AMQP_URL names a vhost already: {amqp_url}"
    return f"{base}/{vhost}"


def _ensure_images() -> float:
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "images")], cwd=ROOT, capture_output=True,
                            text=True, timeout=IMAGES_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise ComposeError(f"scripts/images failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    print(result.stderr.strip())
    return time.monotonic() - started


def test_the_images_build_without_a_registry() -> None:
    """scripts/images: the engine answers, the bases and the project image exist."""
    _ensure_images()
    for image in (PYTHON_BASE_IMAGE, NGINX_BASE_IMAGE, APP_IMAGE):
        run([DOCKER, "image", "inspect", image])


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory,
          pytestconfig: pytest.Config) -> Iterator[Stack]:
    started = time.monotonic()
    times = pytestconfig.stash.setdefault(TIMES, {})
    try:
        yield from _stack(amqp_url, pg_admin_url, tmp_path_factory.mktemp("compose"), times)
    finally:
        times["stack fixture, images to down"] = time.monotonic() - started


def _stack(amqp_url: str, pg_admin_url: str, directory: Path,
           times: dict[str, float]) -> Iterator[Stack]:
    times["images"] = _ensure_images()
    for url in (amqp_url, pg_admin_url):
        assert "@127.0.0.1:" in url, f"host-networked containers reach 127.0.0.1 only: {url}"
    suffix = uuid.uuid4().hex[:10]
    vhost, database_name, project_name = f"test-{suffix}", f"td_test_{suffix}", f"tdtest{suffix}"
    database = settings_for(pg_admin_url, database_name)
    vhost_url = _vhost_url(amqp_url, vhost)
    ports = Ports.pick()
    with ExitStack() as cleanup:  # unwound in reverse: down first, the database last
        asyncio.run(admin_execute(pg_admin_url, f'CREATE DATABASE "{database_name}"'))  # empty
        cleanup.callback(lambda: asyncio.run(admin_execute(
            pg_admin_url, f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')))
        _rabbitmqctl("add_vhost", vhost)
        cleanup.callback(_rabbitmqctl, "delete_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        dns = cleanup.enter_context(DnsServer())
        dns.a(TRACKING_HOST, "127.0.0.1")
        dns.cname(NAME, TRACKING_HOST)
        proxy = TcpProxy(*amqp_target(amqp_url)).start()
        cleanup.callback(proxy.stop)
        # Pebble validates HTTP-01 on the nginx container's plain-HTTP port.
        pebble = cleanup.enter_context(Pebble(directory / "pebble", http_port=ports.nginx_http,
                                              dns_server=dns.address))
        root = directory / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        nginx_conf = directory / "nginx.conf"
        nginx_conf.write_text(nginx_conf_on(ports.nginx_status))
        amqp_urls = dict.fromkeys(APP_SERVICES, vhost_url)
        amqp_urls["redirector"] = amqp_via(vhost_url, proxy)
        override_file = directory / "compose.override.yaml"
        override_file.write_text(yaml.safe_dump(override(
            ports, amqp_urls=amqp_urls, database_url=database.url,
            acme_ca=pebble.listener_ca, nginx_conf=nginx_conf, nginx_gid=nginx_worker_gid())))
        variables = {
            "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": TEST_LINK_KEYS,
            "CERT_STORE_KEYS": TEST_CERT_STORE_KEYS,
            "ACME_DIRECTORY_URL": pebble.directory_url, "ACME_EMAIL": "certs@platform.test",
            "DNS_NAMESERVERS": dns.address, "TRUSTED_PROXIES": "127.0.0.1", "LOG_LEVEL": "INFO",
            # The blocklist watch off: its defaults are the real lists.
            "REPUTATION_LISTS": ""}
        project = Project(project_name, directory,
                          host_networked(merged(project_name, override_file, variables)),
                          variables)
        running = Stack(project=project, ports=ports, database=database, amqp_url=vhost_url,
                        dns=dns, pebble=pebble, root=root, redirector_broker=proxy,
                        times=times)
        busy = [port for port in ports.all() if listening(port)]
        assert not busy, f"ports taken before the stack started: {busy}"

        def down_unless_done() -> None:
            if not running.down_done:  # the last test proves `down -v` itself
                project.down()

        cleanup.callback(down_unless_done)
        started = time.monotonic()
        project.compose("up", "-d", "--no-build", timeout_s=HEALTHY_TIMEOUT_S)
        times["compose up returned"] = time.monotonic() - started
        project.wait_healthy(LONG_RUNNING, HEALTHY_TIMEOUT_S)
        times["up to all healthy"] = time.monotonic() - started
        yield running


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.stash.get(CALL_FAILED, False) and "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        if not stack.down_done:
            print(stack.project.logs())


@pytest.fixture
def signer(link_keys: tuple[LinkKey, ...]) -> LinkSigner:
    return LinkSigner(link_keys)


# --- helpers ---------------------------------------------------------------------------------

async def _publish_created(amqp_url: str, domain: str, customer_id: str) -> None:
    """The platform's `domain.created`, on the exchange the containers declared."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("tracking")  # compose sets no AMQP_EXCHANGE
        body = encode_event(DomainCreated(domain=domain, customer_id=customer_id),
                            source="/tests/container")
        await exchange.publish(message(body), routing_key=DOMAIN_CREATED, mandatory=True)


async def _wait_query(database: DatabaseSettings, query: str, timeout_s: float,
                      what: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while not (rows := await fetch(database, query)):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        await asyncio.sleep(0.1)
    return [dict(row) for row in rows]


async def _ensure_active(stack: Stack) -> None:
    rows = await fetch(stack.database,
                       f"SELECT status FROM tracking_domains WHERE name = '{NAME}'")
    if not rows:
        await _publish_created(stack.amqp_url, NAME, CUSTOMER)
    await _wait_query(stack.database, f"SELECT 1 FROM tracking_domains WHERE name = '{NAME}' "
                                      "AND status = 'active'", 60, f"{NAME} active")


def _assert_loopback_only(stack: Stack) -> None:
    peers = stack.project.peers()
    assert peers, "no connection found: the check would prove nothing"
    assert all(is_loopback(address) for address in peers), (
        f"a container talks to more than loopback: {sorted(peers)}")


def _log_events(text: str, event: str) -> list[dict[str, object]]:
    """The JSON log lines of one event, from `docker-compose logs` output."""
    found = []
    for line in text.splitlines():
        if f'"{event}"' in line and "{" in line:
            found.append(json.loads(line[line.index("{"):]))
    return found


# --- a. migrations, health ---------------------------------------------------------------------

async def test_migrations_ran_as_the_one_shot_and_every_service_is_healthy(
        stack: Stack) -> None:
    states = stack.project.states()
    [migrate] = states["migrate"]
    assert (migrate["Status"], migrate["ExitCode"]) == ("exited", 0)
    [prepare] = states["prepare-volumes"]
    assert (prepare["Status"], prepare["ExitCode"]) == ("exited", 0)
    # The database was created empty: the one-shot brought it to this release's head.
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    [row] = await fetch(stack.database, "SELECT version_num FROM alembic_version")
    assert row["version_num"] == head
    assert f"is at revision {head}" in stack.project.logs("migrate", lines=200)
    for name in LONG_RUNNING:
        [state] = states[name]
        assert state["Running"] and state["Health"]["Status"] == "healthy", (name, state)
    # Each healthcheck asked the port the service was given, not a fixed one.
    for name in APP_SERVICES:
        assert listening(stack.ports.metrics[name]), name
    assert listening(stack.ports.redirector) and listening(stack.ports.nginx_status)


# --- b. domain.created -> HTTPS 302 from the nginx container -> a row ----------------------------

async def test_domain_created_ends_in_a_trusted_https_302_from_nginx_and_a_row(
        stack: Stack, signer: LinkSigner) -> None:
    https = stack.ports.nginx_https
    started = time.monotonic()
    await _publish_created(stack.amqp_url, NAME, CUSTOMER)
    [row] = await _wait_query(stack.database, "SELECT * FROM tracking_domains WHERE name = "
                              f"'{NAME}' AND status = 'active'", 60, f"{NAME} active")
    assert row["verified"] is True and row["certificate_serial"]
    token = signer.mint_token(customer_id=CUSTOMER, campaign_id="camp-1",
                              recipient_id="rcpt-1", url=DESTINATION)
    status, headers, _ = await asyncio.to_thread(
        first_redirect, https, NAME, f"/t/{token}", stack.trusted(), 20)
    assert status == 302 and headers["Location"] == DESTINATION
    stack.times["domain.created to HTTPS 302"] = time.monotonic() - started
    # The chain verified to Pebble's root above; without that root it does not verify.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(https_get, https, NAME, f"/t/{token}",
                                ssl.create_default_context())
    # Only the nginx container serves that port: stopping it closes it.
    stack.project.compose("stop", "nginx")
    assert not listening(https)
    stack.project.compose("start", "nginx")
    stack.project.wait_healthy(["nginx"], 60)
    again = signer.mint_token(customer_id=CUSTOMER, campaign_id="camp-1",
                              recipient_id="rcpt-2", url=DESTINATION)
    status, _, _ = await asyncio.to_thread(
        first_redirect, https, NAME, f"/t/{again}", stack.trusted(), 20)
    assert status == 302

    clicks = await _wait_query(stack.database, "SELECT * FROM tracking_logs WHERE "
                               "campaign_id = 'camp-1' AND (SELECT count(*) FROM "
                               "tracking_logs WHERE campaign_id = 'camp-1') >= 2", 30,
                               "both clicks' rows")
    assert sorted((c["recipient_id"], c["domain"], c["customer_id"], c["url"], c["ip"])
                  for c in clicks) == [
        (recipient, NAME, CUSTOMER, DESTINATION, "127.0.0.1")
        for recipient in ("rcpt-1", "rcpt-2")]
    _assert_loopback_only(stack)


# --- c. the redirector stopped while clicks flow ------------------------------------------

async def _flow_rows(database: DatabaseSettings) -> RowCounts:
    rows = await fetch(database, "SELECT event_id, recipient_id FROM tracking_logs "
                                 "WHERE campaign_id = 'camp-flow'")
    return RowCounts(rows=len(rows), event_ids=len({row["event_id"] for row in rows}),
                     recipients=Counter(row["recipient_id"] for row in rows))


class Clicker(threading.Thread):
    """Clicks one new link at a time over HTTPS through nginx until stopped (bounded)."""

    def __init__(self, stack: Stack, signer: LinkSigner, max_s: float = 150.0) -> None:
        super().__init__(daemon=True, name="clicker")
        self.stack, self.signer, self.max_s = stack, signer, max_s
        self.outcomes: list[tuple[str, int | None, float]] = []  # recipient, status, when
        self.halt = threading.Event()

    def run(self) -> None:
        context = self.stack.trusted()
        deadline = time.monotonic() + self.max_s
        number = 0
        while not self.halt.is_set() and time.monotonic() < deadline:
            recipient = f"flow-{number}"
            token = self.signer.mint_token(customer_id=CUSTOMER, campaign_id="camp-flow",
                                           recipient_id=recipient, url=DESTINATION)
            try:
                status: int | None = https_get(self.stack.ports.nginx_https, NAME,
                                               f"/t/{token}", context, timeout_s=5)[0]
            except (OSError, ssl.SSLError):
                status = None
            self.outcomes.append((recipient, status, time.monotonic()))
            number += 1
            self.halt.wait(0.05)

    def served_since(self, moment: float) -> int:
        return sum(1 for _, status, when in list(self.outcomes)
                   if status == 302 and when >= moment)

    def wait_served(self, count: int, since: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.served_since(since) < count:
            assert self.is_alive(), "the clicker stopped"
            assert time.monotonic() < deadline, (
                f"fewer than {count} clicks served within {timeout_s} s: "
                f"{[status for _, status, _ in self.outcomes[-10:]]}")
            time.sleep(0.1)


async def test_stopping_the_redirector_while_clicks_flow_loses_none(
        stack: Stack, signer: LinkSigner) -> None:
    await _ensure_active(stack)
    project, proxy = stack.project, stack.redirector_broker
    clicker = Clicker(stack, signer)
    clicker.start()
    try:
        await asyncio.to_thread(clicker.wait_served, 20, 0.0, 30)
        # The redirector's broker link is cut: what it answers now waits in the spool.
        proxy.cut()
        cut_at = time.monotonic()
        await asyncio.to_thread(clicker.wait_served, 20, cut_at, 30)
        started = time.monotonic()
        # SIGTERM: it stops accepting, tries to publish for DRAIN_TIMEOUT_S, exits; nginx
        # answers 502 meanwhile. The container is removed: only the volume keeps the spool.
        await asyncio.to_thread(project.compose, "stop", "redirector")
        stack.times["redirector stop"] = time.monotonic() - started
        stopped = _log_events(project.logs("redirector", lines=200), "redirector.stopped")
        await asyncio.to_thread(project.compose, "rm", "-f", "redirector")
        assert stopped and stopped[-1]["drained"] is False, stopped
        assert int(stopped[-1]["left_in_spool_bytes"]) > 0  # type: ignore[call-overload]
        proxy.restore()

        started = time.monotonic()
        await asyncio.to_thread(project.compose, "up", "-d", "--no-build")
        await asyncio.to_thread(project.wait_healthy, LONG_RUNNING, HEALTHY_TIMEOUT_S)
        stack.times["up again to healthy"] = time.monotonic() - started
        await asyncio.to_thread(clicker.wait_served, 20, time.monotonic(), 30)
    finally:
        clicker.halt.set()
        await asyncio.to_thread(clicker.join, 30)
    listening_again = _log_events(project.logs("redirector", lines=200),
                                  "redirector.started")
    assert listening_again and int(listening_again[-1]["recovered_clicks"]) > 0, (  # type: ignore[call-overload]
        listening_again)

    served = {recipient for recipient, status, _ in clicker.outcomes if status == 302}
    # No answer, or nginx's 502/504: the click may or may not have been spooled.
    unsure = {recipient for recipient, status, _ in clicker.outcomes
              if status is None or status >= 500}
    stack.times["clicks answered 302 (count)"] = len(served)
    stack.times["clicks refused while stopped (count)"] = sum(
        1 for _, status, _ in clicker.outcomes if status not in (302, None))
    deadline = time.monotonic() + 60
    while True:
        counts = await _flow_rows(stack.database)
        if served <= set(counts.recipients) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # a duplicate would arrive about now
    assert_exactly_once(await _flow_rows(stack.database), served, unsure)
    _assert_loopback_only(stack)


# --- d. down -v ---------------------------------------------------------------------------------

def test_down_removes_every_container_and_volume(stack: Stack) -> None:
    project = stack.project
    assert project.volumes(), "the project made no volumes?"
    started = time.monotonic()
    project.down()
    stack.times["down -v"] = time.monotonic() - started
    stack.down_done = True
    assert project.containers() == []
    assert project.volumes() == []
    busy = [port for port in stack.ports.all() if listening(port)]
    assert not busy, f"still listening after down: {busy}"
