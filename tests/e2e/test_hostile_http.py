"""Hostile HTTP against the real redirector process: each input gets a clear answer, loses
no click, and cannot make the redirector write large log lines or stall.

Requests are written byte for byte on a socket where a client library would refuse to
send them (bytes that are not UTF-8, repeated headers, malformed requests).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from demo.databases import fetch
from demo.net import free_port
from demo.processes import ServiceProcess
from shared.links import MAX_TOKEN_LENGTH, LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env

TRACKCTL = Path(sys.executable).with_name("trackctl")


class Edge:
    """A redirector (and a logger) as real processes, and raw HTTP to the redirector."""

    def __init__(self, broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
                 **extra: str) -> None:
        self.port = free_port()
        self.database = database
        self.env = service_env(broker, database, tmp_path,
                               REDIRECTOR_BIND=f"127.0.0.1:{self.port}", **extra)
        self.redirector = ServiceProcess("redirector", self.env, tmp_path)
        self.logger = ServiceProcess("logger", self.env, tmp_path)

    def start(self, *, logger: bool = True) -> Edge:
        self.redirector.start()
        if logger:
            self.logger.start()
            self.logger.wait_for_log("logger.started")
        self.redirector.wait_http(f"http://127.0.0.1:{self.port}/healthz")
        self.redirector.wait_for_log("broker.connected")  # the last line of its start
        return self

    def close(self) -> None:
        for process in (self.logger, self.redirector):
            if process.process is not None and process.process.poll() is None:
                process.kill()

    def raw(self, request: bytes, timeout_s: float = 5.0) -> bytes:
        """Send `request` as is; the answer's status line (b'' if none came in time)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
            sock.sendall(request)
            answer = b""
            try:
                while b"\r\n" not in answer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            except TimeoutError:
                pass
            return answer.split(b"\r\n", 1)[0]

    def get(self, path: str, *headers: bytes, timeout_s: float = 5.0) -> bytes:
        lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {TRACKING_HOST}".encode(),
                 *headers, b"Connection: close"]
        return self.raw(b"\r\n".join(lines) + b"\r\n\r\n", timeout_s)

    def rows(self, expected: int, timeout_s: float = 20.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = [dict(row) for row in asyncio.run(fetch(
                self.database, "SELECT recipient_id, ip, user_agent, bot, bot_reason "
                "FROM tracking_logs ORDER BY recipient_id"))]
            if len(rows) >= expected:
                break
            time.sleep(0.1)
        return rows


@pytest.fixture
def edges(broker: BrokerSettings, database: DatabaseSettings,
          tmp_path: Path) -> Iterator[Callable[..., Edge]]:
    """Makes the test's edge (settings as keyword arguments); stops it afterwards."""
    made: list[Edge] = []

    def make(**extra: str) -> Edge:
        made.append(Edge(broker, database, tmp_path, **extra))
        return made[-1]

    try:
        yield make
    finally:
        for edge in made:
            edge.close()
            for process in (edge.redirector, edge.logger):
                if process.process is not None:
                    print(f"----- {process.name} -----\n{process.log_text()[-4000:]}")


def token(signer: LinkSigner, recipient: str, url: str = "https://shop.example/x") -> str:
    return signer.mint_token(customer_id="cust-h", campaign_id="camp-h",
                             recipient_id=recipient, url=url)


# --- headers that are not UTF-8 ---------------------------------------------------------------

def test_headers_that_are_not_utf8_still_make_a_302_and_a_row(
        edges: Callable[..., Edge], link_keys: tuple[LinkKey, ...]) -> None:
    """RFC 9110 allows obs-text (any byte from 0x80) in User-Agent, and proxies forward
    anything in X-Forwarded-For: the click is served and stored, each byte that is not
    UTF-8 written as `\\xNN` (docs/events.md)."""
    signer = LinkSigner(link_keys)
    edge = edges(TRUSTED_PROXIES="127.0.0.1").start()
    latin1 = edge.get(f"/t/{token(signer, 'r1-ua')}",
                      b"User-Agent: Mozilla/5.0 (\xe9t\xe9; caf\xc3\xa9) \xff\xfe")
    forwarded = edge.get(f"/t/{token(signer, 'r2-xff')}", b"User-Agent: Mozilla/5.0",
                         b"X-Forwarded-For: 203.0.113.7\xff, 198.51.100.\xc0")
    assert latin1.startswith(b"HTTP/1.1 302"), latin1
    assert forwarded.startswith(b"HTTP/1.1 302"), forwarded
    rows = edge.rows(2)
    assert [row["recipient_id"] for row in rows] == ["r1-ua", "r2-xff"]
    assert rows[0]["user_agent"] == "Mozilla/5.0 (\\xe9t\\xe9; café) \\xff\\xfe"
    assert rows[1]["ip"] == "127.0.0.1"  # no hop of the header is an address: the peer
    assert "Traceback" not in edge.redirector.log_text()


# --- several X-Forwarded-For lines -------------------------------------------------------------

def test_the_client_address_comes_from_the_right_end_of_every_forwarded_for_line(
        edges: Callable[..., Edge], link_keys: tuple[LinkKey, ...]) -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's (instead of
    appending to it) must not let the client's line choose the address: the lines are
    one list, in order (RFC 9110 §5.3), read from the right."""
    signer = LinkSigner(link_keys)
    edge = edges(TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8").start()
    cases = [
        ("r1", [b"X-Forwarded-For: 198.51.100.66", b"X-Forwarded-For: 203.0.113.9"],
         "203.0.113.9"),
        ("r2", [b"X-Forwarded-For: 198.51.100.66, 192.0.2.1",
                b"X-Forwarded-For: 203.0.113.10, 10.0.0.5"], "203.0.113.10"),
        ("r3", [b"X-Forwarded-For: 198.51.100.66", b"X-Forwarded-For: 10.1.2.3",
                b"X-Forwarded-For: 10.0.0.6"], "198.51.100.66"),  # every proxy trusted
    ]
    for recipient, headers, _ in cases:
        status = edge.get(f"/t/{token(signer, recipient)}", b"User-Agent: Mozilla/5.0",
                          *headers)
        assert status.startswith(b"HTTP/1.1 302"), status
    rows = edge.rows(len(cases))
    assert {row["recipient_id"]: row["ip"] for row in rows} == {
        recipient: address for recipient, _, address in cases}


# --- malformed requests ------------------------------------------------------------------------

BAD_REQUESTS = [
    b"GET /t/x HTTP/1.1\r\nHost: h\r\nX-Bad: \x00" + b"A" * 16000 + b"\r\n\r\n",
    b"GET /t/x HTTP/1.1\r\nX-Long: " + b"B" * 20000 + b"\r\n\r\n",
    b"GET /t/\x01\x02" + b"C" * 8000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /t/x HTTP/1.1\r\nHost: h\r\nBad Header" + b"D" * 15000 + b": v\r\n\r\n",
    b"GET /" + b"E" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /t/x HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"GET /t/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"F" * 9000
    + b"\r\n\r\n",
]


def test_malformed_requests_cost_at_most_one_short_line_each_never_an_error(
        edges: Callable[..., Edge]) -> None:
    edge = edges().start(logger=False)
    before = len(edge.redirector.log_text().splitlines())
    for number, request in enumerate(BAD_REQUESTS * 3):
        status = edge.raw(request)
        assert status.startswith(b"HTTP/1.") and b" 4" in status, (number, status)
    time.sleep(0.5)
    new = edge.redirector.log_text().splitlines()[before:]
    print(f"{len(BAD_REQUESTS) * 3} malformed requests: {len(new)} log lines, longest "
          f"{max(map(len, new), default=0)} characters")
    assert len(new) <= len(BAD_REQUESTS) * 3, "\n".join(line[:300] for line in new)
    for line in new:
        assert len(line) <= 600, line[:1000]
        assert json.loads(line)["level"] not in ("error", "critical"), line[:1000]
        for filler in b"ABCDEF":
            assert chr(filler) * 50 not in line, line[:1000]
    assert edge.get("/healthz").startswith(b"HTTP/1.1 200")


# --- the ACME challenge route ------------------------------------------------------------------

def test_the_challenge_route_serves_regular_files_inside_its_directory_only(
        edges: Callable[..., Edge], tmp_path: Path) -> None:
    challenges = tmp_path / "challenges"
    challenges.mkdir()
    outside = tmp_path / "outside-secret"
    outside.write_bytes(b"not for the internet")
    (challenges / "tok-ok").write_bytes(b"tok-ok.thumbprint")
    (challenges / "tok-link-out").symlink_to(outside)
    (challenges / "tok-link-in").symlink_to(challenges / "tok-ok")
    (challenges / "tok-dir").mkdir()
    os.mkfifo(challenges / "tok-fifo")
    (challenges / "tok-big").write_bytes(b"x" * (1 << 20))
    edge = edges(ACME_CHALLENGE_DIR=str(challenges)).start(logger=False)
    prefix = "/.well-known/acme-challenge/"
    ok = edge.raw(f"GET {prefix}tok-ok HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200"), ok
    for name in ("tok-link-out", "tok-link-in", "tok-dir", "tok-big", "tok-fifo"):
        started = time.monotonic()
        status = edge.get(f"{prefix}{name}", timeout_s=3.0)
        assert status.startswith(b"HTTP/1.1 404"), (name, status)
        assert time.monotonic() - started < 2.0, name
    # Nothing above stalled the event loop: probes and clicks still answer at once.
    started = time.monotonic()
    assert edge.get("/healthz", timeout_s=3.0).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 1.0


# --- the longest token trackctl mints -----------------------------------------------------------

def _destination_for(kid: str, length: int) -> str:
    """A destination whose token is exactly `length` characters long (docs/links.md:
    `v1.<kid>.<base64url of the compact payload JSON>.<43-character signature>`).
    `trackctl link` always sets `t`, the minting time: ten digits until the year 2286."""
    for size in range(5000, 7000):
        url = "https://shop.example/?q=" + "a" * size
        payload = json.dumps({"c": "cust-h", "k": "camp-h", "r": "r-long", "u": url,
                              "t": int(time.time())}, separators=(",", ":")).encode()
        if len(f"v1.{kid}.") + math.ceil(len(payload) * 4 / 3) + 1 + 43 == length:
            return url
    raise AssertionError(f"no destination gives a token of {length} characters")


def _trackctl_link(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRACKCTL), "link", "--customer", "cust-h", "--campaign", "camp-h",
         "--recipient", "r-long", "--scheme", "http", url],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_every_token_trackctl_mints_is_served(edges: Callable[..., Edge],
                                             link_keys: tuple[LinkKey, ...]) -> None:
    """A token of the documented maximum length (docs/links.md) passes the redirector's
    request-line limit and is a 302; one character more is refused by the minter with a
    clear error, never minted to be refused by the server."""
    edge = edges().start()
    kid = link_keys[0].kid
    longest = _trackctl_link(edge.env, _destination_for(kid, MAX_TOKEN_LENGTH))
    assert longest.returncode == 0, longest.stderr
    link = longest.stdout.strip()
    assert len(link.rsplit("/t/", 1)[1]) == MAX_TOKEN_LENGTH
    path = "/t/" + link.rsplit("/t/", 1)[1]
    status = edge.get(path, b"User-Agent: Mozilla/5.0")
    assert status.startswith(b"HTTP/1.1 302"), status
    # A mail gateway may append a query string of its own: still the same click.
    assert edge.get(path + "?utm_source=gateway&x=" + "y" * 200,
                    b"User-Agent: Mozilla/5.0").startswith(b"HTTP/1.1 302")
    assert len(edge.rows(2)) == 2

    too_long = _trackctl_link(edge.env, _destination_for(kid, MAX_TOKEN_LENGTH + 1))
    assert too_long.returncode == 2
    assert too_long.stdout == ""
    assert f"at most {MAX_TOKEN_LENGTH}" in too_long.stderr
