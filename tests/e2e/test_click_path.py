"""End to end: real redirector and logger processes, real HTTP, real broker and database."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

from demo.databases import execute, fetch
from demo.net import free_port
from demo.processes import ServiceProcess
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env

# The platform's old host during a move (TRACKING_HOST_ALIASES): it serves every link too.
OLD_HOST = "click.old-platform.test"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def get(url: str, host: str, method: str = "GET",
        user_agent: str = "Mozilla/5.0 (X11; Linux x86_64)") -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method=method,
                                     headers={"Host": host, "User-Agent": user_agent})
    try:
        with _opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def wait_rows(database: DatabaseSettings, expected: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        count = asyncio.run(fetch(database, "SELECT count(*) AS n FROM tracking_logs"))[0]["n"]
        if count >= expected:
            return count
        time.sleep(0.1)
    return count


def test_clicks_on_minted_links_redirect_and_become_rows(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
        link_keys: tuple[LinkKey, ...]) -> None:
    asyncio.run(execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                        "verified) VALUES ('track.customer-a.test', 'cust-a', 'active', true)"))
    port = free_port()
    env = service_env(broker, database, tmp_path, REDIRECTOR_BIND=f"127.0.0.1:{port}",
                      TRACKING_HOST_ALIASES=OLD_HOST)
    base = f"http://127.0.0.1:{port}"
    signer = LinkSigner(link_keys)
    destinations = [
        "https://shop.example/ü/päth?q=a%20b&x=1#frag",
        "http://example.org/plain",
        "https://example.com/?utm_source=mail&empty=&a=%2F%3F",
    ]
    with ServiceProcess("logger", env, tmp_path) as logger, \
            ServiceProcess("redirector", env, tmp_path) as redirector:
        redirector.wait_http(f"{base}/healthz")
        logger.wait_for_log("logger.started")
        served = 0
        for number, destination in enumerate(destinations):
            token = signer.mint_token(customer_id="cust-a", campaign_id="camp-1",
                                      recipient_id=f"rcpt-{number}", url=destination)
            for host in (TRACKING_HOST, OLD_HOST, "track.customer-a.test"):
                status, headers = get(f"{base}/t/{token}", host)
                assert status == 302
                assert headers["Location"].encode("latin-1").decode("utf-8") == destination
                assert headers["Cache-Control"] == "no-store"
                assert headers["Referrer-Policy"] == "no-referrer"
                served += 1
        head_token = signer.mint_token(customer_id="cust-a", campaign_id="camp-1",
                                       recipient_id="scanner", url=destinations[1])
        status, _ = get(f"{base}/t/{head_token}", TRACKING_HOST, method="HEAD")
        assert status == 302
        served += 1
        # Customer B's link on customer A's domain: refused, and no click is recorded.
        foreign = signer.mint_token(customer_id="cust-b", campaign_id="camp-9",
                                    recipient_id="r", url=destinations[1])
        status, headers = get(f"{base}/t/{foreign}", "track.customer-a.test")
        assert status == 404 and "Location" not in headers
        assert get(f"{base}/t/{foreign}x", TRACKING_HOST)[0] == 404
        # A host that is neither the platform's (under any name) nor a tracking domain.
        assert get(f"{base}/t/{head_token}", "click.unknown.test")[0] == 404

        assert wait_rows(database, served) == served
        time.sleep(0.5)  # nothing more may arrive: the refused clicks made no rows
        rows = asyncio.run(fetch(database, "SELECT * FROM tracking_logs ORDER BY id"))
        assert len(rows) == served
        assert len({row["event_id"] for row in rows}) == served
        assert {row["url"] for row in rows} == set(destinations)
        assert {row["domain"] for row in rows} == {TRACKING_HOST, OLD_HOST,
                                                   "track.customer-a.test"}
        bots = [row for row in rows if row["bot"]]
        assert [row["bot_reason"] for row in bots] == ["head-request"]
        assert bots[0]["method"] == "HEAD" and bots[0]["recipient_id"] == "scanner"
        assert all(row["ip"] == "127.0.0.1" for row in rows)
        assert redirector.terminate() == 0
        assert logger.terminate() == 0
