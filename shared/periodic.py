"""One shape for a service's background loop: do a pass, wait a jittered period (or until
told to stop), again; a failed pass is logged and retried at the next one.

The verifier's recheck schedule, its census and its reputation watch all run this way,
so stopping, jitter and "the database may be down" are handled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def every(stop: asyncio.Event, period_s: float, work: Callable[[], Awaitable[object]],
                *, failed: str, jitter: float = 0.0, rng: random.Random | None = None) -> None:
    """Run `work` now, then every `period_s` (± `jitter` as a fraction) until `stop` is
    set. A pass that raises is logged as the `failed` event with its error; the next pass
    runs as usual (the database may be down for a while)."""
    rng = rng or random.Random()
    while not stop.is_set():
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(failed, error=str(exc) or type(exc).__name__)
        wait = period_s * (1 + jitter * (2 * rng.random() - 1))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()
