"""The redirector's one dispatcher: which requests are clicks, challenges, probes or 404s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.redirector.active_domains import DomainDirectory
from services.redirector.clients import ClientAddress
from services.redirector.forwarder import Forwarder
from services.redirector.handlers import NOT_FOUND_PAGE, Redirector
from services.redirector.spool import Spool
from shared.links import LinkSigner
from shared.settings import LinkKey

HOST = "click.platform.test"
KEYS = (LinkKey(kid="k1", secret=b"s" * 40),)
DESTINATION = "https://shop.example/a?b=c"


@pytest.fixture
def redirector(tmp_path: Path) -> Iterator[Redirector]:
    spool = Spool(tmp_path / "spool")
    spool.open()
    challenges = tmp_path / "challenges"
    challenges.mkdir()
    (challenges / "tok-1").write_bytes(b"tok-1.thumbprint")
    yield Redirector(signer=LinkSigner(KEYS), domains=DomainDirectory(HOST),
                     clients=ClientAddress(()), spool=spool, forwarder=Forwarder(spool),
                     source="/test", spool_max_bytes=1 << 30, challenge_dir=challenges)
    spool.close()


def get(path: str, method: str = "GET") -> web.Request:
    return make_mocked_request(method, path, headers={"Host": HOST, "User-Agent": "Mozilla/5.0"})


def json_body(response: web.Response) -> Any:
    assert isinstance(response.body, bytes)
    return json.loads(response.body)


def token() -> str:
    return LinkSigner(KEYS).mint_token(customer_id="c", campaign_id="k", recipient_id="r",
                                       url=DESTINATION)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_valid_link_is_a_redirect_and_a_spooled_click(redirector: Redirector,
                                                             method: str) -> None:
    response = await redirector.handle(get(f"/t/{token()}", method))
    assert response.status == 302
    assert response.headers["Location"] == DESTINATION
    assert redirector.spool.appended == 1


@pytest.mark.parametrize("path", [
    "/t/", "/t/garbage", "/t/{token}/extra", "/t", "/", "/x/{token}", "/T/{token}",
    "/.well-known/acme-challenge/", "/.well-known/acme-challenge/../../etc/passwd",
    "/.well-known/acme-challenge/unknown", "/healthz/", "/readyz/x",
])
async def test_anything_else_is_the_404_page_and_spools_nothing(redirector: Redirector,
                                                               path: str) -> None:
    response = await redirector.handle(get(path.format(token=token())))
    assert response.status == 404
    assert response.body == NOT_FOUND_PAGE
    assert "Location" not in response.headers
    assert redirector.spool.appended == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
async def test_other_methods_on_a_valid_link_are_404_not_a_redirect(
        redirector: Redirector, method: str) -> None:
    response = await redirector.handle(get(f"/t/{token()}", method))
    assert response.status == 404
    assert redirector.spool.appended == 0


async def test_challenges_and_probes(redirector: Redirector) -> None:
    challenge = await redirector.handle(get("/.well-known/acme-challenge/tok-1"))
    assert (challenge.status, challenge.body) == (200, b"tok-1.thumbprint")
    health = await redirector.handle(get("/healthz"))
    assert (health.status, json_body(health)) == (200, {"status": "ok"})
    ready = await redirector.handle(get("/readyz"))
    assert ready.status == 503  # no broker attached in a unit test
    assert json_body(ready)["problems"] == ["broker not connected"]


async def test_a_click_the_spool_cannot_take_is_a_503_never_a_302(
        redirector: Redirector, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(line: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(redirector.spool, "append", disk_full)
    response = await redirector.handle(get(f"/t/{token()}"))
    assert response.status == 503
    assert "Location" not in response.headers
    assert response.headers["Retry-After"] == "30"
    assert redirector.metrics.unavailable.value == 1
    ready = await redirector.handle(get("/readyz"))
    assert ready.status == 503
    assert any("cannot be written" in p for p in json_body(ready)["problems"])
    monkeypatch.undo()
    again = await redirector.handle(get(f"/t/{token()}"))
    assert again.status == 302  # the disk has room again: clicks are redirected at once
