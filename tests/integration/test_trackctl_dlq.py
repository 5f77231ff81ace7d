"""`trackctl dlq` on the real broker: dead letters made by the real shared Consumer, then
listed, shown, replayed and purged by the real console script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractConnection

from demo.processes import ROOT
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.broker.topology import Topology
from shared.errors import PermanentError, TransientError
from shared.events import Event
from shared.settings import BrokerSettings
from tests.support.amqp import click_event, get_messages, message, wait_count

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"


async def trackctl(broker: BrokerSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMQP_URL": broker.url, "AMQP_EXCHANGE": broker.exchange}
    return await asyncio.to_thread(subprocess.run, [str(TRACKCTL), "dlq", *args], env=env,
                                   cwd=ROOT, capture_output=True, text=True, timeout=60)


async def handler(events: Sequence[Event[Any]]) -> None:
    for event in events:
        if event.data.recipient_id == "rcpt-2":
            raise TransientError("database down")
        raise PermanentError("bad click")


async def make_dead_letters(broker: BrokerSettings, topology: Topology,
                            side: AbstractConnection) -> list[str]:
    """Two rejected clicks, one exhausted, one malformed message: what a failing logger
    leaves behind, made by the real Consumer."""
    connection = await connect(broker, name="test-dlq", attempts=1)
    try:
        channel = await open_channel(connection)
        exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, exchange, source="/tests/dlq", timeout_s=5)
        consumer = Consumer(channel=channel, topology=topology, queue=LOGGER_QUEUE,
                            handler=handler, publisher=publisher,
                            policy=ConsumePolicy(prefetch=8, max_attempts=2))
        await consumer.start()
        ids = []
        for number in range(3):
            event_id, body = click_event(number)
            ids.append(event_id)
            await exchange.publish(message(body), routing_key=CLICK_TRACKED, mandatory=True)
        await exchange.publish(message(b"not json at all"), routing_key=CLICK_TRACKED,
                               mandatory=True)
        assert await wait_count(side, topology.dead_queue(LOGGER_QUEUE), 4) == 4
        await consumer.stop(timeout_s=5)
    finally:
        await connection.close()
    return ids


async def test_dlq_list_show_replay_and_purge(broker: BrokerSettings, topology: Topology,
                                              side: AbstractConnection) -> None:
    ids = await make_dead_letters(broker, topology, side)
    dead, main = topology.dead_queue(LOGGER_QUEUE), topology.queue(LOGGER_QUEUE)

    # list: every message with why it is there; nothing is consumed.
    listed = await trackctl(broker, "list", "logger", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["queue"] == dead and document["count"] == 4
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for item in document["messages"]:
        by_reason.setdefault(item["reason"], []).append(item)
    assert sorted(e for m in by_reason["rejected"] for e in m["event_ids"]) == sorted(ids[:2])
    assert {m["error"] for m in by_reason["rejected"]} == {"bad click"}
    [exhausted] = by_reason["exhausted"]
    assert exhausted["event_ids"] == [ids[2]] and exhausted["attempts"] == 2
    assert exhausted["error"] == "gave up after 2 attempts: database down"
    [malformed] = by_reason["malformed"]
    assert malformed["event_ids"] == [] and malformed["error"].startswith("not JSON")
    for item in document["messages"]:
        assert item["routing_key"] == CLICK_TRACKED and item["dead_at"]
    table = await trackctl(broker, "list", "logger")
    assert table.returncode == 0
    assert f"{dead}: 4 messages" in table.stdout
    assert "rejected" in table.stdout and "exhausted" in table.stdout and ids[0] in table.stdout
    assert await wait_count(side, dead, 4) == 4

    # show: one message in full, by event id; a missing one is an error.
    shown = await trackctl(broker, "show", "logger", "--event-id", ids[2], "--json")
    assert shown.returncode == 0, shown.stderr
    full = json.loads(shown.stdout)
    assert full["body"]["id"] == ids[2] and full["body"]["data"]["recipient_id"] == "rcpt-2"
    assert full["headers"]["x-dead-reason"] == "exhausted"
    text = await trackctl(broker, "show", "logger", "--event-id", ids[0])
    assert text.returncode == 0 and '"recipient_id": "rcpt-0"' in text.stdout
    assert (await trackctl(broker, "show", "logger", "--index", "9")).returncode == 1
    assert (await trackctl(broker, "show", "logger")).returncode == 2
    assert await wait_count(side, dead, 4) == 4

    # replay one, to the logger's own queue: same body, a fresh start (no attempt count).
    one = await trackctl(broker, "replay", "logger", "--event-id", ids[2])
    assert one.returncode == 0, one.stderr
    assert "replayed #" in one.stdout and f"queue {main}" in one.stdout
    assert await wait_count(side, dead, 3) == 3
    unknown = await trackctl(broker, "replay", "logger", "--event-id", "no-such-event")
    assert unknown.returncode == 1 and "no message with event id" in unknown.stderr
    assert await wait_count(side, dead, 3) == 3
    channel = await side.channel()
    [copy] = await get_messages(channel, main, 1)
    assert json.loads(copy.body)["id"] == ids[2]
    headers = copy.headers or {}
    assert "x-attempt" not in headers and "x-dead-reason" not in headers
    assert headers["x-original-routing-key"] == CLICK_TRACKED
    assert headers["x-replayed-from"] == dead

    # replay by reason through the exchange: the original routing key routes them.
    rejected = await trackctl(broker, "replay", "logger", "--reason", "rejected",
                              "--via-exchange", "--json")
    assert rejected.returncode == 0, rejected.stderr
    replayed = json.loads(rejected.stdout)["replayed"]
    assert sorted(e for m in replayed for e in m["event_ids"]) == sorted(ids[:2])
    assert {m["to"] for m in replayed} == {f"exchange {broker.exchange} key {CLICK_TRACKED}"}
    assert await wait_count(side, main, 2) == 2
    assert await wait_count(side, dead, 1) == 1

    # A publish that fails leaves the message where it was.
    await channel.queue_delete(main)
    failed = await trackctl(broker, "replay", "logger")
    assert failed.returncode == 1
    assert "stays in the dead-letter queue" in failed.stderr
    assert await wait_count(side, dead, 1) == 1

    # purge needs --yes.
    refused = await trackctl(broker, "purge", "logger")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await wait_count(side, dead, 1) == 1
    purged = await trackctl(broker, "purge", "logger", "--yes", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout)["purged"] == 1
    assert await wait_count(side, dead, 0) == 0

    # Usage and configuration errors.
    assert (await trackctl(broker, "list", "redirector")).returncode == 2
    env_broker = BrokerSettings(url=broker.url, exchange=f"{broker.exchange}-typo")
    missing = await trackctl(env_broker, "list", "logger")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
