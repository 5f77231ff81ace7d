"""The logger's one handler: click events in, rows committed, then (by returning) acked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.logger.batcher import BatchWriter
from services.logger.database import Row
from shared.events import ClickTracked, Event


def to_row(event: Event[ClickTracked]) -> Row:
    click = event.data
    return (event.id, click.customer_id, click.campaign_id, click.recipient_id, click.domain,
            click.url, click.ip, click.user_agent, click.method, event.time, click.bot,
            click.bot_reason)


async def record_clicks(events: Sequence[Event[Any]], *, writer: BatchWriter) -> None:
    """Persist each click once; returns when the rows are committed."""
    await writer.add([to_row(event) for event in events if isinstance(event.data, ClickTracked)])
