"""Running Alembic migrations from code (`trackctl db upgrade`), against any DATABASE_URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import create_engine
from shared.settings import DatabaseSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Bring the schema to `revision`. Safe to repeat; run it once per deploy. No
    statement timeout: 0007 copies the click table (docs/operations.md#the-click-store)."""
    engine = create_engine(settings, command_timeout=None)
    try:
        await run_with_engine(engine, "upgrade", revision)
    finally:
        await engine.dispose()


async def downgrade(settings: DatabaseSettings, revision: str) -> None:
    engine = create_engine(settings, command_timeout=None)
    try:
        await run_with_engine(engine, "downgrade", revision)
    finally:
        await engine.dispose()


async def current(settings: DatabaseSettings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


async def run_with_engine(engine: AsyncEngine, action: str, revision: str) -> None:
    config = alembic_config()
    async with engine.begin() as connection:
        def _run(sync_connection: Connection) -> None:
            config.attributes["connection"] = sync_connection
            getattr(command, action)(config, revision)

        await connection.run_sync(_run)


async def check_at_head(engine: AsyncEngine) -> None:
    """Raise `SchemaOutOfDate` unless the database is at this release's revision or newer."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    known = {revision.revision for revision in script.walk_revisions()}
    async with engine.connect() as connection:
        found = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())
    # A revision this release does not know is a newer one: migrations run before a
    # rolling upgrade, and old processes must keep running until they are replaced.
    if found is None or (found != head and found in known):
        raise SchemaOutOfDate(
            f"database schema is at revision {found or 'none'}, this release needs {head}: "
            "run `trackctl db upgrade`"
        )


async def open_migrated(settings: DatabaseSettings, *, service: str,
                        pool_size: int = 5, pre_ping: bool = True) -> AsyncEngine:
    """An engine on a database at this release's schema; otherwise the service exits
    with one line: run `trackctl db upgrade`, or why the database cannot be reached."""
    engine = create_engine(settings, pool_size=pool_size, pre_ping=pre_ping)
    try:
        await check_at_head(engine)
    except SchemaOutOfDate as exc:
        await engine.dispose()
        raise SystemExit(f"{service}: {exc}") from None
    except (DBAPIError, OSError, TimeoutError) as exc:
        await engine.dispose()
        raise SystemExit(f"{service}: cannot reach the database at {settings.safe_url}: "
                         f"{_reason(exc)}") from None
    return engine


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy's wrapper adds the SQL and a
    link); never the URL, which only `safe_url` may show."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:300]


class SchemaOutOfDate(Exception):
    """The database has not been migrated for this release."""


def upgrade_sync(settings: DatabaseSettings) -> None:
    asyncio.run(upgrade(settings))
