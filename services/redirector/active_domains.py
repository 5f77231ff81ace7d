"""Which hosts may serve which customer's links, held in memory and refreshed in the background.

A click never waits on the database: the directory answers from a dict, and a
task reloads the active tracking domains every `refresh_s`. If the database is
unreachable the last good map is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import TrackingDomain
from shared.domain_status import DomainStatus

log = structlog.get_logger(__name__)


class DomainDirectory:
    def __init__(self, tracking_host: str, aliases: Sequence[str] = ()) -> None:
        self.tracking_host = tracking_host
        # The shared host serves every customer's links, under any of its names.
        self.platform_hosts = frozenset((tracking_host, *aliases))
        self._owners: dict[str, str] = {}
        self.loaded = False

    def allows(self, host: str, customer_id: str) -> bool:
        """True if `host` may serve links of `customer_id`."""
        return host in self.platform_hosts or self._owners.get(host) == customer_id

    def replace(self, owners: dict[str, str]) -> None:
        self._owners = owners
        self.loaded = True

    def __len__(self) -> int:
        return len(self._owners)


async def load_active(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(TrackingDomain.name, TrackingDomain.customer_id)
            .where(TrackingDomain.status == DomainStatus.ACTIVE)
        )
        return {name: customer for name, customer in rows}


async def refresh_forever(directory: DomainDirectory, engine: AsyncEngine,
                          refresh_s: float) -> None:
    failing = False
    while True:
        try:
            async with asyncio.timeout(max(refresh_s, 5.0)):
                owners = await load_active(engine)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("domains.refresh_failed", error=str(exc) or type(exc).__name__,
                            kept=len(directory))
            failing = True
        else:
            if failing or len(owners) != len(directory) or not directory.loaded:
                log.info("domains.loaded", active=len(owners))
            failing = False
            directory.replace(owners)
        await asyncio.sleep(refresh_s)
