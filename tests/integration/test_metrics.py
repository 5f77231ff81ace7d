"""Metrics against the real things: the /metrics server, the consumer on the real broker,
and the database queries behind the domain and certificate gauges (PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from demo.databases import execute
from demo.net import free_port
from services.certifier.renewal import RenewalPolicy, update_expiry_gauges
from services.certifier.store import CertificateStore
from services.verifier.census import count_by_status, update
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.db.engine import create_engine
from shared.errors import PermanentError, TransientError
from shared.events import Event
from shared.metrics import (
    CertifierMetrics,
    ConsumerMetrics,
    MetricsServer,
    VerifierMetrics,
    new_registry,
)
from shared.outcomes import Outcome
from shared.settings import BrokerSettings, DatabaseSettings
from tests.support.amqp import batch_message, click_event, message


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_the_metrics_server_serves_text_and_openmetrics_and_survives_a_taken_port(
) -> None:
    registry = new_registry()
    VerifierMetrics(registry).verification("created", Outcome("verified"))
    port = free_port()
    server = MetricsServer(registry, ("127.0.0.1", port))
    assert await server.start()
    try:
        assert server.url == f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
            assert 'tracking_verifications_total{check="created",code="",outcome="verified"}' \
                   ' 1.0' in text
            assert "process_cpu_seconds_total" in text
            async with session.get(server.url, headers={
                    "Accept": "application/openmetrics-text"}) as response:
                assert response.headers["Content-Type"].startswith(
                    "application/openmetrics-text")
                assert (await response.text()).endswith("# EOF\n")
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 404
        # A second process on the same port carries on without metrics (and says so).
        assert not await MetricsServer(registry, ("127.0.0.1", port)).start()
    finally:
        await server.stop()
    assert not await MetricsServer(registry, None).start()
    with socket.socket() as probe:  # the port was given back
        probe.bind(("127.0.0.1", port))


async def test_the_consumer_counts_outcomes_retries_and_dead_letters(
        broker: BrokerSettings, topology: Topology) -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    transient_left = {"id": 1}
    ok_id, ok = click_event(1)
    retry_id, retry = click_event(2)
    bad_id, bad = click_event(3)
    done = asyncio.Event()
    seen: list[str] = []

    async def handler(events: Sequence[Event[Any]]) -> None:
        seen.extend(event.id for event in events)
        if events[0].id == retry_id and transient_left["id"]:
            transient_left["id"] -= 1
            raise TransientError("try again")
        if events[0].id == bad_id:
            raise PermanentError("never")
        if events[0].id == retry_id:
            done.set()

    connection = await connect(broker, name="test-metrics", attempts=1)
    try:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        consumer = Consumer(channel=channel, topology=topology, queue=LOGGER_QUEUE,
                            handler=handler,
                            publisher=Publisher(channel, exchange, source="/t", timeout_s=5),
                            policy=ConsumePolicy(prefetch=4, max_attempts=3), metrics=metrics)
        await consumer.start()
        for msg in (batch_message([ok, ok]), message(retry), message(bad),
                    message(b"not json")):
            await exchange.publish(msg, routing_key=CLICK_TRACKED, mandatory=True, timeout=5)
        await asyncio.wait_for(done.wait(), timeout=10)
        deadline = time.monotonic() + 5
        while value(registry, "tracking_message_handle_seconds_count", queue="logger") < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await consumer.stop(timeout_s=5)
    finally:
        await connection.close()

    def events(outcome: str, event_type: str = CLICK_TRACKED) -> float:
        return value(registry, "tracking_events_consumed_total", queue="logger",
                     type=event_type, outcome=outcome)

    assert events("ok") == 3  # the batch's two, and the retried one on its second try
    assert events("retry") == 1
    assert events("dead-lettered") == 1
    assert events("malformed", "-") == 1
    assert value(registry, "tracking_messages_retried_total", queue="logger") == 1
    assert value(registry, "tracking_messages_dead_lettered_total", queue="logger",
                 reason="rejected") == 1
    assert value(registry, "tracking_messages_dead_lettered_total", queue="logger",
                 reason="malformed") == 1
    assert ok_id in seen


async def test_domains_are_counted_by_status_without_tombstones(
        database: DatabaseSettings) -> None:
    rows = [("a.test", "active", None), ("b.test", "active", None), ("c.test", "pending", None),
            ("d.test", "rejected", None), ("gone.test", "rejected", "now()")]
    for name, status, due in rows:
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                      f"verified, check_due_at) VALUES ($1, 'c', $2, false, {due or 'NULL'})",
                      name, status)
    engine = create_engine(database, pool_size=1)
    try:
        assert await count_by_status(engine) == {
            "pending": 1, "verified": 0, "active": 2, "rejected": 1, "lapsed": 0}
        registry = CollectorRegistry()
        metrics = VerifierMetrics(registry)
        await update(engine, metrics)
    finally:
        await engine.dispose()
    assert value(registry, "tracking_domains", status="active") == 2
    assert value(registry, "tracking_domains", status="lapsed") == 0
    assert value(registry, "tracking_domains_counted_timestamp_seconds") > 0


async def test_the_renewal_loop_counts_certificates_inside_the_warning_window(
        database: DatabaseSettings) -> None:
    now = datetime.now(UTC)
    for name, status, expires in [("soon.test", "active", now + timedelta(days=3)),
                                  ("later.test", "active", now + timedelta(days=60)),
                                  ("lapsed.test", "lapsed", now + timedelta(days=1)),
                                  ("none.test", "verified", None)]:
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                      "verified, certificate_expires_at) VALUES ($1, 'c', $2, true, $3)",
                      name, status, expires)
    engine = create_engine(database, pool_size=1)
    registry = CollectorRegistry()
    metrics = CertifierMetrics(registry)
    try:
        await update_expiry_gauges(CertificateStore(engine), metrics, RenewalPolicy())
    finally:
        await engine.dispose()
    assert value(registry, "tracking_certificates_expiring") == 1  # lapsed ones are not renewed
    earliest = value(registry, "tracking_certificate_earliest_expiry_timestamp_seconds")
    assert abs(earliest - (now + timedelta(days=3)).timestamp()) < 1
