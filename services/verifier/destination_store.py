"""The destination watch's tables: verdicts on destinations, and listings told to customers.

`destination_checks` keeps the last listed / not-listed verdict per destination (a
registered domain), so a restarted verifier does not ask the blocklist again before the
verdict is due. `destination_listings` holds one row per customer, destination and list
whose `destination.listed` was published: the row and the event go together (the row is
inserted, the event published and confirmed, then the transaction commits), so a restart
or a redelivered click never tells the customer twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import DestinationCheck, DestinationListing

C = DestinationCheck.__table__.c
L = DestinationListing.__table__.c


@dataclass(frozen=True)
class StoredVerdict:
    """A destination's last verdict: listed (with categories) or not, and when it was had."""

    destination: str
    listed: bool
    categories: tuple[str, ...]
    checked_at: datetime


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _insert(engine: AsyncEngine, table: Table) -> postgresql.Insert | sqlite.Insert:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class DestinationStore:
    """Reads and writes of `destination_checks` and `destination_listings`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def verdicts(self, destinations: Iterable[str]) -> dict[str, StoredVerdict]:
        """The stored verdicts of those of `destinations` that have one."""
        wanted = sorted(set(destinations))
        if not wanted:
            return {}
        query = select(C.destination, C.status, C.categories, C.checked_at).where(
            C.destination.in_(wanted))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {row.destination: StoredVerdict(
                    row.destination, row.status == "listed",
                    tuple(filter(None, (row.categories or "").split(","))),
                    _utc(row.checked_at))
                for row in rows}

    async def save_verdicts(self, verdicts: Iterable[StoredVerdict]) -> None:
        """Insert or replace each destination's verdict."""
        rows = [{"destination": v.destination, "status": "listed" if v.listed else "not_listed",
                 "categories": ",".join(v.categories) or None, "checked_at": v.checked_at}
                for v in verdicts]
        if not rows:
            return
        statement = _insert(self._engine, DestinationCheck.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=[C.destination],
            set_={"status": statement.excluded.status,
                  "categories": statement.excluded.categories,
                  "checked_at": statement.excluded.checked_at})
        async with self._engine.begin() as connection:
            await connection.execute(statement, rows)

    async def told(self, pairs: Iterable[tuple[str, str]], blocklist: str) -> set[tuple[str, str]]:
        """Of the (customer, destination) `pairs`, those already told for `blocklist`."""
        wanted = set(pairs)
        if not wanted:
            return set()
        destinations = sorted({destination for _, destination in wanted})
        query = select(L.customer_id, L.destination).where(
            L.blocklist == blocklist, L.destination.in_(destinations))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {(row.customer_id, row.destination) for row in rows} & wanted

    async def record_listing(self, *, customer_id: str, destination: str, blocklist: str,
                             categories: tuple[str, ...], campaign_id: str, event_id: str,
                             announce: Callable[[], Awaitable[object]]) -> bool:
        """Insert the listing row and, if it is new, `announce` it (publish the event)
        before the commit: a failed publish rolls the row back, so the click's retry
        tells the customer then. False if the customer was told already."""
        statement = _insert(self._engine, DestinationListing.__table__).values(
            customer_id=customer_id, destination=destination, blocklist=blocklist,
            categories=",".join(categories) or None, campaign_id=campaign_id,
            event_id=event_id,
        ).on_conflict_do_nothing(
            index_elements=[L.customer_id, L.destination, L.blocklist]).returning(L.id)
        async with self._engine.begin() as connection:
            inserted = (await connection.execute(statement)).first()
            if inserted is None:
                return False
            await announce()
        return True
