"""The fault tier's harness: proxied URLs, a paced click stream, exactly-once checks.

Everything here is loopback only and bounded: a stream sends a fixed number of
requests within a fixed time, every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import asyncpg
import msgspec
from sqlalchemy.engine import make_url

from demo.net import free_port
from demo.processes import ServiceProcess
from shared.broker import topology as broker_topology
from shared.events import BATCH, ClickTracked, encode_batch, encode_event, new_event_id
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST, service_env
from tests.support.proxy import TcpProxy

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) fault-tests"


# --- addresses ------------------------------------------------------------------------------

def amqp_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def amqp_via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else \
        f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def db_target(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def db_via(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


def asyncpg_dsn(database: DatabaseSettings) -> str:
    return make_url(database.url).set(drivername="postgresql").render_as_string(
        hide_password=False)


@contextmanager
def proxy_to(target: tuple[str, int]) -> Iterator[TcpProxy]:
    proxy = TcpProxy(*target).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# --- service processes ----------------------------------------------------------------------

@dataclass
class Services:
    """Starts redirector/logger processes and kills whatever is left at the end."""

    broker: BrokerSettings
    database: DatabaseSettings
    tmp_path: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return service_env(self.broker, self.database, self.tmp_path, **extra)

    def start(self, name: str, **extra: str) -> ServiceProcess:
        process = ServiceProcess(name, self.env(**extra), self.tmp_path).start()
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.process is not None and process.process.poll() is None:
                process.kill()


async def start_redirector(services: Services, port: int | None = None,
                           **extra: str) -> tuple[ServiceProcess, str]:
    port = port or free_port()
    process = services.start("redirector", REDIRECTOR_BIND=f"127.0.0.1:{port}", **extra)
    base = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(process.wait_http, f"{base}/healthz", 20.0)
    return process, base


async def start_logger(services: Services, **extra: str) -> ServiceProcess:
    process = services.start("logger", **extra)
    await asyncio.to_thread(process.wait_for_log, "logger.started", 20.0)
    return process


def tail(process: ServiceProcess, lines: int = 40) -> str:
    return "\n".join(process.log_text().splitlines()[-lines:])


def log_lines(process: ServiceProcess, needle: str) -> list[str]:
    return [line for line in process.log_text().splitlines() if needle in line]


# --- clicks over HTTP -----------------------------------------------------------------------

def mint_tokens(signer: LinkSigner, count: int, prefix: str) -> list[tuple[str, str]]:
    """(recipient_id, token) pairs, one recipient per request so rows map back to requests."""
    tokens = []
    for number in range(count):
        recipient = f"{prefix}-{number}"
        tokens.append((recipient, signer.mint_token(
            customer_id="cust-fault", campaign_id="camp-fault", recipient_id=recipient,
            url=f"https://shop.example/p/{number}?utm=fault")))
    return tokens


@dataclass
class Outcome:
    recipient: str
    started: float  # seconds since the stream started
    latency: float
    status: int | None = None
    error: str | None = None


@dataclass
class StreamResult:
    outcomes: list[Outcome]
    duration: float

    @property
    def served(self) -> set[str]:
        """Recipients whose request was answered 302: each must become exactly one row."""
        return {o.recipient for o in self.outcomes if o.status == 302}

    @property
    def ambiguous(self) -> set[str]:
        """Requests that died without an answer: the click may or may not have been spooled."""
        return {o.recipient for o in self.outcomes if o.status is None}

    def statuses(self) -> Counter[int | None]:
        return Counter(o.status for o in self.outcomes)

    def max_latency(self) -> float:
        return max((o.latency for o in self.outcomes if o.status is not None), default=0.0)


async def click_stream(base: str, tokens: Sequence[tuple[str, str]], *, rate: float,
                       concurrency: int = 32, stop: asyncio.Event | None = None,
                       timeout_s: float = 10.0, host: str = TRACKING_HOST) -> StreamResult:
    """GET each token once, request i scheduled at i/rate seconds; bounded in count and time.

    Once `stop` is set, requests not yet started are not sent.
    """
    outcomes: list[Outcome] = []
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.monotonic()
    headers = {"Host": host, "User-Agent": BROWSER}

    async def one(session: aiohttp.ClientSession, recipient: str, token: str) -> None:
        async with slots:
            if stop is not None and stop.is_set():
                return
            sent = time.monotonic()
            outcome = Outcome(recipient=recipient, started=sent - started, latency=0.0)
            try:
                async with session.get(f"{base}/t/{token}", headers=headers,
                                       allow_redirects=False) as response:
                    await response.read()
                    outcome.status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.latency = time.monotonic() - sent
            outcomes.append(outcome)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        tasks = []
        for number, (recipient, token) in enumerate(tokens):
            if stop is not None and stop.is_set():
                break
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, recipient, token)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout_s + 30)
    return StreamResult(outcomes=outcomes, duration=time.monotonic() - started)


async def http_status(url: str, *, method: str = "GET", host: str = TRACKING_HOST,
                      timeout_s: float = 2.0) -> int | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                s.request(method, url, headers={"Host": host},
                          allow_redirects=False) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


# --- rows -----------------------------------------------------------------------------------

@dataclass
class RowCounts:
    rows: int
    event_ids: int
    recipients: Counter[str]


async def row_counts(database: DatabaseSettings) -> RowCounts:
    connection = await asyncpg.connect(asyncpg_dsn(database))
    try:
        summary = await connection.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM tracking_logs")
        recipients = await connection.fetch("SELECT recipient_id FROM tracking_logs")
    finally:
        await connection.close()
    return RowCounts(rows=summary["n"], event_ids=summary["d"],
                     recipients=Counter(r["recipient_id"] for r in recipients))


async def count_rows(database: DatabaseSettings) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database))
    try:
        return await connection.fetchval("SELECT count(*) FROM tracking_logs")
    finally:
        await connection.close()


async def wait_rows(database: DatabaseSettings, expected: int, timeout_s: float = 30.0,
                    settle_s: float = 1.0) -> RowCounts:
    """Wait until at least `expected` rows exist, then a little longer for stragglers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await count_rows(database) >= expected:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(settle_s)
    return await row_counts(database)


def assert_exactly_once(counts: RowCounts, served: Iterable[str],
                        ambiguous: Iterable[str] = ()) -> None:
    """Every 302 is exactly one row; a request that got no answer is at most one row."""
    served, ambiguous = set(served), set(ambiguous)
    assert counts.rows == counts.event_ids, (
        f"duplicate event ids: {counts.rows} rows, {counts.event_ids} distinct event ids")
    duplicated = {r: n for r, n in counts.recipients.items() if n > 1}
    assert not duplicated, f"clicks stored more than once: {list(duplicated.items())[:10]}"
    missing = served - set(counts.recipients)
    assert not missing, (f"{len(missing)} of {len(served)} clicks answered 302 have no row, "
                         f"e.g. {sorted(missing)[:5]}")
    unexpected = set(counts.recipients) - served - ambiguous
    assert not unexpected, f"rows for clicks never served: {sorted(unexpected)[:5]}"


# --- broker ---------------------------------------------------------------------------------

async def queue_depth(broker: BrokerSettings, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of one queue in the test's namespace."""
    name = broker_topology.Topology(broker.exchange).queue(queue)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(name, passive=True)
        ready = declared.declaration_result.message_count
        consumers = declared.declaration_result.consumer_count
        assert ready is not None and consumers is not None  # a DeclareOk carries both
        return ready, consumers


async def drain_queue(broker: BrokerSettings, name: str,
                      limit: int = 10_000) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and ack) every message ready in the queue with this full name."""
    messages = []
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        for _ in range(limit):
            message = await queue.get(no_ack=True, fail=False, timeout=5)
            if message is None:
                break
            messages.append(message)
    return messages


def click_event(recipient: str, *, event_id: str | None = None, **changes: object) -> bytes:
    """A click as the redirector would publish it; `changes` may set any field to anything."""
    click = msgspec.structs.replace(ClickTracked(
        customer_id="cust-fault", campaign_id="camp-direct", recipient_id=recipient,
        domain=TRACKING_HOST, url="https://shop.example/direct", ip="127.0.0.1",
        user_agent=BROWSER, method="GET", bot=False, bot_reason=None,
    ), **changes)
    return encode_event(click, source="/fault-tests", event_id=event_id or new_event_id())


async def publish_raw(broker: BrokerSettings, messages: Sequence[aio_pika.Message],
                      routing_key: str = ClickTracked.TYPE) -> None:
    """Declare the topology, publish each message with confirms (mandatory: never dropped)."""
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await broker_topology.declare(
            channel, broker_topology.Topology(broker.exchange))
        window = 64
        for start in range(0, len(messages), window):
            await asyncio.gather(*(
                exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=30)
                for message in messages[start:start + window]))


def batch_message(events: Sequence[bytes]) -> aio_pika.Message:
    return aio_pika.Message(encode_batch(events), content_type=BATCH,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=new_event_id())
