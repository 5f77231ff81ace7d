"""The migrations build exactly the schema the models describe, on PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shared.db.click_partitions import is_partition
from shared.db.engine import create_engine
from shared.db.migrate import check_at_head, downgrade, upgrade
from shared.db.models import Base
from shared.settings import DatabaseSettings


def _not_a_partition(name: str | None, type_: str, _parents: object) -> bool:
    # The monthly partitions are made by the logger, not described by the models.
    return not (type_ == "table" and name is not None and is_partition(name))


async def _drift(settings: DatabaseSettings) -> list[object]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_name": _not_a_partition}),
                Base.metadata))
    finally:
        await engine.dispose()


async def test_postgresql_schema_matches_models(database: DatabaseSettings) -> None:
    assert await _drift(database) == []


async def test_sqlite_schema_matches_models_and_migrations_round_trip(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    await upgrade(settings)
    engine = create_engine(settings)
    try:
        await check_at_head(engine)
    finally:
        await engine.dispose()
    assert await _drift(settings) == []
    await downgrade(settings, "base")
    await upgrade(settings)
    assert await _drift(settings) == []
