"""Shutdown cancels long-running tasks; none of them may swallow that cancellation.

On Python 3.11, `asyncio.wait_for` returns the awaited call's result instead of
raising when a cancellation arrives just as that call finishes (fixed in 3.12).
A loop built on it then carries on after shutdown cancelled it, and the process
never exits: a CI run caught the redirector hanging 30 s after SIGTERM that way.
The code uses `asyncio.timeout`, which keeps the cancellation.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from services.redirector.forwarder import Forwarder
from services.redirector.spool import Spool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("turns", range(5))
async def test_the_forwarder_stops_when_cancelled_just_as_it_is_woken(
        tmp_path: Path, turns: int) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()

    async def publish(routing_key: str, body: bytes) -> None:
        raise AssertionError("nothing was spooled")

    forwarder = Forwarder(spool, linger_s=0, sync_interval_s=30)
    forwarder.attach(publish)
    task = asyncio.create_task(forwarder.run())
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # the loop is now waiting to be woken
        forwarder.notify()
        for _ in range(turns):  # `turns` steps into the wake-up, then the cancel
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done, "the forwarder kept running after it was cancelled"
        assert task.cancelled()
    finally:
        task.cancel()
        spool.close()


def test_no_asyncio_wait_for_in_the_services() -> None:
    uses = [f"{path.relative_to(ROOT)}:{number}"
            for folder in ("services", "shared")
            for path in sorted((ROOT / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if re.search(r"\basyncio\.wait_for\(", line)]
    assert uses == [], f"use asyncio.timeout instead (see this module's docstring): {uses}"
