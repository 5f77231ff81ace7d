"""Rolling restarts under load: each process in turn gets SIGTERM and is started again while
work flows, and nothing is lost or done twice.

- Clicks: two redirectors (each on its own port, as behind nginx) and two loggers. A
  paced stream of clicks goes to the redirectors, failing over to the other one when a
  connection is refused or dropped unanswered (what nginx's `proxy_next_upstream error`
  does). Each redirector, then each logger, is stopped with SIGTERM and started again.
  Every click must be answered 302, and each 302 must be exactly one row.
- Domains: two verifiers judge `domain.created` events against a slow DNS server; one is
  stopped with SIGTERM while it holds events in flight, and started again. Each domain
  must be judged exactly once and announced exactly once.
- Certificates: two certifiers sharing one certbot directory take `domain.verified`
  events and get certificates from Pebble (HTTP-01 through nginx and a redirector). Each
  is stopped with SIGTERM in the middle of a certbot run and replaced. It must finish
  that run within its drain timeout and hand back the events it held; every domain ends
  active with exactly one order and one certificate.issued, and nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp

from demo.databases import execute, fetch
from demo.dns import DnsServer
from demo.net import free_port
from demo.nginx import Nginx
from demo.pebble import Pebble
from demo.processes import ServiceProcess
from shared.broker import topology as broker_topology
from shared.broker.names import (
    CERTIFICATE_ISSUED,
    DOMAIN_CREATED,
    DOMAIN_VERIFIED,
    PLATFORM_QUEUE,
)
from shared.events import DomainCreated, DomainVerified, encode_event
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST
from tests.fault.harness import (
    BROWSER,
    Services,
    assert_exactly_once,
    drain_queue,
    log_lines,
    mint_tokens,
    queue_depth,
    start_logger,
    start_redirector,
    wait_rows,
)
from tests.support.amqp import message

RATE = 200  # clicks per second
MAX_CLICKS = 3_000  # the stream stops a second after the last restart, at most 15 s in


@dataclass
class Restart:
    name: str
    terminated_at: float  # seconds into the stream
    back_at: float
    exit_code: int


@dataclass
class FailoverStream:
    """Requests sent round-robin; a refused or unanswered one goes to the next redirector."""

    bases: list[str]
    started: float = field(default_factory=time.monotonic)
    statuses: Counter[int | None] = field(default_factory=Counter)
    served: set[str] = field(default_factory=set)
    served_at: list[float] = field(default_factory=list)
    failovers: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    async def one(self, session: aiohttp.ClientSession, number: int, recipient: str,
                  token: str) -> None:
        status = None
        for attempt in range(12):  # a second and more: a restart takes well under that
            base = self.bases[(number + attempt) % len(self.bases)]
            try:
                async with session.get(f"{base}/t/{token}", allow_redirects=False,
                                       headers={"Host": TRACKING_HOST,
                                                "User-Agent": BROWSER}) as response:
                    await response.read()
                    status = response.status
                    break
            except (aiohttp.ClientConnectionError, TimeoutError):
                # Refused (not listening) or closed before an answer (a keep-alive
                # connection the stopping redirector shut): the click was not taken.
                self.failovers += 1
                await asyncio.sleep(0.1 if attempt % len(self.bases) else 0)
        self.statuses[status] += 1
        if status == 302:
            self.served.add(recipient)
            self.served_at.append(self.now())

    async def run(self, tokens: list[tuple[str, str]], stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=32)
        tasks = []
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for number, (recipient, token) in enumerate(tokens):
                if stop.is_set():
                    break
                delay = number / RATE - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self.one(session, number, recipient, token)))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def test_rolling_restart_of_redirectors_and_loggers_loses_and_duplicates_no_click(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner) -> None:
    # Bounded even if the broker or the database misbehave (about 20 s when all is well).
    await asyncio.wait_for(_rolling_clicks(broker, database, services, signer), timeout=150)


async def _rolling_clicks(broker: BrokerSettings, database: DatabaseSettings,
                          services: Services, signer: LinkSigner) -> None:
    ports = [free_port(), free_port()]
    loggers = [await start_logger(services), await start_logger(services)]
    redirectors = [(await start_redirector(services, port))[0] for port in ports]
    for redirector in redirectors:
        await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)

    stream = FailoverStream([f"http://127.0.0.1:{port}" for port in ports])
    stop = asyncio.Event()
    restarts: list[Restart] = []

    async def restart(processes: list[ServiceProcess], index: int) -> None:
        old = processes[index]
        terminated_at = stream.now()
        exit_code = await asyncio.to_thread(old.terminate, 40.0)
        if old.name == "redirector":
            processes[index] = (await start_redirector(services, ports[index]))[0]
        else:
            processes[index] = await start_logger(services)
        restarts.append(Restart(f"{old.name}[{index}]", terminated_at, stream.now(), exit_code))
        await asyncio.sleep(0.5)

    async def roll() -> None:
        await asyncio.sleep(1.0)
        for index in range(2):
            await restart(redirectors, index)
        for index in range(2):
            await restart(loggers, index)
        await asyncio.sleep(1.0)
        stop.set()

    roller = asyncio.create_task(roll())
    await stream.run(mint_tokens(signer, MAX_CLICKS, "roll"), stop)
    await roller
    ended = stream.now()
    timeline = [(r.name, round(r.terminated_at, 2), round(r.back_at, 2)) for r in restarts]
    print(f"stream: {stream.statuses} in {ended:.1f} s, failovers: {stream.failovers}, "
          f"restarts (name, SIGTERM at, back at): {timeline}")

    # Every restart was graceful and happened while clicks flowed through it.
    assert [r.exit_code for r in restarts] == [0, 0, 0, 0], restarts
    assert len(restarts) == 4 and restarts[-1].back_at < ended, "the stream ended too early"
    for r in restarts:
        during = sum(r.terminated_at <= t <= r.back_at + 0.5 for t in stream.served_at)
        assert during > 0, f"no click was served while {r.name} restarted"
    # Every click was answered (by one redirector or the other) ...
    assert set(stream.statuses) == {302}, stream.statuses
    assert stream.statuses[302] >= 1_000, stream.statuses

    # ... and each one is exactly one row.
    counts = await wait_rows(database, len(stream.served), timeout_s=30)
    assert_exactly_once(counts, stream.served)
    assert counts.rows == len(stream.served)
    assert await queue_depth(broker, "logger") == (0, 2)
    assert (await queue_depth(broker, "logger.dead"))[0] == 0

    for process in redirectors + loggers:
        assert process.terminate() == 0
    stopped = [line for process in services.started
               for line in log_lines(process, '"redirector.stopped"')]
    assert len(stopped) == 4 and all('"drained": true' in line for line in stopped), stopped
    assert sum(bool(log_lines(p, '"logger.stopped"')) for p in services.started) == 4


async def test_sigterm_to_a_verifier_with_domains_in_flight_judges_each_domain_once(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    # Bounded even if the broker or the database misbehave (about 10 s when all is well).
    await asyncio.wait_for(_verifier_sigterm(broker, database, services), timeout=120)


async def _verifier_sigterm(broker: BrokerSettings, database: DatabaseSettings,
                            services: Services) -> None:
    domains = [f"track.roll-{number}.test" for number in range(60)]
    # Every answer takes 300 ms: a judgement (several lookups) is slow enough that a
    # verifier holds several domains at the moment it is told to stop, and the 60 take
    # a few seconds to get through.
    with DnsServer(delay_s=0.3) as dns:
        dns.a(TRACKING_HOST, "127.0.0.1")
        for domain in domains:
            dns.cname(domain, TRACKING_HOST)
        env = {"DNS_NAMESERVERS": dns.address, "DNS_TIMEOUT_S": "2",
               "VERIFIER_PREFETCH": "4", "VERIFIER_RETRY_DELAYS_MS": "200,400"}

        async def start_verifier() -> ServiceProcess:
            process = services.start("verifier", **env)
            await asyncio.to_thread(process.wait_for_log, "verifier.started", 20.0)
            return process

        first, second = await start_verifier(), await start_verifier()
        topology = broker_topology.Topology(broker.exchange, retry_delays_ms=(200, 400))
        connection = await aio_pika.connect(broker.url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await broker_topology.declare(channel, topology)
            await asyncio.gather(*(exchange.publish(
                message(encode_event(DomainCreated(domain=domain, customer_id="cust-roll"),
                                     source="/tests/platform")),
                routing_key=DOMAIN_CREATED, mandatory=True, timeout=10)
                for domain in domains))

        await asyncio.sleep(1.0)
        verified_before = len(await _verified(database))
        exit_code = await asyncio.to_thread(first.terminate, 40.0)
        again = await start_verifier()

        deadline = time.monotonic() + 30
        while len(await _verified(database)) < len(domains):
            assert time.monotonic() < deadline, "not every domain was verified"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a duplicate would show up by now
        for process in (second, again):
            assert process.terminate() == 0

    assert exit_code == 0
    assert 0 < verified_before < len(domains), (
        f"{verified_before} of {len(domains)} verified at the SIGTERM: not mid-way")
    stopping = first.log_text().split('"verifier.stopping"', 1)
    assert len(stopping) == 2 and '"message.handled"' in stopping[1], (
        "the stopped verifier held nothing in flight: the test proves nothing")
    assert "verifier.stopped" in stopping[1]

    judged: Counter[str] = Counter()
    for process in (first, second, again):
        for line in log_lines(process, '"domain.handled"'):
            record = json.loads(line[line.index("{"):])
            if record["outcome"] in ("verified", "rejected"):
                judged[record["domain"]] += 1
    assert judged == Counter(dict.fromkeys(domains, 1)), (
        f"judged other than once: {[(d, n) for d, n in judged.items() if n != 1][:5]}, "
        f"never: {sorted(set(domains) - set(judged))[:5]}")

    announced = Counter(json.loads(m.body)["data"]["domain"] for m in await drain_queue(
        broker, topology.queue(PLATFORM_QUEUE)))
    assert announced == Counter(dict.fromkeys(domains, 1)), (
        f"announced other than once: {[(d, n) for d, n in announced.items() if n != 1][:5]}")
    assert (await queue_depth(broker, "verifier"))[0] == 0
    assert (await queue_depth(broker, "verifier.dead"))[0] == 0


async def _verified(database: DatabaseSettings) -> list[str]:
    rows = await fetch(database, "SELECT name FROM tracking_domains WHERE status = 'verified'")
    return [row["name"] for row in rows]


# --- certifiers ------------------------------------------------------------------------------

CERTIFIED = 12  # domains; about 2.5 s of certbot each, one run at a time per directory
DRAIN_S = 20.0  # the certifiers' CERTIFIER_DRAIN_TIMEOUT_S


@dataclass
class CertifierStop:
    process: ServiceProcess
    held: str  # the domain of the certbot run it held when it was told to stop
    exit_code: int
    took_s: float


def certbot_runs(pid: int) -> dict[int, str]:
    """The `certbot certonly` processes that process `pid` runs now (its children): the
    domain each is for (its `--cert-name`), by process id."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != pid:  # its parent
                continue
            argv = (stat.parent / "cmdline").read_bytes().decode().split("\0")
            if "certonly" in argv:
                found[int(stat.parent.name)] = argv[argv.index("--cert-name") + 1]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


async def stop_mid_issuance(process: ServiceProcess) -> CertifierStop:
    """SIGTERM `process` as soon as it starts a new certbot run (so it holds one with a
    couple of seconds to go, not one about to end); then wait for it to exit."""
    assert process.process is not None
    already = certbot_runs(process.process.pid)
    deadline = time.monotonic() + 30
    while not (fresh := [domain for pid, domain in certbot_runs(process.process.pid).items()
                         if pid not in already]):
        assert time.monotonic() < deadline, f"{process.name} never started a certbot run"
        await asyncio.sleep(0.02)
    started = time.monotonic()
    exit_code = await asyncio.to_thread(process.terminate, DRAIN_S + 30)
    return CertifierStop(process, fresh[0], exit_code, time.monotonic() - started)


def certify_lines(process: ServiceProcess, after: str | None = None) -> list[dict[str, object]]:
    text = process.log_text()
    if after is not None:
        text = text.split(after, 1)[1]
    return [json.loads(line[line.index("{"):]) for line in text.splitlines()
            if '"certificate.certify"' in line]


async def test_rolling_restart_of_certifiers_mid_issuance_orders_each_certificate_once(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        tmp_path: Path) -> None:
    # Bounded even if something hangs (about 40 s when all is well).
    await asyncio.wait_for(_rolling_certifiers(broker, database, services, tmp_path),
                           timeout=150)


async def _rolling_certifiers(broker: BrokerSettings, database: DatabaseSettings,
                              services: Services, tmp_path: Path) -> None:
    domains = [f"track.cert-{number}.test" for number in range(CERTIFIED)]
    challenges, certbot_dir = tmp_path / "challenges", tmp_path / "certbot"
    redirector_port = free_port()
    upstream = f"127.0.0.1:{redirector_port}"
    nginx = Nginx(tmp_path / "nginx", upstreams=[upstream])
    # The CA resolves every name through the test's DNS server and validates HTTP-01 on
    # nginx's plain-HTTP port; nginx passes the challenge path to the redirector, which
    # answers from the directory the certifiers' hook writes.
    with DnsServer() as dns, Pebble(tmp_path / "pebble", http_port=nginx.http_port,
                                    dns_server=dns.address) as pebble, nginx:
        dns.a(TRACKING_HOST, "127.0.0.1")
        for domain in domains:
            dns.cname(domain, TRACKING_HOST)
            await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                                    "verified) VALUES ($1, 'cust-roll', 'verified', true)",
                          domain)
        await start_redirector(services, redirector_port,
                               ACME_CHALLENGE_DIR=str(challenges), TRUSTED_PROXIES="127.0.0.1")
        env = {
            "ACME_DIRECTORY_URL": pebble.directory_url,
            "ACME_CA_BUNDLE": str(pebble.listener_ca), "ACME_EMAIL": "certs@platform.test",
            "CERTBOT_DIR": str(certbot_dir), "ACME_CHALLENGE_DIR": str(challenges),
            "CERTIFIER_DRAIN_TIMEOUT_S": str(DRAIN_S),
        }

        async def start_certifier() -> ServiceProcess:
            process = services.start("certifier", **env)
            await asyncio.to_thread(process.wait_for_log, "certifier.started", 20.0)
            return process

        first, second = await start_certifier(), await start_certifier()
        topology = broker_topology.Topology(broker.exchange)
        connection = await aio_pika.connect(broker.url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await broker_topology.declare(channel, topology)
            await asyncio.gather(*(exchange.publish(
                message(encode_event(DomainVerified(
                    domain=domain, customer_id="cust-roll", matched_by="cname",
                    chain=[domain, TRACKING_HOST]), source="/tests/verifier")),
                routing_key=DOMAIN_VERIFIED, mandatory=True, timeout=10)
                for domain in domains))

        # One at a time, each in the middle of a certbot run of its own: stop it, then
        # start its replacement.
        stops = [await stop_mid_issuance(first)]
        third = await start_certifier()
        stops.append(await stop_mid_issuance(second))
        fourth = await start_certifier()

        deadline = time.monotonic() + 60
        while len(active := await _active(database)) < len(domains):
            assert time.monotonic() < deadline, (
                f"only {len(active)} of {len(domains)} active: "
                f"{sorted(set(domains) - set(active))}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a duplicate would show up by now
        for process in (third, fourth):
            assert process.terminate() == 0
        pebble_log = (pebble.directory / "pebble.log").read_text(errors="replace")

    print(f"certifier stops (exit, seconds): {[(s.exit_code, round(s.took_s, 1)) for s in stops]}")
    for stop in stops:
        # It finished the certbot run it held, within its drain timeout, and exited 0.
        assert stop.exit_code == 0, stop
        assert stop.took_s < DRAIN_S, stop
        log_text = stop.process.log_text()
        assert '"certifier.stopping"' in log_text
        # What it was doing (the run it held; a certificate being put in service) it
        # finished; the rest it handed back.
        after = certify_lines(stop.process, after='"certifier.stopping"')
        assert {line["outcome"] for line in after} <= {"issued", "handed-back"}, after
        assert stop.held in {line["domain"] for line in after
                             if line["outcome"] == "issued"}, (stop.held, after)
        [stopped] = log_lines(stop.process, '"certifier.stopped"')
        assert '"drained": true' in stopped and '"abandoned": 0' in stopped, stopped
    # What they held and had not started was handed back (the first held about half).
    handed_back = [line for stop in stops for line in certify_lines(stop.process)
                   if line["outcome"] == "handed-back"]
    assert handed_back, "the stopped certifiers held nothing but the run: not mid-way"

    # Every domain: one certificate, one order (our ledger and the CA's), announced once.
    issued: Counter[str] = Counter()
    for process in (first, second, third, fourth):
        for line in certify_lines(process):
            assert line["outcome"] in ("issued", "handed-back"), line
            if line["outcome"] == "issued":
                issued[str(line["domain"])] += 1
    assert issued == Counter(dict.fromkeys(domains, 1)), issued
    ledger = await fetch(database, "SELECT name, kind, count(*) AS n FROM acme_events "
                                   "GROUP BY name, kind")
    assert {(row["name"], row["kind"], row["n"]) for row in ledger} == {
        (domain, kind, 1) for domain in domains for kind in ("order", "certificate")}
    assert pebble_log.count("Added order") == len(domains)
    assert pebble_log.count("Issued certificate serial") == len(domains)
    announced = Counter(body["data"]["domain"] for m in await drain_queue(
        broker, topology.queue(PLATFORM_QUEUE))
        if (body := json.loads(m.body))["type"] == CERTIFICATE_ISSUED)
    assert announced == Counter(dict.fromkeys(domains, 1)), announced
    # No certbot run failed (a collision on the directory would have): failed runs keep
    # their log directory, successful ones remove it.
    assert not [p for p in (certbot_dir / "logs").iterdir() if p.is_dir()]
    assert await queue_depth(broker, "certifier") == (0, 0)
    assert (await queue_depth(broker, "certifier.dead"))[0] == 0


async def _active(database: DatabaseSettings) -> list[str]:
    rows = await fetch(database, "SELECT name FROM tracking_domains WHERE status = 'active'")
    return [row["name"] for row in rows]
