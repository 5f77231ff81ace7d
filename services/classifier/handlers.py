"""The classifier's handler: clicks into the windows, click.classified out.

A click is published when its verdict changes (at once) and when its reasons grew with
the verdict unchanged (once, as it settles: services/classifier/windows.py). A message
is acked only once the classifications it caused are confirmed by the broker; a failed
publish keeps them (in order) for the next try, and the message is retried (its clicks
are then recognised as already seen). With no click coming, `tick` moves the windows'
clock by the wall clock, so the last clicks before a pause settle too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from services.classifier.windows import Click, Windows
from shared.errors import TransientError
from shared.events import (
    ClickClassified,
    ClickSeen,
    ClicksSeen,
    Event,
    encode_batch,
    encode_event,
)
from shared.metrics import ClassifierMetrics

log = structlog.get_logger(__name__)

Publish = Callable[[bytes], Awaitable[None]]


def to_click(seen: ClickSeen) -> Click:
    data = seen.data
    # A click from a redirector older than `reasons` has at most its bot_reason.
    reasons = data.reasons or ((data.bot_reason,) if data.bot_reason else ())
    return Click(event_id=seen.id, key=(data.customer_id, data.campaign_id, data.recipient_id),
                 url=data.url, at=seen.time.timestamp(), clicked_at=seen.time,
                 reasons=reasons, bot=data.bot)


class Classifier:
    def __init__(self, windows: Windows, publish: Publish, *, source: str,
                 metrics: ClassifierMetrics | None = None) -> None:
        self.windows = windows
        self._publish = publish
        self._source = source
        self._metrics = metrics or ClassifierMetrics(CollectorRegistry())
        self._bots = self._metrics.reclassified.labels("true")
        self._people = self._metrics.reclassified.labels("false")
        self._outbox: list[bytes] = []
        self._lock = asyncio.Lock()
        self._idle = False  # no click since the last tick (not known before the first)
        self.published = 0

    async def handle(self, events: Sequence[Event[Any]]) -> None:
        """Messages as `decode_clicks_seen` reads them (one event of many clicks each)."""
        changed: list[Click] = []
        clicks = 0
        add = self.windows.add
        for event in events:
            if isinstance(event.data, ClicksSeen):
                clicks += len(event.data.clicks)
                for seen in event.data.clicks:
                    changed += add(to_click(seen))
        self._idle = False
        self._metrics.clicks.inc(clicks)
        self._queue(changed)
        await self.flush()

    async def tick(self, now: float) -> None:
        """Called every few seconds with the wall clock: if no click came since the last
        call (so no backlog is being read, whose clicks' time lags), settle by `now`."""
        if self._idle:
            self._queue(self.windows.advance(now))
        self._idle = True
        await self.flush()

    async def drain(self) -> None:
        """At stop, once no message is handled any more: publish every grown click now
        (their messages are acked: unpublished, their later reasons are lost)."""
        self._queue(self.windows.drain())
        try:
            await self.flush()
        except TransientError as exc:
            log.warning("clicks.reasons_lost", clicks=len(self._outbox), error=exc.reason)

    def _queue(self, changed: list[Click]) -> None:
        for click in changed:
            customer_id, campaign_id, recipient_id = click.key
            self._outbox.append(encode_event(ClickClassified(
                event_id=click.event_id, customer_id=customer_id, campaign_id=campaign_id,
                recipient_id=recipient_id, clicked_at=click.clicked_at, bot=click.bot,
                reasons=list(click.reasons)), source=self._source))
            (self._bots if click.bot else self._people).inc()

    async def flush(self) -> None:
        """Publish every waiting classification (this message's and any a failure left)."""
        async with self._lock:
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
            try:
                await self._publish(encode_batch(batch))
            except asyncio.CancelledError:
                self._outbox[:0] = batch
                raise
            except Exception as exc:
                self._outbox[:0] = batch
                raise TransientError(f"click.classified not published: "
                                     f"{str(exc) or type(exc).__name__}") from exc
            self.published += len(batch)
            log.info("clicks.reclassified", published=len(batch),
                     held=self.windows.held)
