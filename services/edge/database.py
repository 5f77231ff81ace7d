"""The edge agent's own rows: `edge_certificates` (what this edge serves), and the few
facts about a domain it needs from `tracking_domains` (its customer, whether it is served).

The certificates themselves come from the certificate store (shared.certificates).
A row's `announced` says whether `certificate.installed` went out for its serial: a row
is written (not announced) before the event is published and marked after the broker
confirmed it, so an announcement lost in between is sent again (`unannounced`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.certificates import SERVED_STATUSES
from shared.db.models import EdgeCertificate, TrackingDomain

BATCH = 500  # rows a statement


@dataclass(frozen=True)
class DomainFacts:
    customer_id: str
    served: bool  # its status is one whose certificate edges serve


class EdgeRecords:
    """`edge_certificates` rows of one edge, and domain facts read for it."""

    def __init__(self, engine: AsyncEngine, edge_id: str) -> None:
        self._engine = engine
        self.edge_id = edge_id
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    async def domain(self, name: str) -> DomainFacts | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(TrackingDomain.customer_id, TrackingDomain.status)
                .where(TrackingDomain.name == name))).first()
        if row is None:
            return None
        return DomainFacts(customer_id=row[0], served=row[1] in SERVED_STATUSES)

    async def customers(self, names: Iterable[str]) -> dict[str, str]:
        """name -> customer id, for the names that have a row."""
        wanted = list(names)
        found: dict[str, str] = {}
        async with self._engine.connect() as connection:
            for start in range(0, len(wanted), 1000):
                rows = await connection.execute(
                    select(TrackingDomain.name, TrackingDomain.customer_id)
                    .where(TrackingDomain.name.in_(wanted[start:start + 1000])))
                found.update({name: customer for name, customer in rows})
        return found

    async def recorded(self) -> dict[str, str]:
        """domain -> serial as this edge's rows say."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(EdgeCertificate.domain, EdgeCertificate.serial)
                .where(EdgeCertificate.edge_id == self.edge_id))
            return {domain: serial for domain, serial in rows}

    async def record(self, served: Mapping[str, str]) -> None:
        """Note that this edge serves each domain's serial (now), not announced yet; a
        statement per `BATCH` rows."""
        items = list(served.items())
        for start in range(0, len(items), BATCH):
            statement = self._insert(EdgeCertificate).values(
                [{"edge_id": self.edge_id, "domain": name, "serial": serial,
                  "announced": False} for name, serial in items[start:start + BATCH]])
            statement = statement.on_conflict_do_update(
                index_elements=["edge_id", "domain"],
                set_={"serial": statement.excluded.serial,
                      "installed_at": statement.excluded.installed_at,
                      "announced": False})
            async with self._engine.begin() as connection:
                await connection.execute(statement)

    async def unannounced(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """domain -> serial of this edge's rows whose `certificate.installed` has not gone
        out (of `names` only, when given)."""
        query = select(EdgeCertificate.domain, EdgeCertificate.serial).where(
            EdgeCertificate.edge_id == self.edge_id, EdgeCertificate.announced.is_(False))
        if names is not None:
            query = query.where(EdgeCertificate.domain.in_(list(names)))
        async with self._engine.connect() as connection:
            return {domain: serial for domain, serial in await connection.execute(query)}

    async def announced(self, served: Mapping[str, str]) -> None:
        """Mark each domain's row announced, if it still holds that serial."""
        if not served:
            return
        statement = update(EdgeCertificate).where(
            EdgeCertificate.edge_id == self.edge_id,
            EdgeCertificate.domain == bindparam("b_domain"),
            EdgeCertificate.serial == bindparam("b_serial")).values(announced=True)
        items = [{"b_domain": name, "b_serial": serial} for name, serial in served.items()]
        for start in range(0, len(items), BATCH):
            async with self._engine.begin() as connection:
                await connection.execute(statement, items[start:start + BATCH])

    async def forget(self, names: Iterable[str]) -> None:
        gone = list(names)
        if not gone:
            return
        async with self._engine.begin() as connection:
            await connection.execute(delete(EdgeCertificate).where(
                EdgeCertificate.edge_id == self.edge_id, EdgeCertificate.domain.in_(gone)))
