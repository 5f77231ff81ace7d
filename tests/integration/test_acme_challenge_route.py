"""The ACME challenge route: answers from the database (what the certifier's hook writes;
every edge reads it), else from ACME_CHALLENGE_DIR. Neither blocks the event loop: a
lookup that hangs (a slow database, a dead shared mount) holds up that challenge only,
while clicks and probes on the same server keep being answered.

The redirector's real HTTP server, in-process on loopback, against real PostgreSQL; the
hung mount is stood in for by the challenge executor's one worker being kept busy, the
slow database by its lookups' semaphore being held.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from demo.net import free_port
from services.redirector.active_domains import DomainDirectory
from services.redirector.clients import ClientAddress
from services.redirector.forwarder import Forwarder
from services.redirector.handlers import CHALLENGE_LOOKUPS, Redirector, build_server
from services.redirector.spool import Spool
from shared.certificates import ChallengeAnswers
from shared.db.engine import create_engine
from shared.links import LinkSigner
from shared.settings import DatabaseSettings, LinkKey

HOST = "click.platform.test"
KEYS = (LinkKey(kid="k1", secret=b"s" * 40),)


@pytest.fixture
async def engine(database: DatabaseSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database, pool_size=1)
    yield engine
    await engine.dispose()


@pytest.fixture
async def served(tmp_path: Path, engine: AsyncEngine
                 ) -> AsyncIterator[tuple[str, threading.Event, Redirector]]:
    """(base URL, the event that lets the stuck challenge read go on, the redirector)."""
    challenges = tmp_path / "challenges"
    challenges.mkdir()
    (challenges / "tok-1").write_bytes(b"tok-1.thumbprint")
    spool = Spool(tmp_path / "spool")
    spool.open()
    reads = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    redirector = Redirector(
        signer=LinkSigner(KEYS), domains=DomainDirectory(HOST), clients=ClientAddress(()),
        spool=spool, forwarder=Forwarder(spool), source="/test", spool_max_bytes=1 << 30,
        challenge_dir=challenges, challenge_reads=reads,
        challenge_answers=ChallengeAnswers(engine))
    runner = web.ServerRunner(build_server(redirector))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", release, redirector
    finally:
        release.set()
        await runner.cleanup()
        reads.shutdown(wait=True)
        spool.close()


async def test_a_hung_challenge_read_stalls_neither_clicks_nor_probes(
        served: tuple[str, threading.Event, Redirector]) -> None:
    base, release, redirector = served
    # The one challenge worker is stuck, as on a mount that stopped answering.
    stuck = asyncio.get_running_loop().run_in_executor(redirector.challenge_reads,
                                                       release.wait, 30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        challenge = await _stalled_challenge_beside_a_click_and_a_probe(http, base, "tok-1")

        release.set()  # the mount answers again
        await stuck
        response = await asyncio.wait_for(challenge, 5)
        assert response.status == 200
        assert await response.read() == b"tok-1.thumbprint"
        response.release()
    assert redirector.spool.appended == 1


async def test_answers_come_from_the_database_first_then_the_directory(
        served: tuple[str, threading.Event, Redirector], engine: AsyncEngine) -> None:
    base, _, _ = served
    answers = ChallengeAnswers(engine)
    await answers.publish("tok-db", "track.customer-a.test", "tok-db.thumbprint")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def get(token: str) -> tuple[int, bytes]:
            async with http.get(f"{base}/.well-known/acme-challenge/{token}") as response:
                return response.status, await response.read()

        assert await get("tok-db") == (200, b"tok-db.thumbprint")
        assert await get("tok-1") == (200, b"tok-1.thumbprint")  # the directory's
        assert (await get("unknown"))[0] == 404
        await answers.withdraw("tok-db")
        assert (await get("tok-db"))[0] == 404


async def test_a_slow_database_stalls_neither_clicks_nor_probes(
        served: tuple[str, threading.Event, Redirector], engine: AsyncEngine) -> None:
    base, _, redirector = served
    await ChallengeAnswers(engine).publish("tok-db", "track.customer-a.test", "tok-db.x")
    # Every lookup slot is taken, as by queries a stalled database does not answer.
    for _ in range(CHALLENGE_LOOKUPS):
        await redirector.challenge_lookups.acquire()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        challenge = await _stalled_challenge_beside_a_click_and_a_probe(http, base, "tok-db")
        for _ in range(CHALLENGE_LOOKUPS):
            redirector.challenge_lookups.release()
        response = await asyncio.wait_for(challenge, 5)
        assert response.status == 200 and await response.read() == b"tok-db.x"
        response.release()


async def _stalled_challenge_beside_a_click_and_a_probe(
        http: aiohttp.ClientSession, base: str, token: str,
) -> asyncio.Task[aiohttp.ClientResponse]:
    """Ask for a challenge whose answer cannot be read yet; while it waits, a click and a
    health probe are answered at once. Returns the challenge, still waiting."""
    headers = {"Host": HOST, "User-Agent": "Mozilla/5.0"}
    link = LinkSigner(KEYS).mint_token(customer_id="c", campaign_id="k", recipient_id="r",
                                       url="https://shop.example/")
    challenge = asyncio.create_task(http.get(
        f"{base}/.well-known/acme-challenge/{token}", headers=headers))
    await asyncio.sleep(0.2)
    assert not challenge.done()
    started = time.monotonic()
    async with http.get(f"{base}/t/{link}", headers=headers, allow_redirects=False) as click:
        assert click.status == 302
    async with http.get(f"{base}/healthz", headers=headers) as probe:
        assert probe.status == 200
    assert time.monotonic() - started < 1.0
    assert not challenge.done()  # still waiting for its answer
    return challenge
