"""Building the async engine from settings (never at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import DatabaseSettings


def create_engine(settings: DatabaseSettings, *, pool_size: int = 5,
                  pre_ping: bool = True, command_timeout: float | None = 60) -> AsyncEngine:
    """`pre_ping=False` skips the round trip that tests a pooled connection at every
    checkout; a caller that turns it off must invalidate a connection that failed.
    `command_timeout` bounds each PostgreSQL statement (None: migrations, which copy
    whole tables)."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the redirector read domains while the logger writes clicks.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=pre_ping,
        connect_args={"timeout": 10, "command_timeout": command_timeout},
    )


def is_postgresql(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"
