"""PostgreSQL vanishes for a few seconds under the logger: nothing is acked while it is gone,
the broker keeps the clicks, and the logger catches up by itself once it is back."""

from __future__ import annotations

import asyncio

from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings
from tests.fault.harness import (
    Services,
    assert_exactly_once,
    click_stream,
    count_rows,
    db_target,
    db_via,
    log_lines,
    mint_tokens,
    proxy_to,
    queue_depth,
    start_logger,
    start_redirector,
    wait_rows,
)

CLICKS = 1500
RATE = 250.0
CUT_AT_S = 1.5
CUT_FOR_S = 3.0


async def test_logger_holds_clicks_while_the_database_is_down_and_catches_up(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner) -> None:
    with proxy_to(db_target(database.url)) as proxy:
        # A small prefetch, so that the clicks published during the cut (a few dozen
        # messages now that the redirector batches them well below saturation) are more
        # than the logger may hold unacked: the rest must stay ready in the broker.
        logger = await start_logger(services, DATABASE_URL=db_via(database.url, proxy),
                                    LOGGER_PREFETCH="4")
        redirector, base = await start_redirector(services)  # reaches the database directly
        await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)

        observed: dict[str, int] = {}

        async def outage() -> None:
            await asyncio.sleep(CUT_AT_S)
            await asyncio.to_thread(proxy.cut)
            await asyncio.sleep(1.0)  # whatever was committing when cut has settled
            observed["rows_after_cut"] = await count_rows(database)
            await asyncio.sleep(CUT_FOR_S - 1.0)
            observed["rows_before_restore"] = await count_rows(database)
            observed["ready_in_queue"], observed["consumers"] = await queue_depth(
                broker, "logger")
            await asyncio.to_thread(proxy.restore)

        outage_task = asyncio.create_task(outage())
        result = await click_stream(base, mint_tokens(signer, CLICKS, "db-cut"), rate=RATE)
        await outage_task
        assert result.statuses() == {302: CLICKS}, result.statuses()

        counts = await wait_rows(database, CLICKS, timeout_s=30)
        print(f"during the cut: {observed}; rows at the end: {counts.rows}")
        assert observed["rows_before_restore"] == observed["rows_after_cut"], (
            "rows were written through a cut database?")
        assert observed["rows_before_restore"] < CLICKS
        # Nothing was acked without its row: the broker still held clicks beyond prefetch.
        assert observed["ready_in_queue"] > 0, observed
        assert observed["consumers"] == 1, observed
        assert log_lines(logger, '"clicks.write_failed"'), "the outage was never noticed"
        assert_exactly_once(counts, result.served)
        assert counts.rows == CLICKS
        assert logger.process is not None and logger.process.poll() is None, "logger died"
        assert logger.terminate() == 0
        assert redirector.terminate() == 0
