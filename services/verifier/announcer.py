"""Publishing the verifier's outcome events (domain.verified / rejected / lapsed).

A thin seam over the shared confirmed `Publisher`, so handlers depend on "announce
an outcome" and tests can record announcements. Every outcome also lands in the
platform's queue (shared/broker/names.py), so it is routable; if it ever is not,
the publisher raises `TransientError` and the work is retried, never dropped.
"""

from __future__ import annotations

from typing import Protocol

from shared.broker.publisher import Publisher
from shared.events import EventData


class Announces(Protocol):
    async def announce(self, data: EventData) -> str | None: ...


class Announcer:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def announce(self, data: EventData) -> str | None:
        """Publish and wait for the broker's confirm; returns the event id."""
        return await self._publisher.publish_event(data)
