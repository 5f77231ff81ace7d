"""The click spool: every click is on disk before its 302 is sent, until the broker confirms it.

The request path only copies one line (the click event's JSON) into a shared memory
mapping of the active segment file: no system call per click. The forwarder reads
complete lines back from the files in batches, publishes them, and deletes a segment
once every batch read from it is confirmed.

Why files and not memory: a shared file mapping's pages are the kernel's page cache,
so a line is there the moment it is copied in and survives the process being killed
(SIGKILL, OOM), exactly as data written with `write(2)` would; and memory stays
bounded during a long broker outage. The copy replaced a `write(2)` per click and costs
the redirector less CPU per click (figures: docs/performance.md).

Segments are preallocated (`posix_fallocate`) before they are mapped: a full disk is
then an `OSError` when a segment is started, never a SIGBUS on a page fault in the
middle of a click. The unused tail of a segment is zeros, which no line contains
(lines are JSON), so recovery ignores it.

What a power loss can take is only what the kernel had not yet written back; the
forwarder bounds that by fsyncing (in a thread, never on the event loop; `fsync`
writes back a mapping's dirty pages too) every second while the broker is away or
behind, and `close` fsyncs. Rotating to a new segment never fsyncs: under load that
was a whole segment's fsync on the request path every few seconds (tens of milliseconds:
docs/performance.md), for a file about to be deleted once confirmed.

Several redirectors on one host each claim their own slot directory under the
spool root (an exclusive `flock`), and adopt the segments of slots nobody holds,
at start and then every `ADOPT_INTERVAL_S` while running, so scaling down (or a
replica that crashed and is not restarted) never strands clicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

SEGMENT_SUFFIX = ".spool"
LOCK_NAME = "lock"
MAX_SLOTS = 64
# How often a running redirector looks for slots whose owner is gone.
ADOPT_INTERVAL_S = 30.0

log = structlog.get_logger(__name__)


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, every slot taken)."""


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes of complete lines written
    read_offset: int = 0
    unconfirmed: int = 0  # batches read from it and not yet confirmed
    active: bool = False
    fd: int | None = None  # read descriptor
    write_fd: int | None = None  # kept after rotation until synced or deleted
    dirty: bool = False  # written since its last fsync (rotated segments)


@dataclass
class Batch:
    """Lines read from one segment, published together as one message."""

    segment: int
    lines: list[bytes] = field(repr=False)


class Spool:
    """Append-only segment files in one claimed slot directory."""

    def __init__(self, root: Path, *, segment_bytes: int = 8 << 20,
                 rotate_confirmed_bytes: int = 256 << 10, defer_unlinks: bool = False) -> None:
        self._root = root
        self._segment_bytes = segment_bytes
        # Once everything in the active segment is confirmed and it is at least this
        # big, start a fresh one: bounds what a crash makes us publish a second time.
        self._rotate_confirmed_bytes = rotate_confirmed_bytes
        self._dir: Path | None = None
        self._lock_fd: int | None = None
        self._segments: dict[int, _Segment] = {}
        self._order: deque[int] = deque()
        self._active: _Segment | None = None
        self._write_fd: int | None = None
        self._map: mmap.mmap | None = None  # the active segment, mapped for appends
        self._map_size = 0
        self._retry: deque[Batch] = deque()
        self._dirty = False
        # Segment numbers only grow, so a new segment never takes the name of a
        # confirmed one whose deferred unlink has not run yet.
        self._last_seq = 0
        self._defer_unlinks = defer_unlinks
        self._unlinks: list[Path] = []
        self._unmaps: list[mmap.mmap] = []  # rotated segments' mappings (`defer_unlinks`)
        self.appended = 0
        self.recovered = 0
        self.confirmed_lines = 0

    # --- life cycle -------------------------------------------------------------------------

    def open(self) -> Path:
        """Claim a slot, adopt orphaned slots, recover their segments; returns the slot dir."""
        self._root.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            directory = self._root / str(slot)
            directory.mkdir(exist_ok=True)
            fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._dir, self._lock_fd = directory, fd
            break
        else:
            raise SpoolError(f"all {MAX_SLOTS} spool slots under {self._root} are in use")
        self._claim_orphans()
        for path in sorted(self._dir.glob(f"*{SEGMENT_SUFFIX}")):
            self._recover(path)
        self._start_segment()
        return self._dir

    def adopt_orphans(self) -> int:
        """Take over the segments of slots whose redirector is gone; returns their clicks.

        They are read before this spool's own unsent lines: they are the older clicks,
        and the active segment, which always has fresh lines under load, must not keep
        them waiting.
        """
        before = self.recovered
        claimed = self._claim_orphans()
        for path in reversed(claimed):
            self._recover(path, first=True)
        return self.recovered - before

    def close(self) -> None:
        """Flush and release; segments still holding unconfirmed lines stay for next start."""
        if self._map is not None:
            self._map.close()  # the lines stay in the page cache; the fsync below covers them
            self._map = None
            if self._write_fd is not None and self._active is not None:
                # Drop the preallocated tail, so a segment left for the next start holds
                # only its lines.
                os.ftruncate(self._write_fd, self._active.size)
        self.sync()
        unmap_all(self.take_unmaps())
        unlink_all(self.take_unlinks())
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        for segment in self._segments.values():
            if segment.fd is not None:
                os.close(segment.fd)
                segment.fd = None
        active = self._active
        if active is not None and not active.unconfirmed and active.read_offset == active.size:
            active.path.unlink(missing_ok=True)  # all of it confirmed: nothing to resend
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the request path -------------------------------------------------------------------

    def append(self, line: bytes) -> None:
        """Add one record (no newline inside), durably against a process crash.

        Raises `OSError`, having added nothing, when the record needs a new segment and
        none can be started (a full disk).
        """
        data = line + b"\n"
        active = self._active
        assert active is not None and self._map is not None, "spool is not open"
        start = active.size
        end = start + len(data)
        if end > self._map_size:
            active = self._start_segment(len(data))
            start, end = 0, len(data)
        self._map[start:end] = data
        active.size = end
        self._dirty = True
        self.appended += 1
        if end >= self._segment_bytes:
            self._rotate()

    # --- the forwarder's side ---------------------------------------------------------------

    def backlog_bytes(self) -> int:
        """Bytes written but not yet read for publishing (plus batches waiting for a retry)."""
        pending = sum(s.size - s.read_offset for s in self._segments.values())
        return pending + sum(len(line) + 1 for b in self._retry for line in b.lines)

    def unconfirmed_lines(self) -> int:
        """Clicks spooled (or recovered at start) the broker has not confirmed yet."""
        return max(0, self.appended + self.recovered - self.confirmed_lines)

    def has_pending(self) -> bool:
        if self._retry:
            return True
        return any(s.size > s.read_offset for s in self._segments.values())

    def next_batch(self, max_lines: int, max_bytes: int = 1 << 20) -> Batch | None:
        """The next batch to publish: a failed one first, else fresh lines from the oldest file."""
        if self._retry:
            return self._retry.popleft()
        for seq in self._order:
            segment = self._segments[seq]
            available = segment.size - segment.read_offset
            if available <= 0:
                continue
            if segment.fd is None:
                segment.fd = os.open(segment.path, os.O_RDONLY)
            chunk = os.pread(segment.fd, min(available, max_bytes), segment.read_offset)
            lines = chunk.split(b"\n", max_lines)
            if len(lines) > max_lines:
                lines = lines[:max_lines]
            else:
                lines.pop()  # the part after the last newline: incomplete, or empty
            if not lines:
                # A single line longer than max_bytes: take it whole.
                end = chunk.find(b"\n")
                while end == -1:
                    chunk += os.pread(segment.fd, max_bytes,
                                      segment.read_offset + len(chunk))
                    end = chunk.find(b"\n")
                lines = [chunk[:end]]
            segment.read_offset += sum(len(line) + 1 for line in lines)
            segment.unconfirmed += 1
            return Batch(segment=seq, lines=[line for line in lines if line])
        return None

    def confirmed(self, batch: Batch) -> None:
        """The broker owns these lines: a fully sent, rotated segment is deleted."""
        self.confirmed_lines += len(batch.lines)
        segment = self._segments.get(batch.segment)
        if segment is None:
            return
        segment.unconfirmed -= 1
        if (segment.active and not segment.unconfirmed and segment.read_offset == segment.size
                and segment.size >= self._rotate_confirmed_bytes):
            self._rotate()
        else:
            self._maybe_delete(segment)

    def failed(self, batch: Batch) -> None:
        """Publishing failed: the batch goes first in line for the next attempt."""
        self._retry.append(batch)

    def unsynced(self) -> list[int]:
        """Descriptors to fsync for every segment written since its last sync; for `fsync_all`.

        They are duplicates, so a rotation or deletion on the event loop can never close
        a descriptor while a thread fsyncs it. Rotated segments' own write descriptors
        are closed here: the duplicate carries their last sync.
        """
        fds: list[int] = []
        if self._dirty and self._write_fd is not None:
            self._dirty = False
            fds.append(os.dup(self._write_fd))
        for segment in self._segments.values():
            if segment.write_fd is not None:
                if segment.dirty:
                    fds.append(os.dup(segment.write_fd))
                os.close(segment.write_fd)
                segment.write_fd, segment.dirty = None, False
        return fds

    def take_unlinks(self) -> list[Path]:
        """Confirmed segments waiting to be deleted (`defer_unlinks`); for `unlink_all`."""
        paths, self._unlinks = self._unlinks, []
        return paths

    def take_unmaps(self) -> list[mmap.mmap]:
        """Rotated segments' mappings waiting to be closed (`defer_unlinks`); for `unmap_all`."""
        maps, self._unmaps = self._unmaps, []
        return maps

    def sync(self) -> None:
        """fsync every segment written since the last sync (blocking)."""
        fsync_all(self.unsynced())

    # --- internals --------------------------------------------------------------------------

    def _rotate(self) -> None:
        """Start a new segment ahead of need; if the disk is full, the next append that
        does not fit in this one raises instead (nothing written is at stake here)."""
        try:
            self._start_segment()
        except OSError as exc:
            log.warning("spool.rotate_failed", error=str(exc))

    def _start_segment(self, min_bytes: int = 0) -> _Segment:
        """Make a new, preallocated and mapped segment the active one, and return it.

        Raises `OSError` (a full disk) before anything changes, so the spool stays usable.
        """
        assert self._dir is not None
        size = max(self._segment_bytes, min_bytes)
        seq = self._last_seq + 1
        path = self._dir / f"{seq:012d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            preallocate(fd, size)
            mapping = mmap.mmap(fd, size)
            if hasattr(mmap, "MADV_RANDOM"):
                # No readahead: with it, the first write to a new segment stalled the
                # event loop for milliseconds; without, each page's first write costs a
                # little more, spread over its clicks (docs/performance.md).
                mapping.madvise(mmap.MADV_RANDOM)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._last_seq = seq
        old = self._active
        if old is not None:
            old.active = False
            if self._map is not None:
                # Unmapping keeps the written pages in the page cache (and dirty). It
                # takes a fraction of a millisecond for a full segment (docs/performance.md),
                # so it is deferred too.
                if self._defer_unlinks:
                    self._unmaps.append(self._map)
                else:
                    self._map.close()
            # No fsync here (see the module docstring): the descriptor stays open, so
            # `unsynced` can still sync the lines if the broker has not confirmed them.
            old.write_fd, old.dirty = self._write_fd, self._dirty
            self._dirty = False
            self._maybe_delete(old)
        self._write_fd, self._map, self._map_size = fd, mapping, size
        self._active = active = _Segment(seq=seq, path=path, size=0, active=True)
        self._segments[seq] = active
        self._order.append(seq)
        return active

    def _recover(self, path: Path, *, first: bool = False) -> None:
        data = path.read_bytes()
        written = len(data.rstrip(b"\0"))  # the rest is the unused preallocated tail
        end = data.rfind(b"\n", 0, written) + 1
        if end < written:
            # A line copied in part when the process died, or torn by a power loss:
            # it cannot be parsed, so it is cut off and said. Its 302 was never sent.
            log.warning("spool.torn_line_dropped", path=str(path), bytes=written - end)
        if end < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(end)
        if end == 0:
            path.unlink()
            return
        seq = self._last_seq = self._last_seq + 1
        target = path.with_name(f"{seq:012d}{SEGMENT_SUFFIX}")
        if target != path:
            path.rename(target)
        self._segments[seq] = _Segment(seq=seq, path=target, size=end)
        if first:
            self._order.appendleft(seq)
        else:
            self._order.append(seq)
        self.recovered += data.count(b"\n", 0, end)

    def _claim_orphans(self) -> list[Path]:
        """Move the segments of unheld slots into ours; returns their new paths, in order."""
        assert self._dir is not None
        claimed: list[Path] = []
        for other in sorted(p for p in self._root.iterdir() if p.is_dir() and p != self._dir):
            lock = other / LOCK_NAME
            if not lock.exists():
                continue
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live redirector owns it
            finally:
                # Closing drops the lock; renames below are atomic, so a redirector that
                # claims the slot meanwhile simply finds fewer files.
                os.close(fd)
            for path in sorted(other.glob(f"*{SEGMENT_SUFFIX}")):
                target = self._dir / f"adopted-{other.name}-{path.name}"
                with contextlib.suppress(FileNotFoundError):
                    path.rename(target)
                    claimed.append(target)
                    log.info("spool.adopted", source=str(path))
        return claimed

    def _maybe_delete(self, segment: _Segment) -> None:
        if segment.active or segment.unconfirmed or segment.read_offset < segment.size:
            return
        for fd in (segment.fd, segment.write_fd):
            if fd is not None:
                os.close(fd)
        segment.fd = segment.write_fd = None
        if self._defer_unlinks:
            self._unlinks.append(segment.path)
        else:
            segment.path.unlink(missing_ok=True)
        del self._segments[segment.seq]
        self._order.remove(segment.seq)


def preallocate(fd: int, size: int) -> None:
    """Reserve `size` bytes of disk for a segment, so writing through its mapping can
    never hit a full disk (that would be a SIGBUS, not an error)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:  # macOS: no reservation, only the length the mapping needs
        os.ftruncate(fd, size)


def fsync_all(fds: list[int]) -> None:
    """fsync and close descriptors from `Spool.unsynced` (blocking; run it in a thread)."""
    try:
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def unmap_all(maps: list[mmap.mmap]) -> None:
    """Close mappings from `Spool.take_unmaps` (blocking, releases the GIL; run it in a
    thread)."""
    for mapping in maps:
        mapping.close()


def unlink_all(paths: list[Path]) -> None:
    """Delete confirmed segments from `Spool.take_unlinks` (blocking; run it in a thread)."""
    for path in paths:
        path.unlink(missing_ok=True)


async def adopt_orphans_forever(spool: Spool, notify: Callable[[], None],
                                interval_s: float = ADOPT_INTERVAL_S) -> None:
    """Every `interval_s`, adopt what redirectors that are gone left in the spool root."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            clicks = spool.adopt_orphans()
        except OSError as exc:  # a full or read-only disk: the next round tries again
            log.warning("spool.adopt_failed", error=str(exc))
            continue
        if clicks:
            log.info("spool.adopted_clicks", clicks=clicks)
            notify()
