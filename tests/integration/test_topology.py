"""shared.broker.topology.declare against the real broker: queues, bindings, tiers, DLQs."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, FieldValue

from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.names import (
    CERTIFIER_QUEUE,
    CLASSIFIER_BACKLOG_MS,
    CLASSIFIER_QUEUE,
    LOGGER_QUEUE,
    PLATFORM_QUEUE,
    VERIFIER_QUEUE,
)
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.events import (
    CertificateFailed,
    CertificateIssued,
    ClickClassified,
    DomainCreated,
    DomainDeleted,
    DomainRejected,
    DomainVerified,
)
from shared.settings import BrokerSettings
from tests.support.amqp import click, get_messages, message_count, queue_exists, wait_count

SERVICES = (LOGGER_QUEUE, VERIFIER_QUEUE, CERTIFIER_QUEUE, CLASSIFIER_QUEUE)


async def _declare_fails(connection: AbstractConnection, name: str,
                         arguments: dict[str, FieldValue]) -> bool:
    """True when re-declaring `name` with these arguments is refused as inequivalent."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed:
        return True
    await channel.close()
    return False


async def test_declare_creates_exchange_quorum_queues_tiers_and_dead_letter_queues(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    for name in topology.queue_names():
        assert not await queue_exists(side, name)

    connection = await connect(broker, name="test-topology", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        assert exchange.name == broker.exchange

    # The exchange exists (passive declare) and is a durable topic exchange.
    check = await side.channel()
    await check.declare_exchange(broker.exchange, passive=True)
    await check.declare_exchange(broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    await check.close()

    for service in SERVICES:
        main = topology.queue(service)
        assert main == f"{broker.exchange}.{service}"
        assert await message_count(side, main) == 0
        assert await message_count(side, topology.dead_queue(service)) == 0
        for delay in (200, 400):
            assert await message_count(side, topology.retry_queue(service, delay)) == 0
        # Quorum queues: the same declaration is accepted, a classic one is refused.
        own = ({"x-single-active-consumer": True, "x-message-ttl": CLASSIFIER_BACKLOG_MS}
               if service == CLASSIFIER_QUEUE else {})
        assert not await _declare_fails(side, main, {"x-queue-type": "quorum", **own})
        assert await _declare_fails(side, main, {"x-queue-type": "classic", **own})
        assert await _declare_fails(side, topology.dead_queue(service),
                                    {"x-queue-type": "classic"})
        # The tier really carries its TTL: a different one is inequivalent.
        assert await _declare_fails(side, topology.retry_queue(service, 200),
                                    {"x-queue-type": "quorum", "x-message-ttl": 999})
    # Nothing else in the namespace: no default-delay tiers for a fast topology.
    assert not await queue_exists(side, f"{broker.exchange}.{LOGGER_QUEUE}.retry.1000ms")


async def test_each_service_queue_gets_exactly_its_routing_keys_and_unbound_ones_raise(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    connection = await connect(broker, name="test-topology", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/topology", timeout_s=5)

        sent = {
            "click.tracked": await publisher.publish_event(click(1)),
            "domain.created": await publisher.publish_event(
                DomainCreated(domain="a.example", customer_id="c")),
            "domain.deleted": await publisher.publish_event(
                DomainDeleted(domain="a.example", customer_id="c")),
            "domain.verified": await publisher.publish_event(
                DomainVerified(domain="a.example", customer_id="c", matched_by="cname")),
        }
        # Outcomes for the upstream platform land in its queue even before it connects.
        from datetime import UTC, datetime
        outcomes = [
            DomainRejected(domain="a.example", customer_id="c", code="x", reason="r"),
            CertificateIssued(domain="a.example", customer_id="c", not_before=datetime.now(UTC),
                              not_after=datetime.now(UTC), serial="01"),
            CertificateFailed(domain="a.example", customer_id="c", code="x", reason="r"),
        ]
        platform_ids = {sent["domain.verified"]}
        for data in outcomes:
            platform_ids.add(await publisher.publish_event(data))
        sent["click.classified"] = await publisher.publish_event(ClickClassified(
            event_id="e1", customer_id="c", campaign_id="k", recipient_id="r",
            clicked_at=datetime.now(UTC), bot=True, reasons=["burst"]))
        platform_ids.add(sent["click.classified"])
        # A routing key no queue is bound to: mandatory makes that loud, never a silent drop.
        with pytest.raises(aio_pika.exceptions.PublishError):
            await publisher.publish("nothing.bound", b"{}")

    check_platform = await side.channel()
    got = await get_messages(check_platform, topology.queue(PLATFORM_QUEUE), 6, timeout_s=0.5)
    assert {m.message_id for m in got} == platform_ids
    assert {m.routing_key for m in got} == {"domain.verified", "domain.rejected",
                                            "certificate.issued", "certificate.failed",
                                            "click.classified"}

    expected = {
        LOGGER_QUEUE: {"click.tracked", "click.classified"},
        VERIFIER_QUEUE: {"domain.created", "domain.deleted"},
        CERTIFIER_QUEUE: {"domain.verified", "domain.deleted"},
    }
    # A single-active-consumer queue refuses basic.get: its one click is counted instead.
    assert await wait_count(side, topology.queue(CLASSIFIER_QUEUE), 1, timeout_s=2) == 1
    check = await side.channel()
    for service, keys in expected.items():
        got = await get_messages(check, topology.queue(service), len(keys) + 1, timeout_s=0.5)
        assert {m.routing_key for m in got} == keys, service
        assert {m.message_id for m in got} == {sent[key] for key in keys}
        assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
    for service in SERVICES:
        for name in (topology.dead_queue(service), topology.retry_queue(service, 200),
                     topology.retry_queue(service, 400)):
            assert await message_count(side, name) == 0, name


async def test_mandatory_publish_to_nothing_raises_and_channel_stays_usable(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    connection = await connect(broker, name="test-topology", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/topology", timeout_s=5)

        with pytest.raises(aio_pika.exceptions.PublishError):
            await publisher.publish("nobody.listens.here", b"{}")
        with pytest.raises(aio_pika.exceptions.PublishError):
            await publisher.send_to_queue(f"{broker.exchange}.no-such-queue", b"{}")
        # The return did not break the channel: routable publishes still confirm.
        await publisher.publish_event(click(2))
        await publisher.send_to_queue(topology.dead_queue(LOGGER_QUEUE), b"{}")
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 1
    assert await message_count(side, topology.dead_queue(LOGGER_QUEUE)) == 1


async def test_retry_tiers_dead_letter_back_to_the_main_queue_after_their_ttl(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    main = topology.queue(LOGGER_QUEUE)
    connection = await connect(broker, name="test-topology", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/topology", timeout_s=5)
        started = time.monotonic()
        for delay in (200, 400):
            await publisher.send_to_queue(topology.retry_queue(LOGGER_QUEUE, delay),
                                          f"body-{delay}".encode(),
                                          headers={"x-attempt": 2, "x-probe": delay})

    await asyncio.sleep(0.08)
    assert await message_count(side, main) == 0  # still waiting in the tiers
    arrived: dict[int, float] = {}
    check = await side.channel()
    queue = await check.get_queue(main, ensure=False)
    deadline = time.monotonic() + 5
    while len(arrived) < 2 and time.monotonic() < deadline:
        got = await queue.get(no_ack=True, fail=False)
        if got is None:
            await asyncio.sleep(0.01)
            continue
        probe = got.headers["x-probe"]
        assert isinstance(probe, int)
        delay = probe
        arrived[delay] = time.monotonic() - started
        assert got.body == f"body-{delay}".encode()
        assert got.headers["x-attempt"] == 2  # our headers survive the trip
        deaths = got.headers["x-death"]
        assert isinstance(deaths, list) and isinstance(deaths[0], dict)
        assert deaths[0]["reason"] == "expired"
        assert deaths[0]["queue"] == topology.retry_queue(LOGGER_QUEUE, delay)
    assert set(arrived) == {200, 400}
    assert 0.18 <= arrived[200] < 2.0
    assert 0.38 <= arrived[400] < 2.5
    for delay in (200, 400):
        assert await message_count(side, topology.retry_queue(LOGGER_QUEUE, delay)) == 0


async def test_declare_twice_is_idempotent_and_keeps_messages(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    connection = await connect(broker, name="test-topology", attempts=1)
    async with connection:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        await Publisher(channel, exchange, source="/t", timeout_s=5).publish_event(click(3))
        exchange = await broker_topology.declare(channel, topology)
        await Publisher(channel, exchange, source="/t", timeout_s=5).publish_event(click(4))
    assert await message_count(side, topology.queue(LOGGER_QUEUE)) == 2


async def test_declare_concurrently_from_two_connections(
        broker: BrokerSettings, topology: Topology, side: AbstractConnection) -> None:
    first = await connect(broker, name="test-topology-1", attempts=1)
    second = await connect(broker, name="test-topology-2", attempts=1)
    async with first, second:
        channels = [await open_channel(c) for c in (first, second, first, second)]
        exchanges = await asyncio.wait_for(
            asyncio.gather(*(broker_topology.declare(ch, topology) for ch in channels)),
            timeout=20)
        assert {e.name for e in exchanges} == {broker.exchange}
        for number, (channel, exchange) in enumerate(zip(channels, exchanges, strict=True)):
            await Publisher(channel, exchange, source="/t", timeout_s=5).publish_event(
                click(number))
    assert await wait_count(side, topology.queue(LOGGER_QUEUE), 4, timeout_s=2) == 4
    for service in SERVICES:
        assert await queue_exists(side, topology.dead_queue(service))
