"""The logger's batch writer, against an in-memory store: when it flushes, when waiters return."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.logger.batcher import BatchWriter
from services.logger.database import Row
from shared.errors import PermanentError

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(n: int, *, url: str = "https://example.com/") -> Row:
    return (f"evt-{n}", "cust", "camp", f"r{n}", "track.example.com", url, None, None, "GET",
            WHEN, False, None, None)


class Refused(Exception):
    """What the fake database raises for rows it cannot store."""


class FakeStore:
    """Commits are lists of rows; `fail` makes the next inserts raise; 'BAD' URLs are refused."""

    def __init__(self) -> None:
        self.commits: list[list[Row]] = []
        self.calls = 0
        self.fail = 0
        self.gate: asyncio.Event | None = None
        self.stored: set[str] = set()
        self.called = asyncio.Event()

    async def wait_calls(self, count: int) -> None:
        while self.calls < count:
            self.called.clear()
            await asyncio.wait_for(self.called.wait(), timeout=2.0)

    async def insert(self, rows: Sequence[Row]) -> int:
        self.calls += 1
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database is down")
        if any(r[5] == "BAD" for r in rows):
            raise Refused("invalid byte sequence")
        self.commits.append(list(rows))
        new = {r[0] for r in rows} - self.stored
        self.stored |= new
        return len(new)

    def rejects_data(self, exc: BaseException) -> bool:
        return isinstance(exc, Refused)


@pytest.fixture
async def store_and_writer():
    writers: list[BatchWriter] = []

    def make(**kwargs) -> tuple[FakeStore, BatchWriter]:
        store = FakeStore()
        writer = BatchWriter(store, **kwargs)
        writer.start()
        writers.append(writer)
        return store, writer

    yield make
    for writer in writers:
        await writer.stop(timeout_s=1.0)


async def test_flush_on_size_without_waiting_for_the_timer(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=4, flush_s=60.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(asyncio.gather(writer.add([row(1), row(2)]),
                                          writer.add([row(3), row(4)])), timeout=2.0)
    assert loop.time() - started < 1.0
    assert store.commits == [[row(1), row(2), row(3), row(4)]]
    assert writer.committed == 4


async def test_one_big_message_flushes_at_once(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=3, flush_s=60.0)
    await asyncio.wait_for(writer.add([row(n) for n in range(5)]), timeout=2.0)
    assert store.commits == [[row(n) for n in range(5)]]  # a message's rows stay together


async def test_flush_after_flush_s(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=1000, flush_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(writer.add([row(1)]), timeout=2.0)
    elapsed = loop.time() - started
    assert 0.04 <= elapsed < 1.0
    assert store.commits == [[row(1)]]


async def test_rows_of_several_messages_share_a_commit(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=1000, flush_s=0.05)
    await asyncio.wait_for(asyncio.gather(*(writer.add([row(n)]) for n in range(10))),
                           timeout=2.0)
    assert store.commits == [[row(n) for n in range(10)]]


async def test_batches_are_split_at_max_rows(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=4, flush_s=0.01)
    await asyncio.wait_for(asyncio.gather(*(writer.add([row(n)]) for n in range(10))),
                           timeout=2.0)
    assert [len(c) for c in store.commits] == [4, 4, 2]
    assert [r for c in store.commits for r in c] == [row(n) for n in range(10)]


async def test_empty_add_returns_at_once(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=10, flush_s=60.0)
    await asyncio.wait_for(writer.add([]), timeout=0.5)
    assert store.calls == 0


async def test_waiters_return_only_after_the_commit(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=2, flush_s=0.0)
    store.gate = asyncio.Event()
    first = asyncio.create_task(writer.add([row(1)]))
    second = asyncio.create_task(writer.add([row(2)]))
    await store.wait_calls(1)
    await asyncio.sleep(0.02)
    assert not first.done() and not second.done()  # the insert has not finished
    assert store.commits == []
    store.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=2.0)
    assert [r for c in store.commits for r in c] == [row(1), row(2)]


async def test_failing_store_is_retried_and_nothing_returns_until_it_succeeds(
        store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=10, flush_s=0.0, max_backoff_s=0.05)
    store.fail = 3
    task = asyncio.create_task(writer.add([row(1), row(2)]))
    await store.wait_calls(2)
    assert not task.done()
    assert not writer.healthy
    assert store.commits == []
    await asyncio.wait_for(task, timeout=2.0)
    assert store.calls == 4
    assert store.commits == [[row(1), row(2)]]
    assert writer.healthy
    assert writer.committed == 2


async def test_duplicates_are_not_counted_twice(store_and_writer) -> None:
    _, writer = store_and_writer(max_rows=10, flush_s=0.0)
    await writer.add([row(1), row(2)])
    await writer.add([row(2), row(3)])
    assert writer.committed == 3


async def test_unstorable_message_fails_alone(store_and_writer) -> None:
    store, writer = store_and_writer(max_rows=100, flush_s=0.05)
    good = [writer.add([row(n)]) for n in range(3)]
    bad = writer.add([row(9, url="BAD")])
    results = await asyncio.wait_for(
        asyncio.gather(*good, bad, writer.add([row(4)]), return_exceptions=True), timeout=2.0)
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], PermanentError)
    assert results[4] is None
    assert store.stored == {"evt-0", "evt-1", "evt-2", "evt-4"}
    assert writer.healthy


async def test_stop_writes_what_is_held_without_waiting() -> None:
    store = FakeStore()
    writer = BatchWriter(store, max_rows=1000, flush_s=60.0)
    writer.start()
    task = asyncio.create_task(writer.add([row(1)]))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writer.stop(timeout_s=2.0)
    assert loop.time() - started < 1.0
    await asyncio.wait_for(task, timeout=1.0)
    assert store.commits == [[row(1)]]


async def test_stop_gives_up_after_its_timeout() -> None:
    store = FakeStore()
    store.fail = 10_000
    writer = BatchWriter(store, max_rows=10, flush_s=0.0, max_backoff_s=0.01)
    writer.start()
    task = asyncio.create_task(writer.add([row(1)]))
    await asyncio.sleep(0.02)
    await writer.stop(timeout_s=0.1)
    assert store.commits == []
    assert not task.done()  # never acked: the broker will redeliver the message
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
