"""The one service life cycle: resources opened in order and closed in reverse, a
start-up the stop signal cancels wherever it is, and one started/stopped line each."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared.lifecycle import Lifecycle


class Opened:
    """Records what was opened and closed, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def resource(self, name: str) -> AsyncIterator[str]:
        self.events.append(f"open {name}")
        try:
            yield name
        finally:
            self.events.append(f"close {name}")

    def closer(self, name: str) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            await asyncio.sleep(0)
            self.events.append(f"close {name}")
        return close


async def open_then_hang(life: Lifecycle, opened: Opened, waiting: asyncio.Event) -> None:
    """A start-up that opens the database, then waits for a broker that never answers."""
    await life.enter(opened.resource("database"))
    waiting.set()
    await asyncio.Event().wait()
    life.on_stop(opened.closer("never registered"))


def lines(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == event]


async def test_resources_close_in_reverse_order_and_each_line_is_logged_once() -> None:
    opened = Opened()

    async def opener(life: Lifecycle) -> str:
        await life.enter(opened.resource("database"))
        life.on_stop(opened.closer("broker"))
        life.on_stop(lambda: opened.events.append("close consumer"))  # a plain function
        life.describe(queue="q")
        life.note(drained=True)
        life.summarize(lambda: {"handled": len(opened.events)})
        return "running"

    life = Lifecycle("svc")
    with capture_logs() as logs:
        assert await life.start(opener) == "running"
        await life.stop()
        await life.stop()  # once only
    assert opened.events == ["open database", "close consumer", "close broker",
                             "close database"]
    [started] = lines(logs, "svc.started")
    assert started["queue"] == "q" and isinstance(started["startup_s"], float)
    [stopping] = lines(logs, "svc.stopping")
    assert stopping["started"] is True and "reason" not in stopping
    [stopped] = lines(logs, "svc.stopped")
    assert stopped["started"] is True and stopped["drained"] is True
    assert stopped["handled"] == 4  # read after everything was closed
    assert life.stopping.is_set()


async def test_the_stop_signal_cancels_start_up_mid_step_and_closes_what_was_opened() -> None:
    opened = Opened()
    waiting = asyncio.Event()
    opener = functools.partial(open_then_hang, opened=opened, waiting=waiting)
    stop = asyncio.Event()
    with capture_logs() as logs:
        run = asyncio.create_task(Lifecycle("svc").run(opener, stop))
        await asyncio.wait_for(waiting.wait(), 1)
        stop.set()
        await asyncio.wait_for(run, 1)  # returns: no error, the process exits 0
    assert opened.events == ["open database", "close database"]
    assert not lines(logs, "svc.started")
    [stopping] = lines(logs, "svc.stopping")
    assert stopping["started"] is False and stopping["reason"] == "stopped during start-up"
    assert stopping["log_level"] == "info"
    [stopped] = lines(logs, "svc.stopped")
    assert stopped["started"] is False


async def test_run_serves_until_the_signal_then_stops() -> None:
    opened = Opened()

    async def opener(life: Lifecycle) -> None:
        await life.enter(opened.resource("database"))

    stop = asyncio.Event()
    run = asyncio.create_task(Lifecycle("svc").run(opener, stop))
    await asyncio.sleep(0.05)
    assert opened.events == ["open database"]
    assert not run.done()
    stop.set()
    await asyncio.wait_for(run, 1)
    assert opened.events == ["open database", "close database"]


async def test_a_failed_start_up_closes_what_it_opened_and_raises() -> None:
    opened = Opened()

    async def opener(life: Lifecycle) -> None:
        await life.enter(opened.resource("database"))
        raise RuntimeError("schema too old")

    with capture_logs() as logs, pytest.raises(RuntimeError, match="schema too old"):
        await Lifecycle("svc").run(opener, asyncio.Event())
    assert opened.events == ["open database", "close database"]
    [stopping] = lines(logs, "svc.stopping")
    assert stopping["reason"] == "start-up failed: RuntimeError: schema too old"
    # The failure is the one line the entry point prints; closing is only debug detail.
    assert {line["log_level"] for line in logs if line["event"].startswith("svc.")} == {"debug"}


async def test_cancelling_run_mid_start_up_closes_what_was_opened() -> None:
    opened = Opened()
    waiting = asyncio.Event()
    opener = functools.partial(open_then_hang, opened=opened, waiting=waiting)
    run = asyncio.create_task(Lifecycle("svc").run(opener, asyncio.Event()))
    await asyncio.wait_for(waiting.wait(), 1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert opened.events == ["open database", "close database"]


async def test_a_quiet_closer_failing_does_not_stop_the_others_a_loud_one_is_raised() -> None:
    opened = Opened()

    def broken() -> None:
        raise ConnectionError("already gone")

    async def opener(life: Lifecycle) -> None:
        await life.enter(opened.resource("database"))
        life.on_stop(broken, quiet=True)

    life = Lifecycle("svc")
    await life.start(opener)
    await life.stop()
    assert opened.events == ["open database", "close database"]

    async def loud(life: Lifecycle) -> None:
        await life.enter(opened.resource("engine"))
        life.on_stop(broken)

    life = Lifecycle("svc")
    await life.start(loud)
    with pytest.raises(ConnectionError):
        await life.stop()
    assert opened.events[-1] == "close engine"  # still closed


async def test_the_drain_timeout_counts_from_the_moment_stopping_begins() -> None:
    seen: list[float] = []

    async def opener(life: Lifecycle) -> None:
        async def drain() -> None:
            seen.append(life.remaining_s())
            await asyncio.sleep(0.2)
            seen.append(life.remaining_s())
        life.on_stop(drain)

    life = Lifecycle("svc", drain_timeout_s=5.0)
    await life.start(opener)
    assert life.remaining_s() == 5.0  # not stopping yet
    await asyncio.sleep(0.1)  # time before the stop does not count
    await life.stop()
    assert 4.9 < seen[0] <= 5.0
    assert 4.6 < seen[1] < 4.85
    with pytest.raises(ValueError, match="no drain timeout"):
        Lifecycle("other").remaining_s()


async def test_a_start_up_that_exits_closes_what_it_opened_and_exits_from_run() -> None:
    opened = Opened()

    async def opener(life: Lifecycle) -> None:
        await life.enter(opened.resource("database"))
        raise SystemExit("svc: database schema is at revision none")

    with pytest.raises(SystemExit, match="schema is at revision none"):
        await Lifecycle("svc").run(opener, asyncio.Event())
    assert opened.events == ["open database", "close database"]
