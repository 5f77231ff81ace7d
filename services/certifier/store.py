"""The certifier's view of the database: tracking-domain rows and the ACME request history.

The certifier owns the `certificate_*` columns and the move from `verified` to `active`;
the verifier owns the DNS columns and every other status change. Writes are guarded
by the status they expect, so a stale event never re-activates a domain that lapsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.certifier.certbot import CertificateInfo
from services.certifier.ratelimits import (
    CERTIFICATE,
    FAILED_VALIDATION,
    ORDER,
    History,
    Limits,
)
from shared.db.models import AcmeEvent, TrackingDomain
from shared.domain_status import DomainStatus, sources
from shared.domains import registered_domain

# Statuses a certificate may be issued and recorded for: those that may become active.
CERTIFIABLE_STATUSES = sources(DomainStatus.ACTIVE)


@dataclass(frozen=True)
class CertificateRow:
    """A `tracking_domains` row as the certifier sees it: status and certificate columns."""

    name: str
    customer_id: str
    status: DomainStatus
    verified: bool
    certificate_serial: str | None
    certificate_expires_at: datetime | None
    certificate_renew_at: datetime | None


_COLUMNS = (TrackingDomain.name, TrackingDomain.customer_id, TrackingDomain.status,
            TrackingDomain.verified, TrackingDomain.certificate_serial,
            TrackingDomain.certificate_expires_at, TrackingDomain.certificate_renew_at)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _row(row: Sequence[object]) -> CertificateRow:
    name, customer, status, verified, serial, expires, renew = row
    return CertificateRow(
        name=str(name), customer_id=str(customer), status=DomainStatus(str(status)),
        verified=bool(verified),
        certificate_serial=serial if isinstance(serial, str) else None,
        certificate_expires_at=_utc(expires) if isinstance(expires, datetime) else None,
        certificate_renew_at=_utc(renew) if isinstance(renew, datetime) else None)


class CertificateStore:
    """The certifier's writes of `tracking_domains` (certificate columns, verified -> active)
    and its ledger of ACME requests (`acme_events`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, name: str) -> CertificateRow | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(*_COLUMNS).where(TrackingDomain.name == name))).first()
        return _row(row) if row is not None else None

    async def activate(self, name: str, certificate: CertificateInfo,
                       renew_at: datetime) -> bool:
        """Record the certificate and make the domain active; False if its status moved on."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(TrackingDomain)
                .where(TrackingDomain.name == name,
                       TrackingDomain.status.in_(CERTIFIABLE_STATUSES))
                .values(status=DomainStatus.ACTIVE, last_error=None,
                        certificate_serial=certificate.serial,
                        certificate_issued_at=certificate.not_before,
                        certificate_expires_at=certificate.not_after,
                        certificate_renew_at=renew_at, updated_at=func.now()))
        return bool(result.rowcount)

    async def set_last_error(self, name: str, text: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(TrackingDomain).where(TrackingDomain.name == name)
                .values(last_error=text, updated_at=func.now()))

    async def postpone_renewal(self, name: str, at: datetime | None) -> None:
        """Set when renewal is next tried; None stops renewing (lapsed, deleted)."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(TrackingDomain).where(TrackingDomain.name == name)
                .values(certificate_renew_at=at, updated_at=func.now()))

    async def forget_certificate(self, name: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(TrackingDomain).where(TrackingDomain.name == name)
                .values(certificate_serial=None, certificate_issued_at=None,
                        certificate_expires_at=None, certificate_renew_at=None,
                        updated_at=func.now()))

    async def expiring(self, before: datetime) -> tuple[int, datetime | None]:
        """Active domains whose certificate expires before `before`, and the soonest
        expiry of any active domain's certificate (None: no active domain)."""
        expires = TrackingDomain.certificate_expires_at
        async with self._engine.connect() as connection:
            count, soonest = (await connection.execute(
                select(func.count(expires).filter(expires < before), func.min(expires))
                .where(TrackingDomain.status == DomainStatus.ACTIVE))).one()
        return int(count or 0), _utc(soonest) if isinstance(soonest, datetime) else None

    async def due_for_renewal(self, now: datetime, limit: int = 100) -> list[CertificateRow]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(*_COLUMNS)
                .where(TrackingDomain.status == DomainStatus.ACTIVE,
                       TrackingDomain.certificate_renew_at.is_not(None),
                       TrackingDomain.certificate_renew_at <= now)
                .order_by(TrackingDomain.certificate_renew_at)
                .limit(limit))
            return [_row(row) for row in rows]

    async def record(self, kind: str, name: str, at: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(AcmeEvent).values(
                kind=kind, name=name, registered_domain=registered_domain(name), at=at))

    async def history(self, name: str, limits: Limits, now: datetime) -> History:
        """The timestamps `ratelimits.hold_back` needs for a new order for `name`."""
        domain = registered_domain(name)

        async def times(kind: str, window: timedelta, **where: str) -> Sequence[datetime]:
            query = select(AcmeEvent.at).where(AcmeEvent.kind == kind,
                                               AcmeEvent.at > now - window)
            for column, value in where.items():
                query = query.where(getattr(AcmeEvent, column) == value)
            async with self._engine.connect() as connection:
                return [_utc(at) for (at,) in await connection.execute(query)]

        return History(
            orders=await times(ORDER, limits.orders_window),
            domain_certificates=await times(CERTIFICATE, limits.certificates_window,
                                            registered_domain=domain),
            name_certificates=await times(CERTIFICATE, limits.duplicates_window, name=name),
            name_failed_validations=await times(FAILED_VALIDATION,
                                                limits.failed_validations_window, name=name),
        )

    async def count_since(self, kind: str, name: str, since: datetime) -> int:
        async with self._engine.connect() as connection:
            return int((await connection.execute(
                select(func.count()).select_from(AcmeEvent)
                .where(AcmeEvent.kind == kind, AcmeEvent.name == name,
                       AcmeEvent.at > since))).scalar_one())
