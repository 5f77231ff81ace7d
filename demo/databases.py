"""A fresh, migrated PostgreSQL database per test (or benchmark run), cloned from a template
migrated once."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.engine import make_url

from demo.scratch import asyncpg_dsn, fetch, settings_for
from shared.db.migrate import upgrade
from shared.settings import DatabaseSettings

__all__ = ["DatabaseFactory", "execute", "fetch", "settings_for"]


class DatabaseFactory:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template = f"td_template_{uuid.uuid4().hex[:10]}"
        self._created: list[str] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(self.admin_url))

    async def prepare(self) -> None:
        connection = await self._admin()
        try:
            await connection.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await connection.close()
        await upgrade(settings_for(self.admin_url, self.template))

    async def create(self) -> DatabaseSettings:
        name = f"td_test_{uuid.uuid4().hex[:12]}"
        connection = await self._admin()
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await connection.close()
        self._created.append(name)
        return settings_for(self.admin_url, name)

    async def drop(self, settings: DatabaseSettings) -> None:
        name = make_url(settings.url).database
        connection = await self._admin()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    async def close(self) -> None:
        connection = await self._admin()
        try:
            for name in [*self._created, self.template]:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


async def execute(settings: DatabaseSettings, query: str, *args: object) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(settings.url))
    try:
        return await connection.execute(query, *args)
    finally:
        await connection.close()
