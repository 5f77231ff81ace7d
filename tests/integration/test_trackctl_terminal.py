"""trackctl never writes a control character from stored data to the terminal.

Stored data comes from customers, CAs, recipients' browsers and anyone who can publish
on the broker: a domain's last error, a customer id, a bot reason, a dead letter's body
and headers. An escape sequence in any of them, printed raw, could retitle the window,
clear the screen or rewrite what the operator sees. The real console script reads it
from the real PostgreSQL and RabbitMQ; its output must hold only printable text and
newlines (the control characters escaped as `\\xNN`), and `--json` must stay valid JSON
that gives the stored text back.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from datetime import UTC, datetime

import aio_pika

from demo.databases import execute
from demo.processes import ROOT
from shared.broker import topology as broker_topology
from shared.broker.names import LOGGER_QUEUE
from shared.broker.topology import Topology
from shared.settings import BrokerSettings, DatabaseSettings

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
NAME = "track.customer-a.test"
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\x08\rend"
# C0 but newline and tab, DEL, C1, and the bidi controls that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def trackctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TRACKCTL), *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def seed(database: DatabaseSettings, broker: BrokerSettings) -> None:
    async def _seed() -> None:
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                      "verified, last_error) VALUES ($1, $2, 'rejected', false, $3)",
                      NAME, f"cust-a{HOSTILE}", f"DNS said: {HOSTILE}\u202egnp.exe")
        await execute(database, "INSERT INTO tracking_logs (event_id, customer_id, campaign_id, "
                      "recipient_id, domain, url, method, clicked_at, bot, bot_reason) VALUES "
                      "('e1', 'cust-a', 'spring', 'r1', $1, 'https://x.test/', 'GET', $2, true, "
                      "$3)", NAME, datetime.now(UTC), f"user-agent:{HOSTILE}"[:100])
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            topology = Topology(broker.exchange)
            await broker_topology.declare(channel, topology)
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"id": HOSTILE}).encode("utf-8")
                                 + HOSTILE.encode("utf-8"),
                                 content_type="application/cloudevents+json",
                                 message_id=f"m{HOSTILE}",
                                 headers={"x-dead-reason": "malformed",
                                          "x-dead-error": f"not JSON: {HOSTILE}",
                                          "x-original-routing-key": "click.tracked"}),
                routing_key=topology.dead_queue(LOGGER_QUEUE))

    asyncio.run(_seed())


def test_stored_control_characters_are_escaped_never_written_raw(
        database: DatabaseSettings, broker: BrokerSettings) -> None:
    seed(database, broker)
    env = {"DATABASE_URL": database.url, "AMQP_URL": broker.url,
           "AMQP_EXCHANGE": broker.exchange, "TRACKING_HOST": "click.platform.test"}
    commands = [("domain", "list"), ("domain", "show", NAME),
                ("clicks", "--campaign", "spring"), ("dlq", "list", "logger"),
                ("dlq", "show", "logger", "--index", "1")]
    for command in commands:
        for as_json in (False, True):
            args = (*command, "--json") if as_json else command
            done = trackctl(env, *args)
            assert done.returncode == 0, (args, done.stderr)
            for stream in (done.stdout, done.stderr):
                raw = _UNSAFE.findall(stream)
                assert not raw, (args, raw, stream[:2000])
            if as_json:
                # The stored text comes back whole from the JSON (repr shows ESC as \x1b).
                assert "\\x1b]0;pwned" in repr(json.loads(done.stdout)), done.stdout[:2000]
            else:
                assert "\\x1b" in done.stdout, (args, done.stdout[:2000])
