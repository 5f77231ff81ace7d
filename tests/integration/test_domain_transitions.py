"""The stores make exactly the status moves of shared/domain_status.py, on PostgreSQL.

Each status-changing method of the verifier's and the certifier's store is tried on a row
in every status. The moves that happened must all be allowed, together they must be every
allowed move (no rule nobody implements), and the method told the status it moves from
refuses a forbidden move before it writes anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from demo.databases import execute, fetch
from services.certifier.certbot import CertificateInfo
from services.certifier.store import CertificateStore
from services.verifier.store import VerificationStore
from shared.domain_status import TRANSITIONS, DomainStatus, ForbiddenTransition
from shared.settings import DatabaseSettings

NAME, CUSTOMER = "track.customer-a.test", "cust-a"
NOW = datetime.now(UTC)
CERTIFICATE = CertificateInfo(not_before=NOW, not_after=NOW + timedelta(days=90), serial="0a")

Move = Callable[[VerificationStore, CertificateStore], Awaitable[object]]


async def _restart(verifier: VerificationStore, _: CertificateStore) -> object:
    row = await verifier.get(NAME)
    assert row is not None
    return await verifier.restart(row, CUSTOMER, datetime.now(UTC))


def _mark_verified(from_status: DomainStatus) -> Move:
    async def move(verifier: VerificationStore, _: CertificateStore) -> object:
        return await verifier.mark_verified(
            NAME, CUSTOMER, from_status=from_status, matched_by="cname",
            dns_chain=f"{NAME} -> click.platform.test", check_due_at=NOW, now=NOW)
    return move


# Every store method that sets a status, by name.
MOVES: dict[str, Move] = {
    "verifier.restart": _restart,
    **{f"verifier.mark_verified(from {status})": _mark_verified(status)
       for status in DomainStatus},
    "verifier.mark_rejected": lambda verifier, _: verifier.mark_rejected(
        NAME, CUSTOMER, last_error="wrong_target: x", now=NOW),
    "verifier.mark_lapsed": lambda verifier, _: verifier.mark_lapsed(
        NAME, CUSTOMER, last_error="no_cname: x", now=NOW),
    "verifier.forget": lambda verifier, _: verifier.forget(
        NAME, CUSTOMER, now=NOW, tombstone_until=NOW + timedelta(hours=1)),
    "certifier.activate": lambda _, certifier: certifier.activate(
        NAME, CERTIFICATE, NOW + timedelta(days=60)),
}


async def _seed(database: DatabaseSettings, status: DomainStatus) -> None:
    await execute(database, "DELETE FROM tracking_domains")
    await execute(database, (
        "INSERT INTO tracking_domains (name, customer_id, status, verified, created_at, "
        "updated_at) VALUES ($1, $2, $3, $4, $5, $5)"),
        NAME, CUSTOMER, status, status in (DomainStatus.VERIFIED, DomainStatus.ACTIVE),
        NOW - timedelta(hours=1))


async def _status(database: DatabaseSettings) -> str | None:
    rows = await fetch(database, "SELECT status FROM tracking_domains WHERE name = $1", NAME)
    return rows[0]["status"] if rows else None


async def test_the_stores_make_exactly_the_allowed_moves(
        database: DatabaseSettings, engine: AsyncEngine) -> None:
    verifier, certifier = VerificationStore(engine), CertificateStore(engine)
    allowed = {(move.old, move.new) for move in TRANSITIONS}
    made: dict[tuple[str, str], list[str]] = {}
    refused: list[tuple[str, DomainStatus]] = []
    for status in DomainStatus:
        for method, move in MOVES.items():
            await _seed(database, status)
            try:
                result = await move(verifier, certifier)
            except ForbiddenTransition:
                assert await _status(database) == status, (method, status)  # nothing written
                refused.append((method, status))
                continue
            after = await _status(database)
            if result in (True, "tombstoned"):
                assert after is not None
                made.setdefault((status, after), []).append(method)
            else:  # no write (status not as expected), or the row deleted
                assert after in (status, None), (method, status, after)
    assert set(made) <= allowed, {move: made[move] for move in set(made) - allowed}
    assert set(made) == allowed, f"no store makes {allowed - set(made)}"
    # The method told the status it moves from refuses the forbidden ones.
    assert sorted(refused) == sorted(
        (f"verifier.mark_verified(from {old})", status)
        for old in DomainStatus if not old.can_become(DomainStatus.VERIFIED)
        for status in DomainStatus)
