"""HTTP-01 answers in the database, so every redirector on every edge can serve them.

The certifier's challenge hook `publish`es the answer before certbot asks the CA to
validate and `withdraw`s it afterwards; a redirector `lookup`s the token when the CA
fetches http://<name>/.well-known/acme-challenge/<token>. An answer also carries an
expiry, so one left behind by a hook that died is never served for long, and the next
`publish` removes it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import AcmeChallenge

# The token alphabet the CA uses (base64url, RFC 8555 section 8.3).
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Longer than any order's validation takes; certbot's own timeout is far below.
DEFAULT_TTL = timedelta(hours=1)


class ChallengeAnswers:
    """`acme_challenges` rows: token -> key authorization."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = (postgresql.insert if engine.dialect.name == "postgresql"
                        else sqlite.insert)

    async def publish(self, token: str, name: str, validation: str, *,
                      ttl: timedelta = DEFAULT_TTL, now: datetime | None = None) -> None:
        if not TOKEN_RE.match(token):
            raise ValueError("not an ACME token")
        now = now or datetime.now(UTC)
        values = dict(name=name, validation=validation, created_at=now, expires_at=now + ttl)
        async with self._engine.begin() as connection:
            await connection.execute(delete(AcmeChallenge)
                                     .where(AcmeChallenge.expires_at <= now))
            await connection.execute(
                self._insert(AcmeChallenge).values(token=token, **values)
                .on_conflict_do_update(index_elements=["token"], set_=values))

    async def withdraw(self, token: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(AcmeChallenge).where(AcmeChallenge.token == token))

    async def lookup(self, token: str, now: datetime | None = None) -> str | None:
        """The answer for `token` while it is valid; None for an unknown or expired one."""
        if not TOKEN_RE.match(token):
            return None
        async with self._engine.connect() as connection:
            return (await connection.execute(
                select(AcmeChallenge.validation)
                .where(AcmeChallenge.token == token,
                       AcmeChallenge.expires_at > (now or datetime.now(UTC))))).scalar()
