"""The logger's bench: a queue pre-loaded with click events, drained into committed rows
by the real logger process, beside one asyncpg COPY of the same rows into an identical
(freshly migrated) table, and the logger's own SQL without the broker or the process.

The events are CloudEvents batches of FORWARD_BATCH clicks, exactly as the redirector's
forwarder publishes them; the logger's rate is taken from its own log (`logger.started`
to the commit of the last row).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg

from bench.cpu import cpu_percent, cpu_snapshot, wait_quiet
from bench.links import TRACKING_HOST, USER_AGENT, Links
from bench.measure import FOREIGN_LIMIT, Config
from bench.progress import say
from bench.pyspy import finish_pyspy, start_pyspy
from bench.scratch import database_name, dsn, fresh_database, fresh_namespace, wait_rows
from bench.systems import command_line, running
from demo.processes import ServiceProcess
from services.logger import database as logger_db
from services.logger.database import COLUMNS
from services.logger.handlers import to_row
from services.redirector.event_ids import EventIds
from shared.broker import topology as broker_topology
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE
from shared.broker.publisher import Publisher
from shared.events import ClickTracked, Event, decode_message, encode_batch, encode_event
from shared.settings import DatabaseSettings

FORWARD_BATCH = 500  # the redirector's CLICK_BATCH_SIZE default
PROFILED_RUN = 99


def make_events(links: Links, count: int) -> list[bytes]:
    source = f"/redirector/{socket.gethostname()}/{os.getpid()}"
    ids = EventIds()  # the redirector's own (time-ordered) click ids
    events = []
    for i in range(count):
        _token, fields = links[i % len(links)]
        events.append(encode_event(
            ClickTracked(customer_id=fields["customer_id"], campaign_id=fields["campaign_id"],
                         recipient_id=fields["recipient_id"], domain=TRACKING_HOST,
                         url=fields["url"], ip="127.0.0.1", user_agent=USER_AGENT,
                         method="GET", bot=False, bot_reason=None),
            source=source, event_id=ids.next(), time=datetime.now(UTC)))
    return events


async def preload(amqp_url: str, exchange: str, events: list[bytes]) -> float:
    """Publish the events as the forwarder does: batches of 500, batched mode, confirms."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = broker_topology.Topology(exchange)
        amqp_exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, amqp_exchange, source="/bench/preload")
        bodies = [encode_batch(events[i:i + FORWARD_BATCH])
                  for i in range(0, len(events), FORWARD_BATCH)]
        t0 = time.monotonic()
        for i in range(0, len(bodies), 8):  # a few in flight, like the forwarder's 4
            await asyncio.gather(*(publisher.publish(CLICK_TRACKED, body, batch=True)
                                   for body in bodies[i:i + 8]))
        elapsed = time.monotonic() - t0
        queue = await channel.declare_queue(topology.queue(LOGGER_QUEUE), passive=True)
        ready = queue.declaration_result.message_count
        if ready != len(bodies):
            raise RuntimeError(f"queue holds {ready} messages, expected {len(bodies)}")
        return elapsed


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


@dataclass
class LoggerRun:
    rows: int
    seconds: float          # logger.started -> commit of the last row (logger's own clock)
    wall_s: float           # process spawn -> all rows counted
    preload_s: float
    commits: int
    cpu: dict[str, float]

    @property
    def rps(self) -> float:
        return self.rows / self.seconds


def bench_logger_once(cfg: Config, events: list[bytes], number: int) -> tuple[LoggerRun, str]:
    with (fresh_database(cfg.servers, "logger") as database,
          fresh_namespace(cfg.servers, "logger") as exchange):
        preload_s = asyncio.run(asyncio.wait_for(
            preload(cfg.servers.amqp_url, exchange, events), timeout=120))
        wait_quiet()
        env = {"AMQP_URL": cfg.servers.amqp_url, "AMQP_EXCHANGE": exchange,
               "DATABASE_URL": dsn(database)}
        before = cpu_snapshot({})
        with running(ServiceProcess("logger", env, cfg.out)) as logger:
            t_spawn = time.monotonic()
            spies = {}
            if cfg.profile and number == PROFILED_RUN:
                spies["logger-queue"] = start_pyspy(cfg.profile, cfg.out, logger.pid,
                                                    "logger-queue", 15)
            try:
                rows, reached = wait_rows(database, len(events), timeout_s=180, quiet_s=0.3)
                wall = time.monotonic() - t_spawn
                after = cpu_snapshot({"logger": logger.pid})
            finally:
                logger.terminate(40)
                finish_pyspy(cfg.out, spies)
        command = (command_line(logger.argv, env)
                   .replace(database_name(database), "bench_logger_<id>")
                   .replace(exchange, "bench-logger-<id>"))
    if rows != len(events) or reached is None:
        raise RuntimeError(f"logger committed {rows} rows, expected {len(events)}")
    lines = [json.loads(line) for line in logger.log_text().splitlines()
             if line.startswith("{")]
    started = next(_ts(x) for x in lines if x.get("event") == "logger.started")
    commits = [x for x in lines if x.get("event") == "clicks.committed"]
    total, last = 0, started
    for commit in commits:
        total += commit["inserted"]
        last = _ts(commit)
        if total >= len(events):
            break
    seconds = last - started
    cpu = cpu_percent(before, after, wall)
    run = LoggerRun(rows=rows, seconds=seconds, wall_s=wall, preload_s=preload_s,
                    commits=len(commits), cpu=cpu)
    say(f"  logger-{number}: {rows:,} rows in {seconds:.2f} s = {run.rps:,.0f} rows/s "
        f"({len(commits)} commits; spawn-to-done {wall:.2f} s; preload {preload_s:.1f} s; "
        f"cpu over spawn-to-done {cpu})")
    return run, command


async def _write_batches(connections: list[asyncpg.Connection], rows: list[tuple[Any, ...]],
                         merge: bool) -> None:
    """5000-row transactions, as the logger commits them, from `len(connections)` writers."""
    batches = [rows[i:i + 5000] for i in range(0, len(rows), 5000)]
    batches.reverse()

    async def writer(connection: asyncpg.Connection) -> None:
        while batches:
            batch = batches.pop()
            async with connection.transaction():
                if merge:  # the logger's SQL: staging COPY + INSERT ... SELECT ON CONFLICT
                    await connection.execute(logger_db._CREATE_STAGING)
                    await connection.copy_records_to_table(
                        logger_db._STAGING, records=batch, columns=COLUMNS)
                    await connection.execute(logger_db._MERGE)
                else:
                    await connection.copy_records_to_table(
                        "tracking_logs", records=batch, columns=COLUMNS)

    await asyncio.gather(*(writer(c) for c in connections))


COPY_VARIANTS = {
    "copy": "raw asyncpg COPY into tracking_logs (one COPY of all rows)",
    "copy_5000": "plain COPY into tracking_logs in 5000-row transactions, one connection "
                 "(the logger's write when no row is a duplicate)",
    "logger_sql": "staging COPY + INSERT..SELECT ON CONFLICT (the logger's path for "
                  "redelivered rows), 5000-row transactions, one connection",
    "logger_sql_x2": "the same with two concurrent connections",
}


async def copy_runs(rows: list[tuple[Any, ...]], runs: int,
                    database: DatabaseSettings) -> dict[str, list[float]]:
    """The raw-COPY baseline, then (for the diagnosis) the logger's SQL without the broker
    or the logger process, on one and two connections, and COPY in the logger's batches."""
    connections = [await asyncpg.connect(dsn(database)) for _ in range(2)]
    results: dict[str, list[float]] = {name: [] for name in COPY_VARIANTS}
    try:
        for name in COPY_VARIANTS:
            for number in range(1, runs + 1):
                await connections[0].execute("TRUNCATE tracking_logs")
                t0 = time.perf_counter()
                if name == "copy":
                    await connections[0].copy_records_to_table(
                        "tracking_logs", records=rows, columns=COLUMNS)
                else:
                    await _write_batches(connections[:2 if name.endswith("x2") else 1], rows,
                                         merge=name.startswith("logger_sql"))
                elapsed = time.perf_counter() - t0
                results[name].append(len(rows) / elapsed)
                say(f"  {name}-{number}: {len(rows):,} rows in {elapsed:.2f} s = "
                    f"{len(rows) / elapsed:,.0f} rows/s")
    finally:
        for connection in connections:
            await connection.close()
    return results


def bench_logger(cfg: Config, links: Links) -> dict[str, Any]:
    events = make_events(links, cfg.logger_rows)
    runs: list[LoggerRun] = []
    command = ""
    disturbed: list[LoggerRun] = []
    for number in range(1, 2 * cfg.logger_runs + 1):
        if len(runs) >= cfg.logger_runs:
            break
        run, command = bench_logger_once(cfg, events, number)
        if run.cpu.get("other", 0.0) > FOREIGN_LIMIT or run.cpu.get("rabbitmq", 0.0) > 20:
            say("    disturbed by another job; will repeat it")
            disturbed.append(run)
        else:
            runs.append(run)
    runs = (runs + disturbed)[:cfg.logger_runs]
    if cfg.profile:  # an extra, profiled run (not counted)
        bench_logger_once(cfg, events, PROFILED_RUN)
    decoded = decode_message(encode_batch(events), "application/cloudevents-batch+json")
    rows = [to_row(e) for e in decoded if isinstance(e, Event)]
    assert len(rows) == len(events)
    with fresh_database(cfg.servers, "copy") as database:
        wait_quiet()
        copies = asyncio.run(copy_runs(rows, cfg.logger_runs, database))
    return {"runs": runs, "command": command, "copy": copies}
