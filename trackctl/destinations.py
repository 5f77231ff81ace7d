"""`trackctl reputation --destinations`: customers whose links lead to listed destinations.

Read from `destination_listings`, the verifier's record of every `destination.listed` it
published (services/verifier/destinations.py): one row per customer, destination and
list, newest first.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import DestinationListing
from trackctl import connections
from trackctl.output import OK, as_utc, emit_json, table

L = DestinationListing.__table__.c


async def listed_destinations(engine: AsyncEngine, *, customer: str | None = None,
                              limit: int = 500) -> list[dict[str, Any]]:
    """The listings told to customers, newest first."""
    query = (select(L.customer_id, L.destination, L.blocklist, L.categories, L.campaign_id,
                    L.first_seen_at, L.event_id)
             .order_by(L.first_seen_at.desc(), L.id.desc()).limit(limit))
    if customer is not None:
        query = query.where(L.customer_id == customer)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [{"customer_id": row.customer_id, "destination": row.destination,
             "list": row.blocklist,
             "categories": [c for c in (row.categories or "").split(",") if c],
             "campaign_id": row.campaign_id, "first_seen_at": as_utc(row.first_seen_at),
             "event_id": row.event_id}
            for row in rows]


def render(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no customer's links lead to a listed destination"
    return table(("customer", "destination", "list", "categories", "campaign", "first seen"),
                 [(r["customer_id"], r["destination"], r["list"],
                   ",".join(r["categories"]) or "-", r["campaign_id"], r["first_seen_at"])
                  for r in rows]) + f"\n\n{len(rows)} listed destination(s)"


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async with connections.database(environ) as engine:
        rows = await listed_destinations(engine, customer=args.customer, limit=args.limit)
    if args.json:
        emit_json({"destinations": rows})
    else:
        print(render(rows))
    return OK
