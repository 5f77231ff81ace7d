"""The verifier's reads and writes of `tracking_domains` (SQLAlchemy Core, PostgreSQL or SQLite).

Every state change is a conditional UPDATE (`WHERE status = ...`), so a message
handled twice, or a row deleted or changed meanwhile, never moves a domain
backwards: the caller learns from the returned bool whether it won and only
then publishes. `claim_due` hands each due domain to one verifier replica:
`FOR UPDATE SKIP LOCKED` on PostgreSQL (ignored on SQLite, which has one writer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import TrackingDomain, tombstone_condition
from shared.domain_status import (
    INITIAL,
    TOMBSTONE_STATUS,
    DomainStatus,
    is_tombstone,
    sources,
    tombstoned_when_deleted,
    transition,
)
from shared.domains import registered_domain

T = TrackingDomain.__table__.c
TABLE = TrackingDomain.__table__
# The statuses whose DNS the schedule re-verifies: every domain once verified and not
# deleted (a lapsed one comes back when its DNS does).
RECHECKED = (DomainStatus.VERIFIED, DomainStatus.ACTIVE, DomainStatus.LAPSED)


@dataclass(frozen=True)
class Isolation:
    """Whether a domain's registered domain is its customer's alone (`warning` None)."""

    registered_domain: str
    warning: str | None = None


@dataclass(frozen=True)
class VerificationRow:
    """A `tracking_domains` row as the verifier sees it: status, DNS facts, schedule."""

    name: str
    customer_id: str
    status: DomainStatus
    verified: bool
    matched_by: str | None
    last_error: str | None
    dns_chain: str | None
    check_due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None
    registered_domain: str | None = None
    isolation_warning: str | None = None

    @property
    def tombstone(self) -> bool:
        """A deleted pending domain kept until its in-flight rechecks have drained."""
        return is_tombstone(self.status, self.check_due_at)


_COLUMNS = (T.name, T.customer_id, T.status, T.verified, T.matched_by, T.last_error,
            T.dns_chain, T.check_due_at, T.created_at, T.updated_at, T.verified_at,
            T.registered_domain, T.isolation_warning)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(row: Row[*tuple[Any, ...]]) -> VerificationRow:
    values = dict(row._mapping)
    for key in ("check_due_at", "created_at", "updated_at", "verified_at"):
        values[key] = _utc(values[key])
    values["status"] = DomainStatus(values["status"])
    return VerificationRow(**values)


class VerificationStore:
    """The verifier's conditional writes of `tracking_domains` (status and DNS columns)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Single statements need no BEGIN/COMMIT round trips: they run in autocommit
        # (the round trips were much of the database time at high concurrency:
        # docs/performance.md). Multi-statement work
        # (claims, deletes) uses real transactions on `engine`.
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    async def get(self, name: str) -> VerificationRow | None:
        async with self._auto.connect() as connection:
            row = (await connection.execute(
                select(*_COLUMNS).where(T.name == name))).first()
        return None if row is None else _row(row)

    async def add_pending(self, name: str, customer_id: str,
                          now: datetime) -> VerificationRow | None:
        """Add the domain as pending and return its row, or None if the name exists."""
        statement = self._insert(TABLE).values(
            name=name, customer_id=customer_id, status=INITIAL, verified=False,
            registered_domain=registered_domain(name), created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["name"]).returning(*_COLUMNS)
        async with self._auto.connect() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else _row(row)

    async def restart(self, row: VerificationRow, customer_id: str, now: datetime) -> bool:
        """Start verifying a rejected or lapsed domain afresh (new deadline), for
        `customer_id`; only if the row is still exactly as `row` saw it."""
        return await self._write(update(TABLE).where(
            T.name == row.name, T.status == row.status, T.updated_at == row.updated_at,
            T.status.in_(sources(DomainStatus.PENDING)),
        ).values(
            customer_id=customer_id, status=DomainStatus.PENDING, verified=False, matched_by=None,
            last_error=None, dns_chain=None, check_due_at=None, verified_at=None,
            created_at=now, updated_at=now,
        )) == 1

    async def note_pending(self, name: str, customer_id: str, *, last_error: str,
                           check_due_at: datetime, now: datetime) -> bool:
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id, T.status == DomainStatus.PENDING,
        ).values(last_error=last_error, check_due_at=check_due_at, updated_at=now)) == 1

    async def mark_verified(self, name: str, customer_id: str, *, from_status: DomainStatus,
                            matched_by: str, dns_chain: str, check_due_at: datetime,
                            now: datetime, isolation: Isolation | None = None) -> bool:
        """`isolation` given (a first verification): its registered domain and warning
        are stored; else both are left as they were."""
        values: dict[str, Any] = {}
        if isolation is not None:
            values.update(registered_domain=isolation.registered_domain,
                          isolation_warning=isolation.warning)
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id, T.status == from_status,
        ).values(
            status=transition(from_status, DomainStatus.VERIFIED), verified=True,
            matched_by=matched_by, dns_chain=dns_chain,
            last_error=None, check_due_at=check_due_at, verified_at=now, updated_at=now,
            **values,
        )) == 1

    async def other_customers_under(self, registered: str, customer_id: str) -> int:
        """How many other customers hold a tracking domain (any status but a tombstone)
        under the registered domain `registered`."""
        async with self._auto.connect() as connection:
            return (await connection.execute(
                select(func.count(func.distinct(T.customer_id))).where(
                    T.registered_domain == registered, T.customer_id != customer_id,
                    ~tombstone_condition()))).scalar_one()

    async def mark_rejected(self, name: str, customer_id: str, *, last_error: str,
                            now: datetime) -> bool:
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id, T.status == DomainStatus.PENDING,
        ).values(status=transition(DomainStatus.PENDING, DomainStatus.REJECTED),
                 verified=False, last_error=last_error, check_due_at=None,
                 updated_at=now)) == 1

    async def mark_lapsed(self, name: str, customer_id: str, *, last_error: str,
                          now: datetime) -> bool:
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id,
            T.status.in_(sources(DomainStatus.LAPSED)),
        ).values(status=DomainStatus.LAPSED, verified=False, last_error=last_error,
                 updated_at=now)) == 1

    async def note_recheck(self, name: str, customer_id: str, *, status: DomainStatus,
                           matched_by: str | None = None, dns_chain: str | None = None,
                           last_error: str | None, check_due_at: datetime | None = None) -> bool:
        """Record a periodic check that changed no status (updated_at is left alone:
        it dates the last status change)."""
        values: dict[str, Any] = {"last_error": last_error, "updated_at": T.updated_at}
        if matched_by is not None:
            values.update(matched_by=matched_by, dns_chain=dns_chain)
        if check_due_at is not None:
            values["check_due_at"] = check_due_at
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id, T.status == status,
        ).values(**values)) == 1

    async def reschedule(self, name: str, customer_id: str, *, status: DomainStatus,
                         check_due_at: datetime) -> bool:
        return await self._write(update(TABLE).where(
            T.name == name, T.customer_id == customer_id, T.status == status,
        ).values(check_due_at=check_due_at, updated_at=T.updated_at)) == 1

    async def forget(self, name: str, customer_id: str, *, now: datetime,
                     tombstone_until: datetime) -> str:
        """`domain.deleted`: remove the row; a pending one becomes a tombstone instead
        (its rechecks are still in the retry tiers), purged later by the scheduler.
        Returns what happened: deleted, tombstoned, absent, not-owner."""
        async with self._engine.begin() as connection:
            row = (await connection.execute(
                select(T.customer_id, T.status, T.check_due_at).where(T.name == name)
                .with_for_update())).first()
            if row is None:
                return "absent"
            if row.customer_id != customer_id:
                return "not-owner"
            if is_tombstone(row.status, row.check_due_at):
                return "tombstoned"  # already
            if tombstoned_when_deleted(row.status):
                await connection.execute(update(TABLE).where(T.name == name).values(
                    status=transition(row.status, TOMBSTONE_STATUS), verified=False,
                    last_error="deleted by the customer", check_due_at=tombstone_until,
                    updated_at=now))
                return "tombstoned"
            await connection.execute(delete(TABLE).where(T.name == name))
            return "deleted"

    async def claim_due(self, now: datetime, limit: int,
                        next_due: Callable[[], datetime]) -> list[VerificationRow]:
        """Take up to `limit` verified/active/lapsed domains whose check is due, pushing
        their `check_due_at` on to `next_due()` in the same transaction, so no other
        replica takes them."""
        query = (select(*_COLUMNS)
                 .where(T.status.in_(RECHECKED),
                        or_(T.check_due_at.is_(None), T.check_due_at <= now))
                 .order_by(T.check_due_at.asc().nulls_first())
                 .limit(limit)
                 .with_for_update(skip_locked=True))
        async with self._engine.begin() as connection:
            rows = [_row(row) for row in (await connection.execute(query)).all()]
            if rows:
                await connection.execute(
                    update(TABLE).where(T.name == bindparam("b_name")).values(
                        check_due_at=bindparam("b_due"), updated_at=T.updated_at),
                    [{"b_name": row.name, "b_due": next_due()} for row in rows])
        return rows

    async def purge_tombstones(self, now: datetime) -> int:
        return await self._write(delete(TABLE).where(
            tombstone_condition(), T.check_due_at <= now))

    async def _write(self, statement: Any) -> int:
        async with self._auto.connect() as connection:
            result = await connection.execute(statement)
        return result.rowcount
