"""The certificate store against real PostgreSQL: chains and sealed keys, the edge's reads,
key rotation, and HTTP-01 answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.certificates import (
    AcmeAccounts,
    CertStore,
    ChallengeAnswers,
    Keyring,
    PemError,
    SealError,
)
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from shared.db.models import StoredCertificate as Row
from shared.db.models import TrackingDomain
from shared.domain_status import DomainStatus
from shared.settings import CERT_STORE_KEYS, DatabaseSettings
from tests.support.certificates import self_signed_pem

OLD = "k2026:" + "o" * 40
NEW = "k2027:" + "n" * 40


@pytest.fixture
async def engine(database: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database)
    yield engine
    await engine.dispose()


def keyring(value: str = OLD) -> Keyring:
    return Keyring(CERT_STORE_KEYS.parse(value))


async def add_domain(engine: AsyncEngine, name: str,
                     status: DomainStatus = DomainStatus.ACTIVE) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(TrackingDomain).values(
            name=name, customer_id="customer-a", status=status,
            verified=status in (DomainStatus.VERIFIED, DomainStatus.ACTIVE)))


async def test_a_stored_certificate_reads_back_with_its_key_sealed_at_rest(
        engine: AsyncEngine) -> None:
    await add_domain(engine, "a.test")
    store = CertStore(engine, keyring())
    chain, key = self_signed_pem("a.test", serial=0xABC)
    stored = await store.put("a.test", chain, key)
    assert stored.serial == "abc"
    got = await store.get("a.test")
    assert got is not None
    assert (got.chain_pem, got.key_pem, got.serial) == (chain, key, "abc")
    assert got.not_after - got.not_before == timedelta(days=90)
    assert "PRIVATE" not in repr(got)
    async with engine.connect() as connection:
        kid, blob = (await connection.execute(
            select(Row.key_kid, Row.key_sealed).where(Row.name == "a.test"))).one()
    assert kid == "k2026" and b"PRIVATE KEY" not in blob and key not in blob
    assert await store.get("missing.test") is None


async def test_put_replaces_the_stored_certificate_and_refuses_a_key_of_another(
        engine: AsyncEngine) -> None:
    await add_domain(engine, "a.test")
    store = CertStore(engine, keyring())
    await store.put("a.test", *self_signed_pem("a.test", serial=1))
    chain, key = self_signed_pem("a.test", serial=2)
    await store.put("a.test", chain, key)
    got = await store.get("a.test")
    assert got is not None and got.serial == "2"
    _, other_key = self_signed_pem("a.test")
    with pytest.raises(PemError, match="does not belong"):
        await store.put("a.test", chain, other_key)
    with pytest.raises(PemError, match="not a PEM certificate chain"):
        await store.put("a.test", "garbage", key)


async def test_served_is_what_an_edge_installs(engine: AsyncEngine) -> None:
    store = CertStore(engine, keyring())
    for name, status in (("active.test", DomainStatus.ACTIVE),
                         ("verified.test", DomainStatus.VERIFIED),
                         ("lapsed.test", DomainStatus.LAPSED),
                         ("expired.test", DomainStatus.ACTIVE)):
        await add_domain(engine, name, status)
    await store.put("active.test", *self_signed_pem("active.test", serial=1))
    await store.put("verified.test", *self_signed_pem("verified.test", serial=2))
    await store.put("lapsed.test", *self_signed_pem("lapsed.test", serial=3))
    await store.put("expired.test", *self_signed_pem(
        "expired.test", serial=4, not_before=datetime.now(UTC) - timedelta(days=10),
        lifetime=timedelta(days=5)))
    served = await store.served()
    assert [(c.name, c.serial) for c in served] == [("active.test", "1"), ("verified.test", "2")]
    assert all(c.key_pem.startswith(b"-----BEGIN PRIVATE KEY") for c in served)
    assert await store.served_serials() == {"active.test": "1", "verified.test": "2"}


async def test_delete_and_a_purged_domain_take_the_certificate_away(engine: AsyncEngine) -> None:
    store = CertStore(engine, keyring())
    for name in ("a.test", "b.test"):
        await add_domain(engine, name)
        await store.put(name, *self_signed_pem(name))
    assert await store.delete("a.test") is True
    assert await store.delete("a.test") is False
    async with engine.begin() as connection:
        await connection.execute(delete(TrackingDomain).where(TrackingDomain.name == "b.test"))
    assert await store.get("a.test") is None and await store.get("b.test") is None


async def test_key_rotation_keeps_every_certificate_readable_and_reseal_finishes_it(
        engine: AsyncEngine) -> None:
    names = [f"d{n}.test" for n in range(5)]
    before = CertStore(engine, keyring(OLD))
    keys = {}
    for name in names:
        await add_domain(engine, name)
        chain, keys[name] = self_signed_pem(name)
        await before.put(name, chain, keys[name])
    rotated = CertStore(engine, keyring(f"{NEW},{OLD}"))
    assert {c.name: c.key_pem for c in await rotated.served()} == keys
    chain, keys["d0.test"] = self_signed_pem("d0.test")
    await rotated.put("d0.test", chain, keys["d0.test"])  # a renewal seals with the new key
    assert await rotated.key_ids() == {"k2026": 4, "k2027": 1}
    assert await rotated.reseal(batch=2) == 4
    assert await rotated.reseal() == 0
    assert await rotated.key_ids() == {"k2027": 5}
    only_new = CertStore(engine, keyring(NEW))
    assert {c.name: c.key_pem for c in await only_new.served()} == keys
    with pytest.raises(SealError, match="does not list"):
        await CertStore(engine, keyring(OLD)).get("d1.test")


async def test_a_key_copied_onto_another_row_does_not_open(engine: AsyncEngine) -> None:
    store = CertStore(engine, keyring())
    for name in ("a.test", "b.test"):
        await add_domain(engine, name)
        await store.put(name, *self_signed_pem(name))
    async with engine.begin() as connection:
        blob = (await connection.execute(
            select(Row.key_sealed).where(Row.name == "a.test"))).scalar_one()
        await connection.execute(update(Row).where(Row.name == "b.test").values(key_sealed=blob))
    with pytest.raises(SealError):
        await store.get("b.test")


async def test_challenge_answers_are_served_while_valid(engine: AsyncEngine) -> None:
    answers = ChallengeAnswers(engine)
    now = datetime.now(UTC)
    await answers.publish("tok_1", "a.test", "tok_1.thumb", now=now)
    await answers.publish("tok_1", "a.test", "tok_1.thumb2", now=now)  # a retried hook
    assert await answers.lookup("tok_1") == "tok_1.thumb2"
    assert await answers.lookup("tok_1", now=now + timedelta(hours=2)) is None
    assert await answers.lookup("../etc") is None and await answers.lookup("nope") is None
    await answers.withdraw("tok_1")
    assert await answers.lookup("tok_1") is None
    await answers.publish("old", "a.test", "old.x", ttl=timedelta(seconds=1),
                          now=now - timedelta(hours=1))
    await answers.publish("new", "a.test", "new.x", now=now)  # removes the stale one
    assert await answers.lookup("old", now=now - timedelta(hours=1)) is None


async def test_the_store_works_on_sqlite_too(tmp_path: Path) -> None:
    """The development default (scripts/run): the same upserts and reads on SQLite."""
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/store.db")
    await upgrade(settings)
    engine = create_engine(settings)
    try:
        await add_domain(engine, "a.test")
        store = CertStore(engine, keyring())
        await store.put("a.test", *self_signed_pem("a.test", serial=1))
        chain, key = self_signed_pem("a.test", serial=2)
        await store.put("a.test", chain, key)
        [served] = await store.served()
        assert (served.serial, served.key_pem) == ("2", key)
        assert served.not_after.tzinfo is not None
        answers = ChallengeAnswers(engine)
        await answers.publish("tok", "a.test", "tok.x")
        await answers.publish("tok", "a.test", "tok.y")
        assert await answers.lookup("tok") == "tok.y"
        accounts = AcmeAccounts(engine, keyring())
        await accounts.save("https://ca.test/dir", "id1", {"a/regr.json": "{}"})
        await accounts.save("https://ca.test/dir", "id2", {"b/regr.json": "{}"})
        assert await accounts.load("https://ca.test/dir") == ("id2", {"b/regr.json": "{}"})
    finally:
        await engine.dispose()
