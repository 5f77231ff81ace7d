"""The click spool: append, batch, confirm, retry, recover after a crash, share a root."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

import services.redirector.spool as spool_module
from services.redirector.forwarder import Forwarder
from services.redirector.spool import (
    LOCK_NAME,
    SEGMENT_SUFFIX,
    Batch,
    Spool,
    SpoolError,
    adopt_orphans_forever,
    fsync_all,
    unlink_all,
    unmap_all,
)


@pytest.fixture
def opened() -> Iterator[list[Spool]]:
    """Spools a test opened; whatever is still open at the end is closed."""
    spools: list[Spool] = []
    yield spools
    for spool in spools:
        crash(spool)


class SpoolOptions(TypedDict, total=False):
    """Spool's keyword arguments."""

    segment_bytes: int
    rotate_confirmed_bytes: int
    defer_unlinks: bool


def open_spool(root: Path, opened: list[Spool], **kwargs: Unpack[SpoolOptions]) -> Spool:
    spool = Spool(root, **kwargs)
    spool.open()
    opened.append(spool)
    return spool


def crash(spool: Spool) -> None:
    """What the kernel does when the process dies: unmap, close every descriptor, touch
    no file (the mapped pages stay in the page cache)."""
    if spool._map is not None:
        spool._map.close()
        spool._map = None
    fds = [spool._lock_fd, spool._write_fd, *(s.fd for s in spool._segments.values()),
           *(s.write_fd for s in spool._segments.values())]
    for fd in fds:
        if fd is not None:
            os.close(fd)
    spool._lock_fd = spool._write_fd = None
    for segment in spool._segments.values():
        segment.fd = segment.write_fd = None


def line(n: int) -> bytes:
    return b'{"id":"click-%06d"}' % n


def drain(spool: Spool, max_lines: int = 1000) -> list[bytes]:
    """Read and confirm everything pending."""
    lines: list[bytes] = []
    while (batch := spool.next_batch(max_lines)) is not None:
        lines.extend(batch.lines)
        spool.confirmed(batch)
    return lines


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


# --- append and read ------------------------------------------------------------------------

def test_append_then_read_in_order(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    for n in range(10):
        spool.append(line(n))
    assert spool.appended == 10
    assert spool.has_pending()
    assert drain(spool, max_lines=3) == [line(n) for n in range(10)]
    assert not spool.has_pending()
    assert spool.next_batch(10) is None


def test_lines_are_on_disk_when_append_returns(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    spool.append(line(1))
    spool.append(line(2))
    (segment,) = segments(tmp_path / "0")
    written = line(1) + b"\n" + line(2) + b"\n"
    data = segment.read_bytes()  # another reader sees the page cache the mapping wrote
    assert data[:len(written)] == written
    assert data[len(written):].count(0) == len(data) - len(written)  # the preallocated tail


def test_batch_limits(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    for n in range(10):
        spool.append(line(n))
    batch = spool.next_batch(4)
    assert batch is not None and batch.lines == [line(n) for n in range(4)]
    size = len(line(0)) + 1
    batch = spool.next_batch(100, max_bytes=size * 2 + 5)  # room for two whole lines
    assert batch is not None and batch.lines == [line(4), line(5)]


def test_line_longer_than_max_bytes_is_taken_whole(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    big = b"x" * 5000
    spool.append(big)
    spool.append(line(1))
    batch = spool.next_batch(10, max_bytes=100)
    assert batch is not None and batch.lines == [big]
    batch = spool.next_batch(10, max_bytes=100)
    assert batch is not None and batch.lines == [line(1)]


def test_backlog_bytes(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    assert spool.backlog_bytes() == 0
    for n in range(3):
        spool.append(line(n))
    size = len(line(0)) + 1
    assert spool.backlog_bytes() == 3 * size
    batch = spool.next_batch(2)
    assert batch is not None
    assert spool.backlog_bytes() == size
    spool.failed(batch)
    assert spool.backlog_bytes() == 3 * size  # a failed batch is pending again


def test_confirmed_rotated_segments_are_deleted(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened, segment_bytes=100)
    for n in range(20):
        spool.append(line(n))
    slot = tmp_path / "0"
    assert len(segments(slot)) > 3  # rotated several times
    batches = []
    while (batch := spool.next_batch(2)) is not None:
        batches.append(batch)
    assert [x for b in batches for x in b.lines] == [line(n) for n in range(20)]
    before = len(segments(slot))
    for batch in batches[:-1]:
        spool.confirmed(batch)
    assert len(segments(slot)) < before
    for batch in batches[-1:]:
        spool.confirmed(batch)
    # Only the active segment is left, and it holds nothing unread.
    remaining = segments(slot)
    assert len(remaining) <= 1
    assert not spool.has_pending()


def test_segment_is_kept_until_every_batch_from_it_is_confirmed(
        tmp_path: Path, opened: list[Spool]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=4 * size)
    for n in range(4):
        spool.append(line(n))  # the fourth fills the segment: rotated
    old = segments(tmp_path / "0")[0]
    assert len(segments(tmp_path / "0")) == 2
    first = spool.next_batch(2)
    second = spool.next_batch(2)
    assert first is not None and second is not None
    assert first.segment == second.segment == 1
    spool.confirmed(second)
    assert old.exists()  # `first` is still out
    spool.confirmed(first)
    assert not old.exists()


def test_failed_batch_is_retried_first(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened, segment_bytes=100)
    for n in range(8):
        spool.append(line(n))
    first = spool.next_batch(2)
    second = spool.next_batch(2)
    assert first is not None and second is not None
    spool.failed(first)
    spool.failed(second)
    assert spool.has_pending()
    again = spool.next_batch(2)
    assert again is not None and again.lines == first.lines
    spool.confirmed(again)
    again = spool.next_batch(2)
    assert again is not None and again.lines == second.lines
    spool.confirmed(again)
    assert drain(spool) == [line(n) for n in range(4, 8)]
    assert len(segments(tmp_path / "0")) <= 1


def test_confirming_a_batch_of_an_unknown_segment_is_harmless(
        tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    spool.confirmed(Batch(segment=999, lines=[b"x"]))


def test_sync_and_close(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    spool.sync()  # nothing written: no-op
    spool.append(line(1))
    spool.sync()
    spool.close()
    opened.remove(spool)
    assert len(segments(tmp_path / "0")) == 1


def test_close_leaves_a_segment_holding_only_its_lines(tmp_path: Path,
                                                      opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    spool.append(line(1))
    spool.close()
    opened.remove(spool)
    (segment,) = segments(tmp_path / "0")
    assert segment.read_bytes() == line(1) + b"\n"  # the preallocated tail is gone


def test_a_line_bigger_than_a_segment_gets_a_segment_of_its_own(
        tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened, segment_bytes=64)
    big = b'{"id":"' + b"x" * 200 + b'"}'
    spool.append(line(1))
    spool.append(big)
    spool.append(line(2))
    assert drain(spool, max_lines=1) == [line(1), big, line(2)]


def test_a_full_disk_fails_the_append_that_needs_a_segment_and_loses_nothing(
        tmp_path: Path, opened: list[Spool], monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size)
    spool.append(line(0))

    def disk_full(fd: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "preallocate", disk_full)
    spool.append(line(1))  # fills the segment: kept, though the next one cannot start
    with pytest.raises(OSError):
        spool.append(line(2))  # no room: refused, so its request gets no 302
    assert len(segments(tmp_path / "0")) == 1  # no half-made segment left behind
    batch = spool.next_batch(10)
    assert batch is not None and batch.lines == [line(0), line(1)]
    spool.confirmed(batch)  # would rotate the confirmed segment: tolerated
    monkeypatch.undo()
    spool.append(line(3))
    assert drain(spool) == [line(3)]


def test_close_removes_an_empty_active_segment(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    spool.close()
    opened.remove(spool)
    assert segments(tmp_path / "0") == []


# --- recovery -------------------------------------------------------------------------------

def test_close_and_reopen_keeps_unsent_lines(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    for n in range(5):
        spool.append(line(n))
    spool.close()
    opened.remove(spool)
    again = open_spool(tmp_path, opened)
    assert again.recovered == 5
    assert drain(again) == [line(n) for n in range(5)]


def test_confirmed_lines_are_not_sent_again_after_a_clean_restart(
        tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    for n in range(5):
        spool.append(line(n))
    assert drain(spool) == [line(n) for n in range(5)]
    spool.close()
    opened.remove(spool)
    again = open_spool(tmp_path, opened)
    assert not again.has_pending()
    assert drain(again) == []


def test_crash_recovery_finds_every_unconfirmed_line(tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened, segment_bytes=150)
    for n in range(30):
        spool.append(line(n))
    confirmed: list[bytes] = []
    for _ in range(3):  # the oldest lines made it to the broker
        batch = spool.next_batch(4)
        assert batch is not None
        confirmed.extend(batch.lines)
        spool.confirmed(batch)
    in_flight = spool.next_batch(4)  # read, published, never confirmed
    assert in_flight is not None
    failed = spool.next_batch(4)
    assert failed is not None
    spool.failed(failed)
    crash(spool)
    opened.remove(spool)

    after = open_spool(tmp_path, opened, segment_bytes=150)
    assert after._dir == tmp_path / "0"  # the free slot is reclaimed
    found = drain(after)
    unconfirmed = [line(n) for n in range(30) if line(n) not in confirmed]
    assert [x for x in found if x in unconfirmed] == unconfirmed  # all of them, in order
    assert len(found) == len(set(found))
    assert after.recovered == len(found)
    # New clicks come after the recovered ones.
    after.append(line(99))
    assert drain(after) == [line(99)]


def test_a_killed_process_leaves_its_lines_and_recovery_drops_the_preallocated_tail(
        tmp_path: Path) -> None:
    # A real process, killed with SIGKILL: what it copied into the mapping is in the page
    # cache, though it never closed, synced or unmapped anything.
    script = (
        "import sys, os, signal; from pathlib import Path\n"
        "from services.redirector.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1])); spool.open()\n"
        "for n in range(1000): spool.append(b'{\"id\":\"click-%06d\"}' % n)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path)], timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == -signal.SIGKILL
    (segment,) = segments(tmp_path / "0")
    assert segment.stat().st_size == 8 << 20  # preallocated, mostly zeros
    spool = Spool(tmp_path)
    spool.open()
    try:
        assert spool.recovered == 1000
        assert drain(spool) == [line(n) for n in range(1000)]
    finally:
        spool.close()


def test_a_line_cut_short_by_a_kill_is_dropped_before_the_zero_tail(
        tmp_path: Path, opened: list[Spool]) -> None:
    slot = tmp_path / "0"
    slot.mkdir(parents=True)
    segment = slot / f"{1:012d}{SEGMENT_SUFFIX}"
    segment.write_bytes(line(1) + b"\n" + b'{"id":"cli' + bytes(4096))
    spool = open_spool(tmp_path, opened)
    assert spool.recovered == 1
    assert segment.read_bytes() == line(1) + b"\n"
    assert drain(spool) == [line(1)]


def test_torn_last_line_is_dropped(tmp_path: Path, opened: list[Spool]) -> None:
    slot = tmp_path / "0"
    slot.mkdir(parents=True)
    (slot / LOCK_NAME).touch()
    segment = slot / f"{1:012d}{SEGMENT_SUFFIX}"
    segment.write_bytes(line(1) + b"\n" + line(2) + b"\n" + b'{"id":"cli')
    spool = open_spool(tmp_path, opened)
    assert spool.recovered == 2
    assert segment.read_bytes() == line(1) + b"\n" + line(2) + b"\n"  # cut at the last newline
    assert drain(spool) == [line(1), line(2)]


def test_segment_with_only_a_torn_line_is_removed(tmp_path: Path, opened: list[Spool]) -> None:
    slot = tmp_path / "0"
    slot.mkdir(parents=True)
    segment = slot / f"{7:012d}{SEGMENT_SUFFIX}"
    segment.write_bytes(b'{"id":"cli')
    empty = slot / f"{8:012d}{SEGMENT_SUFFIX}"
    empty.write_bytes(b"")
    spool = open_spool(tmp_path, opened)
    assert spool.recovered == 0
    assert not segment.exists()
    assert not empty.exists()
    assert not spool.has_pending()


def test_recovered_segments_keep_their_order(tmp_path: Path, opened: list[Spool]) -> None:
    slot = tmp_path / "0"
    slot.mkdir(parents=True)
    for seq, lines in ((3, [line(1), line(2)]), (10, [line(3)]), (11, [line(4), line(5)])):
        (slot / f"{seq:012d}{SEGMENT_SUFFIX}").write_bytes(b"".join(x + b"\n" for x in lines))
    spool = open_spool(tmp_path, opened)
    assert spool.recovered == 5
    spool.append(line(6))
    assert drain(spool, max_lines=1) == [line(n) for n in range(1, 7)]


# --- several spools on one root -------------------------------------------------------------

def test_two_spools_claim_different_slots(tmp_path: Path, opened: list[Spool]) -> None:
    first = open_spool(tmp_path, opened)
    second = open_spool(tmp_path, opened)
    assert first._dir == tmp_path / "0"
    assert second._dir == tmp_path / "1"
    first.append(line(1))
    second.append(line(2))
    assert drain(first) == [line(1)]
    assert drain(second) == [line(2)]  # a live owner's slot is never adopted


def test_live_slot_is_not_adopted(tmp_path: Path, opened: list[Spool]) -> None:
    first = open_spool(tmp_path, opened)
    first.append(line(1))
    second = open_spool(tmp_path, opened)
    assert not second.has_pending()
    assert drain(first) == [line(1)]


def test_slot_whose_owner_is_gone_is_adopted(tmp_path: Path, opened: list[Spool]) -> None:
    keeper = open_spool(tmp_path, opened)  # slot 0
    gone = open_spool(tmp_path, opened)    # slot 1
    for n in range(3):
        gone.append(line(n))
    crash(gone)
    opened.remove(gone)
    keeper.close()
    opened.remove(keeper)

    heir = open_spool(tmp_path, opened)
    assert heir._dir == tmp_path / "0"
    assert heir.recovered == 3
    assert segments(tmp_path / "1") == []  # moved out of the orphaned slot
    assert drain(heir) == [line(n) for n in range(3)]


def test_orphan_slot_made_by_hand_is_adopted(tmp_path: Path, opened: list[Spool]) -> None:
    orphan = tmp_path / "5"
    orphan.mkdir(parents=True)
    (orphan / LOCK_NAME).touch()
    (orphan / f"{1:012d}{SEGMENT_SUFFIX}").write_bytes(line(1) + b"\n" + line(2) + b"\n")
    (orphan / f"{2:012d}{SEGMENT_SUFFIX}").write_bytes(line(3) + b"\n")
    spool = open_spool(tmp_path, opened)
    assert spool._dir == tmp_path / "0"
    assert drain(spool) == [line(1), line(2), line(3)]
    assert segments(orphan) == []


def test_directory_without_a_lock_is_not_a_slot(tmp_path: Path, opened: list[Spool]) -> None:
    other = tmp_path / "not-a-slot"
    other.mkdir(parents=True)
    (other / f"{1:012d}{SEGMENT_SUFFIX}").write_bytes(line(1) + b"\n")
    spool = open_spool(tmp_path, opened)
    assert not spool.has_pending()
    assert len(segments(other)) == 1


def test_slot_locked_elsewhere_is_skipped(tmp_path: Path, opened: list[Spool]) -> None:
    slot = tmp_path / "0"
    slot.mkdir(parents=True)
    (slot / f"{1:012d}{SEGMENT_SUFFIX}").write_bytes(line(1) + b"\n")
    fd = os.open(slot / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another redirector holds slot 0
        spool = open_spool(tmp_path, opened)
        assert spool._dir == tmp_path / "1"
        assert not spool.has_pending()
        assert len(segments(slot)) == 1
    finally:
        os.close(fd)


def test_every_slot_taken(tmp_path: Path, opened: list[Spool],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "MAX_SLOTS", 2)
    open_spool(tmp_path, opened)
    open_spool(tmp_path, opened)
    with pytest.raises(SpoolError, match="all 2 spool slots"):
        Spool(tmp_path).open()


def test_a_running_spool_adopts_a_slot_whose_owner_died(tmp_path: Path,
                                                       opened: list[Spool]) -> None:
    survivor = open_spool(tmp_path, opened)  # slot 0, running on
    gone = open_spool(tmp_path, opened)      # slot 1, a replica scaled away
    survivor.append(line(100))
    for n in range(3):
        gone.append(line(n))
    assert survivor.adopt_orphans() == 0  # its owner still holds slot 1
    crash(gone)
    opened.remove(gone)

    assert survivor.adopt_orphans() == 3
    assert segments(tmp_path / "1") == []
    # The orphan's (older) clicks come first, then the survivor's own.
    assert drain(survivor) == [line(0), line(1), line(2), line(100)]
    assert survivor.adopt_orphans() == 0  # nothing is taken twice
    survivor.append(line(101))
    assert drain(survivor) == [line(101)]


def test_adopted_clicks_survive_the_adopter_crashing(tmp_path: Path,
                                                     opened: list[Spool]) -> None:
    adopter = open_spool(tmp_path, opened)
    gone = open_spool(tmp_path, opened)
    gone.append(line(1))
    crash(gone)
    opened.remove(gone)
    assert adopter.adopt_orphans() == 1
    crash(adopter)  # before publishing them
    opened.remove(adopter)
    heir = open_spool(tmp_path, opened)
    assert heir.recovered == 1
    assert drain(heir) == [line(1)]


async def test_adoption_runs_periodically_and_wakes_the_forwarder(
        tmp_path: Path, opened: list[Spool]) -> None:
    survivor = open_spool(tmp_path, opened)
    gone = open_spool(tmp_path, opened)
    gone.append(line(7))
    crash(gone)
    opened.remove(gone)
    woken = asyncio.Event()
    task = asyncio.create_task(adopt_orphans_forever(survivor, woken.set, interval_s=0.01))
    try:
        await asyncio.wait_for(woken.wait(), timeout=5)
    finally:
        task.cancel()
    assert drain(survivor) == [line(7)]


# --- fsync and unlink stay off the request path ---------------------------------------------

@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the inode of every descriptor the spool fsyncs (and still fsyncs it)."""
    seen: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fsync", recording)
    return seen


def test_rotating_never_fsyncs_and_a_later_sync_covers_the_rotated_segment(
        tmp_path: Path, opened: list[Spool], fsyncs: list[int]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size)
    for n in range(5):
        spool.append(line(n))  # rotates twice: on the 2nd and 4th line
    assert len(segments(tmp_path / "0")) == 3
    assert fsyncs == []  # the appends (the request path) never waited on the disk
    fds = spool.unsynced()
    assert len(fds) == 3  # both rotated segments (unconfirmed) and the active one
    fsync_all(fds)
    assert sorted(fsyncs) == sorted(p.stat().st_ino for p in segments(tmp_path / "0"))
    assert spool.unsynced() == []  # nothing written since
    spool.append(line(5))
    fds = spool.unsynced()
    assert len(fds) == 1  # only the active segment was written since
    fsync_all(fds)


def test_a_confirmed_rotated_segment_is_never_fsynced(
        tmp_path: Path, opened: list[Spool], fsyncs: list[int]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size)
    spool.append(line(0))
    spool.append(line(1))  # rotated
    assert drain(spool) == [line(0), line(1)]
    assert len(segments(tmp_path / "0")) == 1  # the rotated one is deleted
    fsync_all(spool.unsynced())
    assert fsyncs == []  # nothing left that the broker does not already hold


def test_deferred_unlinks_wait_for_the_caller_and_close(
        tmp_path: Path, opened: list[Spool]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size, defer_unlinks=True)
    for n in range(4):
        spool.append(line(n))
    rotated = segments(tmp_path / "0")[:2]
    assert drain(spool) == [line(n) for n in range(4)]
    assert all(p.exists() for p in rotated)  # confirmed, deletion left to the caller
    pending = spool.take_unlinks()
    assert sorted(pending) == rotated
    assert spool.take_unlinks() == []
    maps = spool.take_unmaps()  # rotated segments' mappings: closing them is left too
    assert len(maps) == 2 and not any(m.closed for m in maps)
    unmap_all(maps)
    assert all(m.closed for m in maps)
    unlink_all(pending)
    assert not any(p.exists() for p in rotated)
    # A segment confirmed after the last take is deleted by close().
    for n in range(4, 6):
        spool.append(line(n))
    assert drain(spool) == [line(4), line(5)]
    left = [p for p in segments(tmp_path / "0")]
    spool.close()
    opened.remove(spool)
    assert not any(p.exists() for p in left)


def test_a_new_segment_never_takes_the_name_of_one_awaiting_its_unlink(
        tmp_path: Path, opened: list[Spool]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size, defer_unlinks=True)
    gone = open_spool(tmp_path, opened)
    gone.append(line(100))
    crash(gone)
    opened.remove(gone)
    assert spool.adopt_orphans() == 1  # numbered after the active segment
    assert drain(spool) == [line(100)]
    pending = spool.take_unlinks()
    assert len(pending) == 1
    spool.append(line(0))
    spool.append(line(1))  # rotates: the new active segment needs a fresh name
    assert spool._active is not None
    assert spool._active.path not in pending
    unlink_all(pending)
    spool.append(line(2))
    assert spool._active.path.exists()
    assert drain(spool) == [line(0), line(1), line(2)]


@contextlib.asynccontextmanager
async def forwarding(spool: Spool, linger_s: float) -> AsyncIterator[tuple[Forwarder, list[bytes]]]:
    """A running forwarder whose 'broker' keeps every message body it is given."""
    sent: list[bytes] = []

    async def publish(routing_key: str, body: bytes) -> None:
        sent.append(body)

    forwarder = Forwarder(spool, linger_s=linger_s)
    forwarder.attach(publish)
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder, sent
    finally:
        task.cancel()


async def test_the_forwarder_deletes_confirmed_segments_in_a_thread(
        tmp_path: Path, opened: list[Spool]) -> None:
    size = len(line(0)) + 1
    spool = open_spool(tmp_path, opened, segment_bytes=2 * size, defer_unlinks=True)
    for n in range(6):
        spool.append(line(n))
    async with forwarding(spool, linger_s=0) as (_, sent):
        for _ in range(200):
            if len(segments(tmp_path / "0")) == 1 and not spool.has_pending():
                break
            await asyncio.sleep(0.01)
    assert len(segments(tmp_path / "0")) == 1  # only the active segment is left
    assert spool._unlinks == []
    assert spool._unmaps == []
    assert b"".join(sent).count(b"click-") == 6


async def test_clicks_after_an_idle_moment_wait_for_the_linger_and_share_a_message(
        tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    async with forwarding(spool, linger_s=0.2) as (forwarder, sent):
        await asyncio.sleep(0.05)  # idle: nothing spooled yet
        spool.append(line(0))
        forwarder.notify()  # wakes the forwarder, which now lingers
        await asyncio.sleep(0.05)
        for n in range(1, 10):
            spool.append(line(n))
            forwarder.notify()
        for _ in range(100):
            if not spool.has_pending() and sent:
                break
            await asyncio.sleep(0.02)
    assert len(sent) == 1, f"{len(sent)} messages for 10 clicks within one linger"
    assert sent[0].count(b"click-") == 10


async def test_a_failing_broker_gets_one_round_of_batches_per_backoff_not_a_hot_loop(
        tmp_path: Path, opened: list[Spool]) -> None:
    spool = open_spool(tmp_path, opened)
    for n in range(40):
        spool.append(line(n))
    calls = 0

    async def publish(routing_key: str, body: bytes) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("channel closed")

    forwarder = Forwarder(spool, batch_size=2, linger_s=0, max_in_flight=4)
    forwarder.attach(publish)
    task = asyncio.create_task(forwarder.run())
    try:
        await asyncio.sleep(0.5)  # backoff 0.1, 0.2: at most three rounds
    finally:
        task.cancel()
    assert 1 <= calls <= 3 * 4, f"{calls} publish attempts in 0.5 s against a failing broker"
    assert spool.unconfirmed_lines() == 40
