"""`at_most`: the edge's bounded concurrency for handshakes and announcements."""

from __future__ import annotations

import asyncio

from services.edge.handlers import at_most


async def test_results_in_order_never_more_than_the_bound_at_once() -> None:
    running, peak = 0, 0

    async def work(item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (item % 3))
        running -= 1
        return item * 2

    assert await at_most(4, list(range(50)), work) == [i * 2 for i in range(50)]
    assert peak == 4
    assert await at_most(4, [], work) == []
