"""The certifier's probe of the ACME directory against a real HTTP server on loopback:
whatever the server answers, the probe returns a reason (or None), never raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from demo.net import free_port
from services.certifier.certbot import Certbot

DEEP = 100_000


@pytest.fixture
async def directory_url() -> AsyncIterator[str]:
    async def directory(request: web.Request) -> web.Response:
        bodies = {"deep": "[" * DEEP + "]" * DEEP,
                  "deep-object": '{"a":' * DEEP + "1" + "}" * DEEP,
                  "fine": '{"newOrder": "http://ca.test/new-order"}'}
        return web.Response(text=bodies[request.match_info["kind"]],
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/{kind}", directory)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["deep", "deep-object"])
async def test_a_directory_nested_absurdly_deep_is_a_reason_not_an_exception(
        directory_url: str, tmp_path: Path, kind: str) -> None:
    certbot = Certbot(command="certbot", base_dir=tmp_path, server=f"{directory_url}/{kind}",
                      email=None, ca_bundle=None, challenge_dir=tmp_path / "challenges")
    reason = await certbot.probe()
    assert reason is not None and reason.startswith(f"{directory_url}/{kind} "), reason


async def test_a_directory_that_answers_is_no_reason(directory_url: str,
                                                     tmp_path: Path) -> None:
    certbot = Certbot(command="certbot", base_dir=tmp_path, server=f"{directory_url}/fine",
                      email=None, ca_bundle=None, challenge_dir=tmp_path / "challenges")
    assert await certbot.probe() is None
