"""The `tracking_domains{status}` gauge: tracking domains counted by status, periodically.

The verifier owns it (not the certifier) because it writes most status changes
(pending, verified, rejected, lapsed) and already keeps a database pool and a
periodic loop. Every verifier replica counts the same table, so dashboards take
`max without (instance)`. One `GROUP BY` a minute is nothing next to the rechecks.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import func, not_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import TrackingDomain, tombstone_condition
from shared.domain_status import DomainStatus
from shared.metrics import VerifierMetrics
from shared.periodic import every

log = structlog.get_logger(__name__)

CENSUS_INTERVAL_S = 60.0

T = TrackingDomain


async def count_by_status(engine: AsyncEngine) -> dict[str, int]:
    """Domains per status (every status present, 0 if none); deleted domains' tombstones
    (rejected rows still holding a `check_due_at`) are not domains any more."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(T.status, func.count()).where(not_(tombstone_condition()))
            .group_by(T.status))
        counts = {status: int(count) for status, count in rows}
    return {status: counts.get(status, 0) for status in (*DomainStatus, *counts)}


async def update(engine: AsyncEngine, metrics: VerifierMetrics) -> None:
    for status, count in (await count_by_status(engine)).items():
        metrics.domains.labels(status).set(count)
    metrics.census_timestamp.set(time.time())


async def census_forever(stop: asyncio.Event, engine: AsyncEngine, metrics: VerifierMetrics,
                         interval_s: float = CENSUS_INTERVAL_S) -> None:
    """Count now and then every `interval_s` until `stop` is set (a failed count: the
    timestamp shows how stale the gauge is)."""
    await every(stop, interval_s, lambda: update(engine, metrics),
                failed="domains.census_failed")
