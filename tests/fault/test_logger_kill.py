"""The logger is SIGKILLed half-way through a backlog: committed-but-unacked messages are
redelivered to the next logger, and every click still ends as exactly one row."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from shared.settings import BrokerSettings, DatabaseSettings
from tests.fault.harness import (
    Services,
    amqp_target,
    amqp_via,
    assert_exactly_once,
    asyncpg_dsn,
    batch_message,
    click_event,
    count_rows,
    log_lines,
    proxy_to,
    publish_raw,
    queue_depth,
    start_logger,
    wait_rows,
)

CLICKS = 20_000
PER_MESSAGE = 250  # what the forwarder sends under load: many clicks per message


async def test_sigkill_mid_backlog_then_restart_stores_each_click_once(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    recipients = [f"backlog-{number}" for number in range(CLICKS)]
    events = [click_event(recipient) for recipient in recipients]
    await publish_raw(broker, [batch_message(events[start:start + PER_MESSAGE])
                               for start in range(0, CLICKS, PER_MESSAGE)])
    assert (await queue_depth(broker, "logger"))[0] == CLICKS // PER_MESSAGE

    # Small commits, so there is a long "some but not all rows" window to kill in.
    env = {"LOGGER_BATCH_ROWS": "500"}
    first = services.start("logger", **env)
    connection = await asyncpg.connect(asyncpg_dsn(database))
    try:
        rows_at_kill = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows_at_kill = await connection.fetchval("SELECT count(*) FROM tracking_logs")
            if rows_at_kill >= 1000:
                break
            await asyncio.sleep(0.005)
        first.kill()
        rows_at_kill = await connection.fetchval("SELECT count(*) FROM tracking_logs")
    finally:
        await connection.close()
    assert 0 < rows_at_kill < CLICKS, (
        f"killed with {rows_at_kill} of {CLICKS} rows: not mid-way, the test proves nothing")

    second = await start_logger(services, **env)
    counts = await wait_rows(database, CLICKS, timeout_s=40)
    committed = sum(int(line.split('"duplicates": ')[1].split(",")[0])
                    for line in log_lines(second, '"clicks.committed"'))
    print(f"rows at kill: {rows_at_kill}, rows after restart: {counts.rows}, "
          f"duplicates skipped by the second logger: {committed}")
    assert_exactly_once(counts, recipients)
    assert counts.rows == CLICKS
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not (await queue_depth(broker, "logger"))[0]:
            break
        await asyncio.sleep(0.2)
    assert (await queue_depth(broker, "logger"))[0] == 0
    assert second.process is not None and second.process.poll() is None
    assert second.terminate() == 0


async def test_rows_committed_whose_acks_never_reached_the_broker_are_not_stored_twice(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    """Cut the logger's broker link mid-backlog (its acks are lost while it keeps committing
    the rows in hand), SIGKILL it, restart: the redelivered messages add no row."""
    recipients = [f"lost-ack-{number}" for number in range(CLICKS)]
    events = [click_event(recipient) for recipient in recipients]
    await publish_raw(broker, [batch_message(events[start:start + PER_MESSAGE])
                               for start in range(0, CLICKS, PER_MESSAGE)])
    env = {"LOGGER_BATCH_ROWS": "500"}
    with proxy_to(amqp_target(broker.url)) as proxy:
        first = services.start("logger", AMQP_URL=amqp_via(broker.url, proxy), **env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await count_rows(database) >= 1000:
                break
            await asyncio.sleep(0.005)
        await asyncio.to_thread(proxy.cut)
        await asyncio.sleep(1.5)  # the rows in hand get committed; their acks cannot leave
        first.kill()
    rows_at_kill = await count_rows(database)
    assert 0 < rows_at_kill < CLICKS, f"{rows_at_kill} rows at the kill: not mid-way"

    second = await start_logger(services, **env)
    counts = await wait_rows(database, CLICKS, timeout_s=40)
    duplicates = sum(int(line.split('"duplicates": ')[1].split(",")[0])
                     for line in log_lines(second, '"clicks.committed"'))
    print(f"rows at kill: {rows_at_kill}, rows after restart: {counts.rows}, "
          f"redelivered clicks skipped as duplicates: {duplicates}")
    assert duplicates > 0, "no redelivery of committed rows happened: the test proves nothing"
    assert_exactly_once(counts, recipients)
    assert counts.rows == CLICKS
    assert second.process is not None and second.process.poll() is None
    assert second.terminate() == 0
