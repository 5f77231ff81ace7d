"""The watch's reads and writes of `domain_reputation` (and which names it watches).

One row per watched name and list. A name is watched while its tracking domain is
verified or active, and always for the platform host and its aliases. `claim_due` hands
each due row to one verifier replica (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and moves
its `next_check_at` on in the same transaction; `record` writes a verdict only over the
status it was claimed with, so an answer handled twice never publishes twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import DomainReputation, TrackingDomain
from shared.domain_status import DomainStatus

R = DomainReputation.__table__.c
TABLE = DomainReputation.__table__
D = TrackingDomain.__table__.c
WATCHED_STATUSES = (DomainStatus.VERIFIED, DomainStatus.ACTIVE)
UNCHECKED, LISTED, NOT_LISTED = "unchecked", "listed", "not_listed"


@dataclass(frozen=True)
class Watched:
    """A name the watch looks up: a customer's tracking domain or the platform host."""

    name: str
    customer_id: str | None  # None: the platform host (or an alias)

    @property
    def platform_host(self) -> bool:
        return self.customer_id is None


@dataclass(frozen=True)
class ReputationRow:
    name: str
    blocklist: str
    status: str
    categories: tuple[str, ...]
    first_listed_at: datetime | None
    last_checked_at: datetime | None


@dataclass(frozen=True)
class VerdictWrite:
    """A verdict to store over the row it was claimed as."""

    row: ReputationRow
    status: str  # listed or not_listed
    categories: tuple[str, ...]
    raw: tuple[str, ...]
    fix_url: str


@dataclass(frozen=True)
class Listing:
    """A row as trackctl and the metrics see it."""

    name: str
    blocklist: str
    categories: tuple[str, ...]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def split_categories(text: str | None) -> tuple[str, ...]:
    return tuple(c for c in (text or "").split(",") if c)


class ReputationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def watched(self, platform_hosts: Iterable[str]) -> dict[str, Watched]:
        """Every name to look up now, by name: verified and active tracking domains, and
        the platform's own hosts."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                select(D.name, D.customer_id).where(D.status.in_(WATCHED_STATUSES)))).all()
        found = {name: Watched(name, customer) for name, customer in rows}
        for host in platform_hosts:
            found[host] = Watched(host, None)
        return found

    async def sync(self, watched: Iterable[str], lists: Mapping[str, str], *,
                   due: Callable[[], datetime]) -> tuple[int, int]:
        """Add a row, due at `due()`, for each watched name and list (`lists`: kind ->
        zone label) that has none; remove the rows of names no longer watched or lists no
        longer configured. Returns (added, removed)."""
        names = set(watched)
        async with self._engine.begin() as connection:
            existing = {(name, kind): row_id for row_id, name, kind in (
                await connection.execute(select(R.id, R.name, R.blocklist))).all()}
            gone = [row_id for (name, kind), row_id in existing.items()
                    if name not in names or kind not in lists]
            missing = [{"name": name, "blocklist": kind, "zone": zone, "status": UNCHECKED,
                        "next_check_at": due()}
                       for name in sorted(names) for kind, zone in lists.items()
                       if (name, kind) not in existing]
            if gone:
                for start in range(0, len(gone), 1000):
                    await connection.execute(
                        delete(TABLE).where(R.id.in_(gone[start:start + 1000])))
            if missing:
                insert = (postgresql.insert(TABLE)
                          if connection.dialect.name == "postgresql" else sqlite.insert(TABLE))
                # Another replica may add the same rows meanwhile: theirs stand.
                await connection.execute(insert.on_conflict_do_nothing(), missing)
        return len(missing), len(gone)

    async def claim_due(self, blocklist: str, now: datetime, limit: int,
                        next_check: Callable[[ReputationRow], datetime]
                        ) -> list[ReputationRow]:
        """Take up to `limit` rows of `blocklist` that are due, moving each one's
        `next_check_at` on to `next_check(row)` in the same transaction."""
        query = (select(R.name, R.blocklist, R.status, R.categories, R.first_listed_at,
                        R.last_checked_at)
                 .where(R.blocklist == blocklist, R.next_check_at <= now)
                 .order_by(R.next_check_at).limit(limit)
                 .with_for_update(skip_locked=True))
        async with self._engine.begin() as connection:
            rows = [ReputationRow(row.name, row.blocklist, row.status,
                                  split_categories(row.categories), _utc(row.first_listed_at),
                                  _utc(row.last_checked_at))
                    for row in (await connection.execute(query)).all()]
            if rows:
                await connection.execute(
                    update(TABLE).where(R.name == bindparam("b_name"),
                                        R.blocklist == blocklist)
                    .values(next_check_at=bindparam("b_next")),
                    [{"b_name": row.name, "b_next": next_check(row)} for row in rows])
        return rows

    async def reschedule(self, blocklist: str, names: Iterable[str], *,
                         next_check: Callable[[], datetime]) -> None:
        """Look at these rows again at `next_check()` (a discarded round, a budget
        stretched, an answer that was no verdict)."""
        params = [{"b_name": name, "b_next": next_check()} for name in names]
        if not params:
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                update(TABLE).where(R.name == bindparam("b_name"), R.blocklist == blocklist)
                .values(next_check_at=bindparam("b_next")), params)

    async def record(self, writes: Sequence[VerdictWrite], *, now: datetime) -> None:
        """Write the verdicts, each only over the status its row was claimed with (a row
        changed or gone meanwhile is left alone), in one transaction."""
        if not writes:
            return
        def params(write: VerdictWrite) -> dict[str, Any]:
            return {"b_name": write.row.name, "b_list": write.row.blocklist,
                    "b_old": write.row.status, "b_categories": ",".join(write.categories) or None,
                    "b_raw": ",".join(write.raw) or None,
                    "b_fix": write.fix_url if write.status == LISTED else None,
                    "b_status": write.status,
                    "b_first": now if write.status == LISTED else None}

        where = (R.name == bindparam("b_name"), R.blocklist == bindparam("b_list"),
                 R.status == bindparam("b_old"))
        common = {"categories": bindparam("b_categories"), "raw": bindparam("b_raw"),
                  "fix_url": bindparam("b_fix"), "last_checked_at": now}
        same = [params(w) for w in writes if w.status == w.row.status]
        changed = [params(w) for w in writes if w.status != w.row.status]
        async with self._engine.begin() as connection:
            if same:
                await connection.execute(update(TABLE).where(*where).values(**common), same)
            if changed:
                await connection.execute(update(TABLE).where(*where).values(
                    **common, status=bindparam("b_status"), last_changed_at=now,
                    first_listed_at=bindparam("b_first")), changed)

    async def listings(self) -> list[Listing]:
        """Every row that is listed now."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                select(R.name, R.blocklist, R.categories).where(R.status == LISTED)
                .order_by(R.name, R.blocklist))).all()
        return [Listing(name, kind, split_categories(categories))
                for name, kind, categories in rows]

    async def due_count(self, blocklist: str, now: datetime) -> int:
        """Rows of `blocklist` due now (the backlog a stretched schedule leaves)."""
        async with self._engine.connect() as connection:
            return int((await connection.execute(
                select(func.count()).where(R.blocklist == blocklist,
                                           R.next_check_at <= now))).scalar_one())
