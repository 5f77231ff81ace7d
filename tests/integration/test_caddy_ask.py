"""Caddy's on-demand TLS `ask` endpoint: 200 only for a verified or active tracking domain
(real PostgreSQL, the real HTTP server on loopback)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from demo.databases import execute
from demo.net import free_port
from services.redirector import settings as redirector_settings
from services.redirector.caddy_ask import CaddyAsk
from shared.db.engine import create_engine
from shared.settings import DatabaseSettings


@pytest.fixture
async def ask_url(database: DatabaseSettings) -> AsyncIterator[str]:
    for name, status in (("verified.test", "verified"), ("active.test", "active"),
                         ("pending.test", "pending"), ("lapsed.test", "lapsed"),
                         ("rejected.test", "rejected")):
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                                "verified) VALUES ($1, 'c', $2, $3)", name, status,
                      status in ("verified", "active"))
    engine = create_engine(database, pool_size=1)
    port = free_port()
    try:
        async with CaddyAsk(engine, ("127.0.0.1", port)):
            yield f"http://127.0.0.1:{port}/ask"
    finally:
        await engine.dispose()


async def test_only_verified_or_active_names_may_have_a_certificate(ask_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async def status(domain: str) -> int:
            async with http.get(ask_url, params={"domain": domain}) as response:
                return response.status

        assert await status("verified.test") == 200
        assert await status("ACTIVE.test.") == 200  # as normalised
        for refused in ("pending.test", "lapsed.test", "rejected.test", "unknown.test"):
            assert await status(refused) == 404, refused
        assert await status("not a name") == 400
        async with http.get(ask_url) as response:
            assert response.status == 400


def test_the_endpoint_is_off_unless_bound() -> None:
    base = {"TRACKING_HOST": "click.platform.test", "LINK_KEYS": "k1:" + "s" * 40}
    assert redirector_settings.load(base).caddy_ask_bind is None
    assert redirector_settings.load({**base, "CADDY_ASK_BIND": "127.0.0.1:9180"}) \
        .caddy_ask_bind == ("127.0.0.1", 9180)


async def test_a_taken_address_refuses_to_start_in_one_line(database: DatabaseSettings) -> None:
    """Caddy must be able to ask, or no certificate is ever issued: unlike metrics, an
    address that cannot be had stops the redirector, saying which setting to change."""
    engine = create_engine(database)
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(SystemExit) as refused:
                async with CaddyAsk(engine, ("127.0.0.1", port)):
                    pass
        assert str(refused.value).startswith(
            f"redirector: CADDY_ASK_BIND 127.0.0.1:{port} cannot be used: ")
    finally:
        await engine.dispose()
