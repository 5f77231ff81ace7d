"""The logger's one handler: click events in, rows committed, then (by returning) acked;
classifications merged into their rows (or kept until the row comes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from services.logger.batcher import BatchWriter
from services.logger.database import Applied, Classification, ClassifyingStore, Row
from shared.errors import PermanentError, TransientError
from shared.events import ClickClassified, ClickTracked, Event

log = structlog.get_logger(__name__)

# How often classifications waiting for their click are looked at again.
SWEEP_S = 2.0


def to_row(event: Event[ClickTracked]) -> Row:
    click = event.data
    return (event.id, click.customer_id, click.campaign_id, click.recipient_id, click.domain,
            click.url, click.ip, click.user_agent, click.method, event.time, click.bot,
            click.bot_reason, ",".join(click.reasons) or None)


def to_classification(data: ClickClassified) -> Classification:
    return Classification(data.event_id, data.bot, ",".join(data.reasons) or None,
                          data.clicked_at)


async def record_clicks(events: Sequence[Event[Any]], *, writer: BatchWriter,
                        store: ClassifyingStore) -> None:
    """Persist each click once and apply each classification; returns when committed."""
    await writer.add([to_row(event) for event in events if isinstance(event.data, ClickTracked)])
    classified = [to_classification(event.data) for event in events
                  if isinstance(event.data, ClickClassified)]
    if classified:
        await apply(store, classified)


async def apply(store: ClassifyingStore, items: Sequence[Classification]) -> Applied:
    """`store.apply_classification`, its failures told apart for the consumer's retries."""
    try:
        applied = await store.apply_classification(items)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = (str(exc) or type(exc).__name__)[:500]
        if store.rejects_data(exc):
            raise PermanentError(f"the database refuses these classifications: {error}") from exc
        raise TransientError(f"classifications not applied: {error}") from exc
    if items or applied.applied:
        log.info("clicks.classified", received=len(items), applied=applied.applied,
                 waiting=applied.waiting)
    return applied


async def sweep_forever(store: ClassifyingStore, every_s: float = SWEEP_S) -> None:
    """Apply the classifications whose clicks were stored after them (by another logger,
    or later in this one's batch). Errors are logged and the sweep goes on."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await apply(store, ())
        except (TransientError, PermanentError) as exc:
            log.warning("clicks.sweep_failed", error=str(exc))
