"""The redirector stops (gracefully with the broker gone, or killed mid-stream) and starts
again on the same spool: every click it answered 302 becomes exactly one row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings
from tests.fault.harness import (
    Services,
    amqp_target,
    amqp_via,
    assert_exactly_once,
    click_stream,
    count_rows,
    log_lines,
    mint_tokens,
    proxy_to,
    start_logger,
    start_redirector,
    wait_rows,
)


def _spooled_bytes(spool: Path) -> int:
    return sum(path.stat().st_size for path in spool.rglob("*.spool"))


def _logged(line: str) -> dict[str, Any]:
    """The JSON fields of a service's log line (values of any JSON type)."""
    return json.loads(line[line.index("{"):])


async def test_sigterm_while_broker_is_cut_keeps_spooled_clicks_for_the_next_start(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    logger = await start_logger(services)  # the logger reaches the broker directly
    with proxy_to(amqp_target(broker.url)) as proxy:
        env = {"AMQP_URL": amqp_via(broker.url, proxy), "DRAIN_TIMEOUT_S": "2"}
        redirector, base = await start_redirector(services, port=None, **env)
        await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)

        before = await click_stream(base, mint_tokens(signer, 100, "before"), rate=200)
        assert before.statuses() == {302: 100}
        assert (await wait_rows(database, 100, timeout_s=15, settle_s=0.2)).rows == 100

        await asyncio.to_thread(proxy.cut)
        during = await click_stream(base, mint_tokens(signer, 400, "cut"), rate=400)
        assert during.statuses() == {302: 400}, during.statuses()
        await asyncio.sleep(1.0)
        assert await count_rows(database) == 100, "clicks got through a cut broker?"

        exit_code = await asyncio.to_thread(redirector.terminate, 30.0)
        assert exit_code == 0
        stopped = _logged(log_lines(redirector, "redirector.stopped")[-1])
        assert stopped["drained"] is False
        assert int(stopped["left_in_spool_bytes"]) > 0
        assert _spooled_bytes(spool) > 0, "the spooled clicks are gone from disk"

        proxy.restore()
        again, _ = await start_redirector(services, port=None, **env)
        started = _logged(log_lines(again, "redirector.started")[-1])
        assert int(started["recovered_clicks"]) >= 400

        counts = await wait_rows(database, 500, timeout_s=30)
        assert_exactly_once(counts, before.served | during.served)
        assert counts.rows == 500
        assert again.terminate() == 0
    assert logger.terminate() == 0


async def test_sigkill_mid_stream_loses_no_served_click_and_duplicates_none(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner) -> None:
    logger = await start_logger(services)
    redirector, base = await start_redirector(services)
    await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)

    stop = asyncio.Event()

    async def kill_soon() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(redirector.kill)
        stop.set()

    killer = asyncio.create_task(kill_soon())
    killed = await click_stream(base, mint_tokens(signer, 1200, "killed"), rate=300,
                                stop=stop, timeout_s=5)
    await killer
    statuses = killed.statuses()
    assert statuses[302] > 200, f"the kill came too early to mean anything: {statuses}"
    assert set(statuses) <= {302, None}, statuses
    # Only requests in flight at the kill may end without an answer.
    assert len(killed.ambiguous) <= 100, statuses

    again, base = await start_redirector(services)
    recovered = _logged(log_lines(again, "redirector.started")[-1])["recovered_clicks"]
    after = await click_stream(base, mint_tokens(signer, 200, "after"), rate=300)
    assert after.statuses() == {302: 200}

    served = killed.served | after.served
    counts = await wait_rows(database, len(served), timeout_s=30)
    print(f"killed stream: {statuses}, recovered_clicks={recovered}, rows={counts.rows}")
    assert_exactly_once(counts, served, killed.ambiguous)
    assert again.terminate() == 0
    assert logger.terminate() == 0
