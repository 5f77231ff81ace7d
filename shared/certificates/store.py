"""The certificate store in the database: every domain's current chain and its sealed key.

The certifier writes (`put` after each issuance or renewal, `delete` when a domain goes);
every edge reads (`get` one domain on `certificate.issued`, `served` / `served_serials`
for its full sync); `reseal` moves every key to the first CERT_STORE_KEYS entry after a
rotation. Private keys leave this module only decrypted in `StoredCertificate.key_pem`,
which never appears in a repr.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from shared.certificates.keyring import Keyring, Sealed, SealError
from shared.certificates.pem import CertificateInfo, ari_certificate_id, check_pair, leaf
from shared.db.models import StoredCertificate as Row
from shared.db.models import TrackingDomain
from shared.domain_status import DomainStatus

PRIVATE_KEY = "private-key"  # the keyring purpose of a certificate's private key
# Statuses whose stored certificate an edge serves. A lapsed or deleted domain's is not
# served (its DNS left us); a verified one's is (it is being put in service).
SERVED_STATUSES = (DomainStatus.VERIFIED, DomainStatus.ACTIVE)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class StoredCertificate:
    """A domain's certificate as stored, its private key decrypted."""

    name: str
    chain_pem: str
    key_pem: bytes = field(repr=False)
    serial: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    ari_id: str | None = None

    @property
    def info(self) -> CertificateInfo:
        return CertificateInfo(not_before=self.not_before, not_after=self.not_after,
                               serial=self.serial)


@dataclass(frozen=True)
class Unreadable:
    """A stored certificate whose key does not open with this keyring (its kid is not
    listed, or the sealed value was altered): `CertStore.get_many` names it, and says why."""

    name: str
    reason: str


_COLUMNS = (Row.name, Row.chain_pem, Row.key_kid, Row.key_sealed, Row.serial, Row.not_before,
            Row.not_after, Row.issued_at, Row.ari_id)


class CertStore:
    """`certificates` rows, keys sealed and opened with `keyring`."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        self._engine = engine
        self.keyring = keyring
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    def _open(self, row: Sequence[object]) -> StoredCertificate:
        name, chain, kid, sealed, serial, not_before, not_after, issued_at, ari_id = row
        assert isinstance(name, str) and isinstance(chain, str) and isinstance(kid, str)
        assert isinstance(sealed, bytes) and isinstance(serial, str)
        assert isinstance(not_before, datetime) and isinstance(not_after, datetime)
        assert isinstance(issued_at, datetime)
        key = self.keyring.open(Sealed(kid=kid, blob=sealed), purpose=PRIVATE_KEY, subject=name)
        return StoredCertificate(
            name=name, chain_pem=chain, key_pem=key, serial=serial,
            not_before=as_utc(not_before), not_after=as_utc(not_after),
            issued_at=as_utc(issued_at), ari_id=ari_id if isinstance(ari_id, str) else None)

    async def put(self, name: str, chain_pem: str, key_pem: bytes, *,
                  issued_at: datetime | None = None,
                  ari_id: str | None = None) -> StoredCertificate:
        """Store `name`'s certificate (replacing the one stored); the key must be the leaf's.
        Raises `PemError` for a chain or key that does not fit. The domain's row must exist."""
        facts = check_pair(chain_pem, key_pem)
        if ari_id is None:
            ari_id = ari_certificate_id(leaf(chain_pem))
        sealed = self.keyring.seal(key_pem, purpose=PRIVATE_KEY, subject=name)
        at = issued_at or datetime.now(UTC)
        values = dict(chain_pem=chain_pem, key_kid=sealed.kid, key_sealed=sealed.blob,
                      serial=facts.serial, not_before=facts.not_before,
                      not_after=facts.not_after, issued_at=at, ari_id=ari_id,
                      updated_at=func.now())
        statement = self._insert(Row).values(name=name, **values)
        statement = statement.on_conflict_do_update(index_elements=["name"], set_=values)
        async with self._engine.begin() as connection:
            await connection.execute(statement)
        return StoredCertificate(name=name, chain_pem=chain_pem, key_pem=key_pem,
                                 serial=facts.serial, not_before=facts.not_before,
                                 not_after=facts.not_after, issued_at=at, ari_id=ari_id)

    async def get(self, name: str) -> StoredCertificate | None:
        """`name`'s stored certificate whatever its domain's status (None: none stored)."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(*_COLUMNS).where(Row.name == name))).first()
        return None if row is None else self._open(row)

    async def get_many(self, names: Sequence[str], *, batch: int = 1000,
                       ) -> list[StoredCertificate | Unreadable]:
        """The stored certificates of `names` (those stored), `batch` names a query; each
        key opened on its own, so one that does not open comes back as `Unreadable`
        instead of holding back the others."""
        found: list[StoredCertificate | Unreadable] = []
        for start in range(0, len(names), batch):
            async with self._engine.connect() as connection:
                rows = (await connection.execute(select(*_COLUMNS).where(
                    Row.name.in_(names[start:start + batch])))).all()
            for row in rows:
                try:
                    found.append(self._open(row))
                except SealError as exc:
                    found.append(Unreadable(name=row[0], reason=str(exc)))
        return found

    async def served(self, now: datetime | None = None) -> list[StoredCertificate]:
        """Every certificate an edge should serve now (a full sync): its domain is verified
        or active and it has not expired. Ordered by name."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                select(*_COLUMNS).join(TrackingDomain, TrackingDomain.name == Row.name)
                .where(self._served(now)).order_by(Row.name))).all()
        return [self._open(row) for row in rows]

    async def served_serials(self, now: datetime | None = None) -> dict[str, str]:
        """name -> serial of what `served` returns, without reading or opening any key:
        what an edge compares with what it has, to fetch only the difference."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(Row.name, Row.serial).join(TrackingDomain, TrackingDomain.name == Row.name)
                .where(self._served(now)))
            return {name: serial for name, serial in rows}

    @staticmethod
    def _served(now: datetime | None) -> ColumnElement[bool]:
        return and_(TrackingDomain.status.in_(SERVED_STATUSES),
                    Row.not_after > (now or datetime.now(UTC)))

    async def serials(self) -> dict[str, str]:
        """name -> serial of every stored certificate, whatever its domain's status."""
        async with self._engine.connect() as connection:
            return {name: serial for name, serial in
                    await connection.execute(select(Row.name, Row.serial))}

    async def delete(self, name: str) -> bool:
        """Forget `name`'s certificate; False if none was stored."""
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(Row).where(Row.name == name))
        return bool(result.rowcount)

    async def set_ari_id(self, name: str, serial: str, ari_id: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(update(Row).where(Row.name == name, Row.serial == serial)
                                     .values(ari_id=ari_id))

    async def key_ids(self) -> dict[str, int]:
        """How many stored keys each kid seals (after a rotation: what is left to reseal)."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(Row.key_kid, func.count()).group_by(Row.key_kid))
            return {kid: int(count) for kid, count in rows}

    async def reseal(self, batch: int = 200) -> int:
        """Re-encrypt every key not sealed under the first CERT_STORE_KEYS entry; returns
        how many were. Safe to repeat and to run beside the certifier: a row is only
        rewritten if it still holds the value that was read."""
        done = 0
        current = self.keyring.current_kid
        while True:
            async with self._engine.connect() as connection:
                rows = (await connection.execute(
                    select(Row.name, Row.key_kid, Row.key_sealed)
                    .where(Row.key_kid != current).order_by(Row.name).limit(batch))).all()
            if not rows:
                return done
            for name, kid, blob in rows:
                sealed = self.keyring.reseal(Sealed(kid=kid, blob=blob),
                                             purpose=PRIVATE_KEY, subject=name)
                assert sealed is not None
                async with self._engine.begin() as connection:
                    result = await connection.execute(
                        update(Row).where(Row.name == name, Row.key_kid == kid,
                                          Row.key_sealed == blob)
                        .values(key_kid=sealed.kid, key_sealed=sealed.blob))
                done += int(bool(result.rowcount))
