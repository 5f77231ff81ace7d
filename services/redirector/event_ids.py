"""Click event ids: time-ordered UUIDs (version 7, RFC 9562), their random bits cut from a
pooled read of the kernel's CSPRNG.

Why version 7: every click id goes into the unique index on `tracking_logs.event_id`.
Random (version 4) ids land all over that index, so each insert touches a different
page, and the cost grows with the table; time-ordered ones land at the index's
right-hand edge (`python -m bench.event_ids`; figures in docs/performance.md). On a table
bigger than memory, random ids also mean a disk read per insert.

Layout: 48 bits of Unix time in milliseconds, the version (7), 12 random bits, the
RFC 4122 variant, 62 random bits: 74 random bits per millisecond, so ids stay unique
across redirectors without coordination, and a clock stepping back only costs order.

`str(uuid.uuid4())` cost one getrandom(2) call and a UUID object per click, a visible
share of the redirector's hot path (docs/performance.md), hence the pool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_POOL_IDS = 4096
_RANDOM_BYTES = 10  # 12 + 62 random bits, plus 6 that the version and variant replace
_VARIANT = "89ab89ab89ab89ab"  # RFC 4122 variant: the top two bits of byte 8 are 10


class EventIds:
    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns  # injectable for tests
        self._pool = b""
        self._position = 0
        self._ms = -1
        self._time_hex = ""

    def next(self) -> str:
        ms = self._clock_ns() // 1_000_000
        if ms != self._ms:
            self._ms = ms
            t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
            self._time_hex = f"{t[:8]}-{t[8:]}-7"
        position = self._position
        if position >= len(self._pool):
            self._pool = os.urandom(_RANDOM_BYTES * _POOL_IDS)
            position = 0
        self._position = position + _RANDOM_BYTES
        r = self._pool[position:position + _RANDOM_BYTES].hex()
        return f"{self._time_hex}{r[:3]}-{_VARIANT[int(r[3], 16)]}{r[4:7]}-{r[7:19]}"
