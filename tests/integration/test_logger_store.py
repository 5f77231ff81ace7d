"""The logger's click stores against real databases, `trackctl db`, and the schema check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from demo.processes import ROOT
from services.logger.database import (
    COLUMNS,
    Applied,
    Classification,
    ClassifyingStore,
    PostgresClickStore,
    Row,
    SqliteClickStore,
    click_store,
)
from shared.db.engine import create_engine
from shared.db.migrate import alembic_config, upgrade
from shared.db.models import TrackingLog
from shared.settings import BrokerSettings, DatabaseSettings

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
BIN = Path(sys.executable).parent
T0 = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def row(event_id: str, **overrides: object) -> Row:
    values: dict[str, object] = {
        "event_id": event_id, "customer_id": "cust-1", "campaign_id": "camp-1",
        "recipient_id": "rcpt-1", "domain": "click.platform.test",
        "url": "https://shop.example/a", "ip": "192.0.2.1", "user_agent": "Mozilla/5.0",
        "method": "GET", "clicked_at": T0, "bot": False, "bot_reason": None,
        "reasons": None,
    }
    values.update(overrides)
    # Row's shape by construction (one value per column of COLUMNS, in order), which a
    # type checker cannot follow from a dict.
    return tuple(values[column] for column in COLUMNS)  # type: ignore[return-value]


def plain_postgres_url(admin_url: str, database: str) -> str:
    """postgresql://... as an operator would write it (no driver in the scheme)."""
    url = make_url(admin_url).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


@dataclass
class Backend:
    name: str
    engine: AsyncEngine
    store: ClassifyingStore

    async def rows(self) -> list[Row]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(*(getattr(TrackingLog, c) for c in COLUMNS)).order_by(TrackingLog.id))
            return [tuple(r) for r in result.all()]

    async def count(self) -> int:
        async with self.engine.connect() as connection:
            return (await connection.execute(text("SELECT count(*) FROM tracking_logs"))
                    ).scalar_one()


def as_utc(value: object) -> datetime:
    """SQLite hands back naive datetimes; the schema's convention there is UTC."""
    assert isinstance(value, datetime), value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def comparable(stored: Row) -> tuple[object, ...]:
    values = list(stored)
    values[COLUMNS.index("clicked_at")] = as_utc(values[COLUMNS.index("clicked_at")])
    return tuple(values)


@pytest.fixture(params=["postgresql", "sqlite"])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    if request.param == "postgresql":
        return request.getfixturevalue("database")
    settings = DatabaseSettings(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    asyncio.run(upgrade(settings))
    return settings


@pytest.fixture
async def backend(db_settings: DatabaseSettings) -> AsyncIterator[Backend]:
    engine = create_engine(db_settings, pool_size=2)
    store = click_store(engine)
    expected = PostgresClickStore if engine.dialect.name == "postgresql" else SqliteClickStore
    assert isinstance(store, expected)
    yield Backend(engine.dialect.name, engine, store)
    await engine.dispose()


async def test_inserts_rows_and_returns_how_many_were_new(backend: Backend) -> None:
    rows = [row(f"evt-{n}", recipient_id=f"r{n}", clicked_at=T0 + timedelta(seconds=n))
            for n in range(3)]
    assert await backend.store.insert(rows) == 3
    assert [comparable(r) for r in await backend.rows()] == rows


async def test_repeated_event_id_later_and_within_a_batch_makes_no_second_row(
        backend: Backend) -> None:
    assert await backend.store.insert([row("a"), row("b")]) == 2
    # A redelivery with different content must not overwrite: the first write wins.
    later = [row("b", url="https://changed.example/"), row("c"), row("c"), row("a")]
    assert await backend.store.insert(later) == 1
    assert await backend.store.insert([row("d"), row("d"), row("d")]) == 1
    assert await backend.store.insert([row("a"), row("d")]) == 0
    stored = await backend.rows()
    assert await backend.count() == 4
    assert sorted(r[0] for r in stored) == ["a", "b", "c", "d"]
    assert {r[0]: r[COLUMNS.index("url")] for r in stored}["b"] == "https://shop.example/a"


async def test_a_connection_the_server_dropped_is_replaced_not_reused(
        database: DatabaseSettings) -> None:
    # The logger's engine does not ping at checkout: the store itself must drop a
    # connection whose write failed, so the retry runs on a fresh one.
    engine = create_engine(database, pool_size=1, pre_ping=False)
    try:
        store = click_store(engine)
        assert await store.insert([row("before")]) == 1
        async with engine.connect() as connection:  # the pool's only connection
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(make_url(database.url).set(
            drivername="postgresql").render_as_string(hide_password=False))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # ConnectionDoesNotExistError or InternalClientError, depending on timing.
        with pytest.raises(Exception):  # noqa: B017
            await store.insert([row("lost-with-the-connection")])
        assert await store.insert([row("after")]) == 1  # a new connection, not the dead one
        async with engine.connect() as connection:
            stored = (await connection.execute(
                text("SELECT event_id FROM tracking_logs ORDER BY id"))).scalars().all()
        assert stored == ["before", "after"]
    finally:
        await engine.dispose()


async def test_unicode_long_urls_and_null_ip_and_user_agent_round_trip_exactly(
        backend: Backend) -> None:
    long_url = "https://shöp.example/ü/päth/日本語/😀?q=a%20b&x=" + "z" * 8000 + "#frag"
    long_agent = "Mözilla/5.0 «bot» 🕷 " + "y" * 4000
    rows = [
        row("unicode", url=long_url, user_agent=long_agent,
            ip="2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        row("nulls", ip=None, user_agent=None, method="HEAD", bot=True,
            bot_reason="head-request"),
        row("x" * 256, customer_id="c" * 256, domain="d" * 63 + "." + "e" * 63 + ".test",
            url="http://e.example/'quote\"\\back\ttab\nnewline"),
    ]
    assert await backend.store.insert(rows) == 3
    stored = [comparable(r) for r in await backend.rows()]
    assert stored == rows
    nulls = stored[1]
    assert nulls[COLUMNS.index("ip")] is None and nulls[COLUMNS.index("user_agent")] is None


async def test_clicked_at_keeps_its_instant_whatever_the_utc_offset(backend: Backend) -> None:
    # CloudEvents `time` may carry any offset; the stored time must be the same instant.
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert await backend.store.insert([row("offset", clicked_at=plus_two)]) == 1
    [stored] = await backend.rows()
    assert as_utc(stored[COLUMNS.index("clicked_at")]) == datetime(2026, 1, 1, 10, 0,
                                                                   tzinfo=UTC)


# --- trackctl db and the logger's schema check --------------------------------------------

@pytest.fixture
def empty_postgres(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty (unmigrated) PostgreSQL database; its plain URL."""
    name = f"td_empty_{uuid.uuid4().hex[:12]}"
    admin = plain_postgres_url(pg_admin_url, make_url(pg_admin_url).database or "postgres")

    async def _run(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(_run(f'CREATE DATABASE "{name}"'))
    yield plain_postgres_url(pg_admin_url, name)
    asyncio.run(_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("empty_postgres")
    return f"sqlite:///{tmp_path}/nested/dir/tracking.db"


def trackctl(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([str(BIN / "trackctl"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)


def test_trackctl_db_upgrade_migrates_to_head_and_is_repeatable(
        empty_database_url: str) -> None:
    current = trackctl("db", "current", database_url=empty_database_url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == "none"

    upgraded = trackctl("db", "upgrade", database_url=empty_database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"is at revision {HEAD}")

    current = trackctl("db", "current", database_url=empty_database_url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == HEAD

    again = trackctl("db", "upgrade", database_url=empty_database_url)
    assert again.returncode == 0, again.stderr
    assert trackctl("db", "current", database_url=empty_database_url).stdout.strip() == HEAD

    async def _usable() -> int:
        from shared.settings import normalise_database_url

        engine = create_engine(DatabaseSettings(normalise_database_url(empty_database_url)))
        try:
            return await click_store(engine).insert([row("after-upgrade")])
        finally:
            await engine.dispose()

    assert asyncio.run(_usable()) == 1


def test_logger_refuses_to_start_on_an_unmigrated_database(
        empty_database_url: str, broker: BrokerSettings, tmp_path: Path) -> None:
    env = {**os.environ, "AMQP_URL": broker.url, "AMQP_EXCHANGE": broker.exchange,
           "DATABASE_URL": empty_database_url, "LOG_LEVEL": "INFO"}
    result = subprocess.run([sys.executable, "-m", "services.logger"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "trackctl db upgrade" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == ""


# --- click.classified: merged into the row, or kept until the row comes --------------------

async def _verdict(backend: Backend, event_id: str) -> tuple[object, ...]:
    async with backend.engine.connect() as connection:
        found = (await connection.execute(
            select(TrackingLog.bot, TrackingLog.bot_reason, TrackingLog.reasons,
                   TrackingLog.reclassified_at.is_not(None))
            .where(TrackingLog.event_id == event_id))).one()
    return tuple(found)


async def test_a_classification_changes_its_row_and_repeats_change_nothing(
        backend: Backend) -> None:
    await backend.store.insert([row("e1", reasons="soon-after-send"), row("e2")])
    burst = Classification("e1", True, "burst,soon-after-send", T0)
    assert await backend.store.apply_classification([burst]) == Applied(1, 0)
    assert await _verdict(backend, "e1") == (True, "burst", "burst,soon-after-send", True)
    assert await _verdict(backend, "e2") == (False, None, None, False)
    # Again, and an older, smaller one after it: the same row (a union, an OR).
    assert await backend.store.apply_classification(
        [burst, Classification("e1", False, "soon-after-send", T0)]) == Applied(1, 0)
    assert await _verdict(backend, "e1") == (True, "burst", "burst,soon-after-send", True)


async def test_a_bot_keeps_its_first_reason_and_gains_the_others(backend: Backend) -> None:
    await backend.store.insert([row("e1", bot=True, bot_reason="user-agent:curl",
                                    reasons="user-agent:curl")])
    await backend.store.apply_classification([Classification(
        "e1", True, "user-agent:curl,near-honeypot", T0)])
    assert await _verdict(backend, "e1") == (
        True, "user-agent:curl", "user-agent:curl,near-honeypot", True)


async def test_a_classification_before_its_click_waits_and_is_applied_later(
        backend: Backend) -> None:
    early = Classification("late-click", True, "near-honeypot", T0)
    assert await backend.store.apply_classification([early, early]) == Applied(0, 1)
    assert await backend.store.apply_classification(
        [Classification("late-click", True, "burst", T0)]) == Applied(0, 1)
    await backend.store.insert([row("late-click")])
    # The sweep (no new classifications) finds the row now.
    assert await backend.store.apply_classification([]) == Applied(1, 0)
    assert await _verdict(backend, "late-click") == (
        True, "burst", "burst,near-honeypot", True)
    assert await backend.store.apply_classification([]) == Applied(0, 0)
