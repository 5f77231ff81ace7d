"""The challenge hook and the certifier's relay: an answer is in the database before the
hook says yes to certbot, and a database that cannot take it fails the hook (the real
hook script as certbot runs it, the real socket, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from demo.net import free_port
from services.certifier.certbot import HOOK, HOOK_SOCKET_ENV
from services.certifier.challenges import ChallengeRelay
from shared.certificates import ChallengeAnswers
from shared.db.engine import create_engine
from shared.settings import DatabaseSettings


@pytest.fixture
async def engine(database: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database)
    yield engine
    await engine.dispose()


async def hook(relay: ChallengeRelay, action: str, token: str) -> subprocess.CompletedProcess[str]:
    """The hook as certbot runs it: `python -I -S challenge_hook.py auth|cleanup`."""
    env = {HOOK_SOCKET_ENV: str(relay.path), "CERTBOT_TOKEN": token,
           "CERTBOT_VALIDATION": f"{token}.thumbprint", "CERTBOT_DOMAIN": "a.test"}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-I", "-S", str(HOOK), action], env=env,
        capture_output=True, text=True, timeout=30)


async def test_the_answer_is_committed_before_the_hook_returns(engine: AsyncEngine) -> None:
    answers = ChallengeAnswers(engine)
    relay = ChallengeRelay(answers)
    await relay.start()
    try:
        done = await hook(relay, "auth", "tok_1")
        assert done.returncode == 0, done.stderr
        assert await answers.lookup("tok_1") == "tok_1.thumbprint"
        assert (await hook(relay, "cleanup", "tok_1")).returncode == 0
        assert await answers.lookup("tok_1") is None
        assert relay.published == 1
    finally:
        await relay.close()
    assert not relay.path.parent.exists()


async def test_a_database_that_cannot_take_the_answer_fails_the_hook() -> None:
    closed = DatabaseSettings(url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    engine = create_engine(closed)
    relay = ChallengeRelay(ChallengeAnswers(engine))
    await relay.start()
    try:
        done = await hook(relay, "auth", "tok_2")
        assert done.returncode == 1
        assert "the certifier said: 'error:" in done.stderr
    finally:
        await relay.close()
        await engine.dispose()
