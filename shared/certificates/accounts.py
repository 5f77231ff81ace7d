"""The ACME account in the database, sealed under CERT_STORE_KEYS: certbot's account
files, so that a certifier on a new machine, with an empty certbot directory, carries on
with the same account (same rate-limit buckets at the CA, no new registration)."""

from __future__ import annotations

import json

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.certificates.keyring import Keyring, Sealed
from shared.db.models import AcmeAccount

ACME_ACCOUNT = "acme-account"  # the keyring purpose; the subject is the ACME directory URL


class AcmeAccounts:
    """`acme_accounts` rows: per ACME directory URL, the account's files, sealed."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        self._engine = engine
        self.keyring = keyring
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    async def save(self, server: str, account_id: str, files: dict[str, str]) -> None:
        sealed = self.keyring.seal(json.dumps(files, sort_keys=True).encode(),
                                   purpose=ACME_ACCOUNT, subject=server)
        values = dict(account_id=account_id, kid=sealed.kid, sealed=sealed.blob,
                      updated_at=func.now())
        async with self._engine.begin() as connection:
            await connection.execute(
                self._insert(AcmeAccount).values(server=server, **values)
                .on_conflict_do_update(index_elements=["server"], set_=values))

    async def load(self, server: str) -> tuple[str, dict[str, str]] | None:
        """(account id, files) stored for `server`, or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(AcmeAccount.account_id, AcmeAccount.kid, AcmeAccount.sealed)
                .where(AcmeAccount.server == server))).first()
        if row is None:
            return None
        account_id, kid, blob = row
        files = json.loads(self.keyring.open(Sealed(kid=kid, blob=blob),
                                             purpose=ACME_ACCOUNT, subject=server))
        return str(account_id), {str(k): str(v) for k, v in files.items()}

    async def forget(self, server: str) -> None:
        """The CA no longer knows the account: the next run registers a new one."""
        async with self._engine.begin() as connection:
            await connection.execute(delete(AcmeAccount).where(AcmeAccount.server == server))

    async def key_ids(self) -> dict[str, int]:
        """How many accounts each kid seals."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(AcmeAccount.kid, func.count()).group_by(AcmeAccount.kid))
            return {kid: int(count) for kid, count in rows}

    async def reseal(self) -> int:
        """Re-encrypt every account not sealed under the first key; how many were."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                select(AcmeAccount.server, AcmeAccount.kid, AcmeAccount.sealed)
                .where(AcmeAccount.kid != self.keyring.current_kid))).all()
        for server, kid, blob in rows:
            sealed = self.keyring.reseal(Sealed(kid=kid, blob=blob), purpose=ACME_ACCOUNT,
                                         subject=server)
            assert sealed is not None
            async with self._engine.begin() as connection:
                await connection.execute(
                    update(AcmeAccount).where(AcmeAccount.server == server,
                                              AcmeAccount.sealed == blob)
                    .values(kid=sealed.kid, sealed=sealed.blob))
        return len(rows)
