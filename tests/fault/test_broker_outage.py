"""RabbitMQ vanishes for a few seconds mid-stream: clicks keep getting 302s at once, are
spooled, and every one becomes exactly one row once the broker is back."""

from __future__ import annotations

import asyncio
import time

from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings
from tests.fault.harness import (
    Services,
    amqp_target,
    amqp_via,
    assert_exactly_once,
    click_stream,
    http_status,
    mint_tokens,
    proxy_to,
    start_logger,
    start_redirector,
    tail,
    wait_rows,
)

CLICKS = 1500
RATE = 250.0  # per second: ~6 s of traffic
CUT_AT_S = 1.5
CUT_FOR_S = 3.0
MAX_LATENCY_S = 0.5


async def test_clicks_are_served_and_kept_while_the_broker_is_down(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner) -> None:
    with proxy_to(amqp_target(broker.url)) as proxy:
        proxied = amqp_via(broker.url, proxy)
        logger = await start_logger(services, AMQP_URL=proxied)
        redirector, base = await start_redirector(services, AMQP_URL=proxied)
        await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)
        assert await http_status(f"{base}/readyz") == 200

        tokens = mint_tokens(signer, CLICKS, "outage")
        readiness: list[tuple[float, int | None]] = []
        stream_done = asyncio.Event()
        started = time.monotonic()
        cut_window: list[float] = []

        async def poll_readiness() -> None:
            while not stream_done.is_set():
                readiness.append((time.monotonic() - started,
                                  await http_status(f"{base}/readyz", timeout_s=1.0)))
                await asyncio.sleep(0.1)

        async def outage() -> None:
            await asyncio.sleep(CUT_AT_S)
            await asyncio.to_thread(proxy.cut)
            cut_window.append(time.monotonic() - started)
            await asyncio.sleep(CUT_FOR_S)
            cut_window.append(time.monotonic() - started)
            await asyncio.to_thread(proxy.restore)

        poller = asyncio.create_task(poll_readiness())
        outage_task = asyncio.create_task(outage())
        result = await click_stream(base, tokens, rate=RATE)
        await outage_task
        stream_done.set()
        await poller

        statuses = result.statuses()
        changes = [(round(at, 1), status) for i, (at, status) in enumerate(readiness)
                   if i == 0 or status != readiness[i - 1][1]]
        print(f"stream {result.duration:.1f}s, max latency {result.max_latency() * 1000:.0f}ms, "
              f"cut at {cut_window}, /readyz changes {changes}")
        assert statuses == {302: CLICKS}, f"not every click answered 302: {statuses}"
        assert result.max_latency() < MAX_LATENCY_S, (
            f"a 302 waited {result.max_latency():.3f}s: the response path waited on the broker")
        cut_from, cut_to = cut_window
        during_cut = [status for at, status in readiness if cut_from + 1.0 <= at <= cut_to]
        assert during_cut and all(status == 503 for status in during_cut), (
            f"/readyz while the broker was cut (from {cut_from:.1f}s to {cut_to:.1f}s): "
            f"{readiness}")

        deadline = time.monotonic() + 15
        ready = None
        while time.monotonic() < deadline:
            ready = await http_status(f"{base}/readyz")
            if ready == 200:
                break
            await asyncio.sleep(0.2)
        assert ready == 200, f"/readyz never recovered after restore:\n{tail(redirector)}"

        counts = await wait_rows(database, CLICKS, timeout_s=30)
        assert_exactly_once(counts, result.served)
        assert counts.rows == CLICKS
        assert redirector.process is not None and redirector.process.poll() is None
        assert logger.process is not None and logger.process.poll() is None
        assert redirector.terminate() == 0
        assert logger.terminate() == 0
