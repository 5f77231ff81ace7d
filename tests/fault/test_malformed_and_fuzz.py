"""Garbage in: malformed messages on the click routing key end in the logger's dead-letter
queue (a message's bad elements together, with their reasons) while the valid clicks around them
become rows; garbage HTTP gets a 404-ish answer, never a 5xx, never a 302, never a row.

The tests at the end pin down inputs that pass the event contract (or a signed link)
but cannot be stored: each served or published click must still end as exactly one row
or one dead letter, and must never stall the logger for everybody else.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import pytest
from yarl import URL

from shared.broker import topology as broker_topology
from shared.events import BATCH, STRUCTURED, new_event_id
from shared.links import LinkError, LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST
from tests.fault.harness import (
    BROWSER,
    Services,
    assert_exactly_once,
    click_event,
    click_stream,
    count_rows,
    drain_queue,
    http_status,
    log_lines,
    mint_tokens,
    publish_raw,
    queue_depth,
    row_counts,
    start_logger,
    start_redirector,
    tail,
    wait_rows,
)

DROP = object()
_UNSET = object()
COPIES = 4  # each malformed template is published this many times, with fresh ids


def _data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "customer_id": "cust-fuzz", "campaign_id": "camp-fuzz", "recipient_id": "bad",
        "domain": TRACKING_HOST, "url": "https://shop.example/x", "ip": "127.0.0.1",
        "user_agent": BROWSER, "method": "GET", "bot": False, "bot_reason": None,
    }
    for key, value in changes.items():
        if value is DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


def _envelope(data: Any = _UNSET, **changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "specversion": "1.0", "id": new_event_id(), "source": "/fault-tests/fuzz",
        "type": "click.tracked", "time": "2026-11-26T10:00:00Z",
        "datacontenttype": "application/json",
        "dataschema": "urn:tracking-domains:click.tracked:1",
        "data": _data() if data is _UNSET else data,
    }
    envelope.update(changes)
    envelope = {key: value for key, value in envelope.items() if value is not DROP}
    return json.dumps(envelope, separators=(",", ":")).encode()


def _batch(elements: list[bytes]) -> bytes:
    return b"[" + b",".join(elements) + b"]"


def _message(body: bytes, content_type: str | None) -> aio_pika.Message:
    return aio_pika.Message(body, content_type=content_type, message_id=new_event_id(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def _malformed_templates() -> list[tuple[str, bytes, str, list[bytes]]]:
    """(label, body, content type, the dead letters it must produce: one body each)."""
    S, B = STRUCTURED, BATCH
    single: list[tuple[str, bytes]] = [
        ("not json", b"not json at all"),
        ("truncated json", b'{"specversion":"1.0","id":"x"'),
        ("binary", b"\xff\xfe\x00\x01garbage\x80"),
        ("empty body", b""),
        ("python repr", b"{'specversion': '1.0'}"),
        ("number", b"123"),
        ("null", b"null"),
        ("string", b'"a string"'),
        ("array in structured mode", b"[1,2]"),
        ("no specversion", _envelope(specversion=DROP)),
        ("specversion 0.3", _envelope(specversion="0.3")),
        ("specversion number", _envelope(specversion=1)),
        ("no id", _envelope(id=DROP)),
        ("empty id", _envelope(id="")),
        ("id too long", _envelope(id="i" * 300)),
        ("no source", _envelope(source=DROP)),
        ("no type", _envelope(type=DROP)),
        ("unknown type", _envelope(type="click.tracked.v9")),
        ("empty type", _envelope(type="")),
        ("no time", _envelope(time=DROP)),
        ("time without offset", _envelope(time="2026-11-26T10:00:00")),
        ("time not a time", _envelope(time="yesterday")),
        ("time a number", _envelope(time=1764151200)),
        ("no data", _envelope(data=DROP)),
        ("data null", _envelope(None)),
        ("data a string", _envelope(data="click")),
        ("data an array", _envelope(data=[])),
        ("newer schema", _envelope(dataschema="urn:tracking-domains:click.tracked:2")),
        ("schema without version", _envelope(
            dataschema="urn:tracking-domains:click.tracked:one")),
        *[(f"data without {field}", _envelope(_data(**{field: DROP})))
          for field in ("customer_id", "campaign_id", "recipient_id", "domain", "url")],
        ("empty customer", _envelope(_data(customer_id=""))),
        ("customer too long", _envelope(_data(customer_id="c" * 257))),
        ("customer a number", _envelope(_data(customer_id=42))),
        ("campaign null", _envelope(_data(campaign_id=None))),
        ("recipient a list", _envelope(_data(recipient_id=["r"]))),
        ("empty url", _envelope(_data(url=""))),
        ("url too long", _envelope(_data(url="https://x.test/" + "u" * 8200))),
        ("domain too long", _envelope(_data(domain="d" * 254))),
        ("ip too long", _envelope(_data(ip="1" * 46))),
        ("user agent too long", _envelope(_data(user_agent="a" * 4097))),
        ("empty method", _envelope(_data(method=""))),
        ("method too long", _envelope(_data(method="PROPFINDX"))),
        ("bot a string", _envelope(_data(bot="yes"))),
        ("bot reason too long", _envelope(_data(bot_reason="b" * 101))),
    ]
    templates = [(label, body, S, [body]) for label, body in single]
    valid_body = _envelope()
    for content_type in ("text/plain", "application/xml", "application/octet-stream",
                         "application/cloudevents+xml"):
        templates.append((f"content type {content_type}", valid_body, content_type,
                          [valid_body]))
    for label, body in (("batch of an object", _envelope()), ("batch of garbage", b"nope"),
                        ("empty batch body", b""), ("batch of a string", b'"x"')):
        templates.append((label, body, B, [body]))
    bad_time = _envelope(time=DROP)
    not_event = b'{"hello":"world"}'
    templates += [
        ("batch of bad elements", _batch([not_event, bad_time, b"1"]), B,
         [_batch([not_event, bad_time, b"1"])]),
        ("nested batch", _batch([_batch([_envelope()])]), B, []),  # filled below
        ("batch of nulls and strings", _batch([b"null", b'"s"', b"{}"]), B,
         [_batch([b"null", b'"s"', b"{}"])]),
    ]
    label, body, content_type, _ = templates[-2]
    templates[-2] = (label, body, content_type, [body[1:-1]])
    return templates


def _huge_templates() -> list[tuple[str, bytes, str, list[bytes]]]:
    huge_agent = _envelope(_data(user_agent="x" * 1_000_000))
    huge_body = b"A" * 2_000_000
    huge_id = _envelope(id="i" * 100_000)
    return [("1 MB user agent", huge_agent, STRUCTURED, [huge_agent]),
            ("2 MB of not json", huge_body, STRUCTURED, [huge_body]),
            ("100 KB id", huge_id, STRUCTURED, [huge_id])]


async def test_malformed_messages_are_dead_lettered_and_valid_clicks_stored(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    messages: list[aio_pika.Message] = []
    expected_dead: Counter[bytes] = Counter()
    valid: list[str] = []

    def add_valid() -> bytes:
        recipient = f"valid-{len(valid)}"
        valid.append(recipient)
        return click_event(recipient)

    plan = [template for _ in range(COPIES) for template in _malformed_templates()]
    plan += _huge_templates()
    for label, body, content_type, dead_bodies in plan:
        messages.append(_message(body, content_type))
        expected_dead.update(dead_bodies)
        messages.append(_message(add_valid(), STRUCTURED))  # interleaved valid click
        if label == "batch of bad elements":  # and a batch mixing good and bad elements
            mixed_bad = [b'{"specversion":"1.0"}', _envelope(_data(url=""))]
            mixed = [add_valid(), mixed_bad[0], add_valid(), mixed_bad[1], add_valid()]
            messages.append(_message(_batch(mixed), BATCH))
            expected_dead.update([_batch(mixed_bad)])
    malformed_count = len(plan) + COPIES
    assert malformed_count >= 200, malformed_count

    logger = await start_logger(services)
    started = time.monotonic()
    await publish_raw(broker, messages)

    dead_queue = broker_topology.Topology(broker.exchange).dead_queue("logger")
    total_dead = sum(expected_dead.values())
    deadline = time.monotonic() + 30
    rows = dead = 0
    while time.monotonic() < deadline:
        rows = await count_rows(database)
        dead = (await queue_depth(broker, "logger.dead"))[0]
        if rows >= len(valid) and dead >= total_dead:
            break
        await asyncio.sleep(0.2)
    print(f"{malformed_count} malformed messages ({total_dead} dead letters), {len(valid)} "
          f"valid clicks: {rows} rows and {dead} dead letters in "
          f"{time.monotonic() - started:.1f}s")
    await asyncio.sleep(0.5)

    counts = await row_counts(database)
    assert_exactly_once(counts, valid)
    assert counts.rows == len(valid)

    letters = await drain_queue(broker, dead_queue, limit=total_dead + 50)
    assert len(letters) == total_dead, f"{len(letters)} dead letters, expected {total_dead}"
    assert Counter(letter.body for letter in letters) == expected_dead
    for letter in letters:
        headers = letter.headers or {}
        assert headers.get("x-dead-reason") == "malformed", headers
        assert headers.get("x-dead-error"), headers
        assert headers.get("x-original-routing-key") == "click.tracked", headers
    assert (await queue_depth(broker, "logger"))[0] == 0
    assert logger.process is not None and logger.process.poll() is None, tail(logger)
    assert logger.terminate() == 0


# --- the redirector against garbage HTTP ------------------------------------------------------

def _sign(key: LinkKey, payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = f"v1.{key.kid}.{b64(payload)}"
    return f"{signed}.{b64(hmac.digest(key.secret, signed.encode(), 'sha256'))}"


def _fuzz_requests(signer: LinkSigner, key: LinkKey,
                   rng: random.Random) -> list[tuple[str, str, str]]:
    """(method, raw path, Host header) triples that must never be served a 302."""
    real = signer.mint_token(customer_id="cust-fuzz", campaign_id="camp", recipient_id="r",
                             url="https://shop.example/real")
    other = signer.mint_token(customer_id="cust-other", campaign_id="camp", recipient_id="r",
                              url="https://shop.example/other")
    version, kid, payload, signature = real.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    tokens = [
        f"{version}.{kid}.{payload}.{flipped}",
        f"{version}.{kid}.{other.split('.')[2]}.{signature}",  # swapped payload
        f"{version}.{kid}.{payload}",
        f"{version}.{kid}.{payload}.",
        f"{version}.old.{payload}.{signature}",  # another key's id
        f"{version}.nokey.{payload}.{signature}",
        f"v2.{kid}.{payload}.{signature}",
        f"{real}.extra",
        real[:-1],
        real[:len(real) // 2],
        real.upper(),
        f"{version}.{kid}.!!!!.@@@@",
        f"{version}.{kid}.{payload}.%%%%",
        f"{version}.{kid}.{payload}.{signature}====",
        f"{version}.{kid}.{payload}.é{signature}",
        f"{version}.{kid}.{'A' * 8000}.{signature}",
        "v1." * 2000,
        _sign(key, b"not json"),
        _sign(key, b'{"c":"cust-fuzz"}'),
        _sign(key, b'{"c":"cust-fuzz","k":"k","r":"r","u":"javascript:alert(1)"}'),
        _sign(key, b'{"c":"cust-fuzz","k":"k","r":"r","u":"https://x.test/\\r\\nSet-Cookie: a=b"}'),
        _sign(key, b'{"c":"cust-fuzz","k":"k","r":"r","u":"//evil.test/"}'),
        _sign(key, b'{"c":1,"k":"k","r":"r","u":"https://x.test/"}'),
        _sign(key, b"\xff\xfe"),
    ]
    requests: list[tuple[str, str, str]] = []
    for token in tokens:
        requests.append(("GET", "/t/" + quote(token, safe=".-_~"), TRACKING_HOST))
    for _ in range(150):
        garbage = rng.randbytes(rng.randint(1, 300))
        requests.append(("GET", "/t/" + quote(garbage, safe=""), TRACKING_HOST))
    for _ in range(80):
        garbage = rng.randbytes(rng.randint(1, 200))
        requests.append((rng.choice(["GET", "HEAD"]), "/" + quote(garbage, safe="/"),
                         TRACKING_HOST))
    for size in (1000, 4000, 7000, 8000, 8150):
        requests.append(("GET", "/t/" + "A" * size, TRACKING_HOST))
        requests.append(("GET", "/" + "x/" * (size // 2), TRACKING_HOST))
    for path in ("/", "/t", "/t/", "/t//", "/t/%00", "/t/%2e%2e/%2e%2e/etc/passwd",
                 "/../../etc/passwd", "/t/..%2f..%2f", "/healthz/../t/x", "/t/x?token=" + real,
                 "/T/" + real, "/t/" + real + "/extra", "//t/" + real, "/t/" + real + "%00",
                 "/t/" + real + "%0d%0aX-Injected:%201"):
        requests.append(("GET", path, TRACKING_HOST))
    # A genuine token on hosts that do not serve it.
    for host in ("evil.test", "click.platform.test.evil.test", "xclick.platform.test",
                 "click-platform.test", "[::1]", "[", "::::", "127.0.0.1", "0",
                 "click.platform.test:99999:1", "é.test", "a" * 300, "%63lick.platform.test"):
        requests.append(("GET", f"/t/{real}", host))
    # Odd methods on a genuine token and elsewhere.
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND", "BREW"):
        requests.append((method, f"/t/{real}", TRACKING_HOST))
        requests.append((method, "/healthz", TRACKING_HOST))
    return requests


async def _raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()


async def test_fuzzed_requests_never_5xx_never_redirect_never_make_rows(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner, link_keys: tuple[LinkKey, ...], tmp_path: Path) -> None:
    logger = await start_logger(services)
    redirector, base = await start_redirector(services)
    port = int(base.rsplit(":", 1)[1])
    requests = _fuzz_requests(signer, link_keys[0], random.Random(20261126))
    assert len(requests) >= 300

    answers: list[tuple[str, str, str, int | None, str | None]] = []
    slots = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(method: str, path: str, host: str) -> None:
            async with slots:
                try:
                    async with session.request(
                            method, URL(base + path, encoded=True),
                            headers={"Host": host, "User-Agent": BROWSER},
                            allow_redirects=False) as response:
                        await response.read()
                        answers.append((method, path[:80], host[:40], response.status,
                                        response.headers.get("Location")))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers.append((method, path[:80], host[:40], None, repr(exc)))

        await asyncio.gather(*(one(*request) for request in requests))

    raw_requests = [
        b"GET /t/\x00\x01\x02 HTTP/1.1\r\nHost: click.platform.test\r\n\r\n",
        b"GET /t/x HTTP/1.1\r\nHost: click.platform.test\r\nX-Bad: \x00\r\n\r\n",
        b"GET /t/x HTTP/9.9\r\nHost: click.platform.test\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n",  # TLS hello
        b"GET /t/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /t/x HTTP/1.1\r\nHost: click.platform.test\r\nContent-Length: -1\r\n\r\n",
        b"GET /t/x HTTP/1.1\r\nHost: click.platform.test\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n\r\n",
        b"GET /t/x HTTP/1.1\r\n" + b"X-Long: " + b"h" * 20000 + b"\r\n\r\n",
        b"GET /t/x HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        b"GET /t/x HTTP/1.0\r\n\r\n",
    ]
    for raw in raw_requests:
        status_line = await _raw_http(port, raw)
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        answers.append(("RAW", repr(raw[:40]), "", status, None))

    server_errors = [a for a in answers if a[3] is not None and a[3] >= 500]
    redirects = [a for a in answers if a[3] in (301, 302, 303, 307, 308) or a[4]]
    unanswered = [a for a in answers if a[3] is None and a[0] != "RAW"]
    print(f"{len(answers)} fuzzed requests: {Counter(a[3] for a in answers)}; not 404: "
          f"{[(a[0], a[1][:30], a[3]) for a in answers if a[3] != 404]}")
    assert not server_errors, server_errors[:10]
    assert not redirects, redirects[:10]
    assert not unanswered, unanswered[:10]
    # GET and HEAD of anything but a servable link: the 404 page (docs/links.md).
    not_404 = [a for a in answers if a[0] in ("GET", "HEAD") and a[3] != 404]
    assert not not_404, not_404[:10]
    assert "Traceback" not in redirector.log_text()

    assert redirector.process is not None and redirector.process.poll() is None
    assert await http_status(f"{base}/healthz") == 200
    # One genuine click after the fuzz: it must be the only row, and the only spooled line.
    sentinel = await click_stream(base, mint_tokens(signer, 1, "sentinel"), rate=10)
    assert sentinel.statuses() == {302: 1}
    counts = await wait_rows(database, 1, timeout_s=15)
    assert_exactly_once(counts, sentinel.served)
    spooled = sum(path.read_bytes().count(b"\n") for path in (tmp_path / "spool").rglob("*.spool"))
    assert spooled <= 1, f"{spooled} clicks spooled for one genuine click"
    assert redirector.terminate() == 0
    assert logger.terminate() == 0


# --- inputs that pass the contract but cannot be stored ---------------------------------------

async def _logger_progress(database: DatabaseSettings, expected: int,
                           timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    rows = 0
    while time.monotonic() < deadline:
        rows = await count_rows(database)
        if rows >= expected:
            break
        await asyncio.sleep(0.2)
    return rows


@pytest.mark.parametrize("poison", [
    pytest.param({"data": {"user_agent": "Mozilla\u0000/5.0"}}, id="nul-in-user-agent"),
    pytest.param({"time": "0001-01-01T00:30:00+01:00"}, id="time-before-year-1-in-utc"),
    pytest.param({"time": "9999-12-31T23:30:00-01:00"}, id="time-after-year-9999-in-utc"),
])
async def test_a_click_postgresql_refuses_does_not_stall_the_logger(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        poison: dict[str, Any]) -> None:
    """One message that decodes fine but that PostgreSQL (or asyncpg) cannot take must be
    dead-lettered (or stored), not retried for ever with every other click held behind it."""
    logger = await start_logger(services)
    bad = _envelope(_data(**poison.get("data", {}), recipient_id="poison"),
                    **{k: v for k, v in poison.items() if k != "data"})
    before = [f"before-{n}" for n in range(20)]
    after = [f"after-{n}" for n in range(200)]
    await publish_raw(broker, [_message(click_event(r), STRUCTURED) for r in before])
    assert await _logger_progress(database, len(before), 15) == len(before)
    await publish_raw(broker, [_message(bad, STRUCTURED)]
                      + [_message(click_event(r), STRUCTURED) for r in after])

    rows = await _logger_progress(database, len(before) + len(after), 6)
    dead = (await queue_depth(broker, "logger.dead"))[0]
    failures = log_lines(logger, '"clicks.write_failed"')
    print(f"rows {rows} of {len(before) + len(after)}, dead letters {dead}, "
          f"write failures logged {len(failures)}; first: {failures[:1]}")
    assert logger.process is not None and logger.process.poll() is None
    counts = await row_counts(database)
    stored_poison = counts.recipients.get("poison", 0)
    assert stored_poison + dead == 1, (
        f"the unstorable click is neither a row nor a dead letter ({len(failures)} write "
        f"failures logged, e.g. {failures[-1:]})")
    assert_exactly_once(counts, before + after, ["poison"])


@pytest.mark.parametrize("ids", [
    pytest.param({"recipient_id": "rcpt\u0000x"}, id="nul-in-recipient-id"),
    pytest.param({"customer_id": ""}, id="empty-customer-id"),
    pytest.param({"recipient_id": "r" * 300}, id="recipient-id-over-256"),
])
async def test_every_302_for_a_validly_signed_link_becomes_a_row(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner, link_keys: tuple[LinkKey, ...], ids: dict[str, str]) -> None:
    """The redirector verifies a link and answers 302: the logger must then accept the
    click. Ids the event contract refuses must be refused by the redirector too (404),
    never served and then lost or stalled."""
    logger = await start_logger(services)
    redirector, base = await start_redirector(services)
    await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)
    fields = {"c": ids.get("customer_id", "cust-odd"), "k": "camp",
              "r": ids.get("recipient_id", "odd"), "u": "https://shop.example/odd"}
    try:  # the official minting API, if it accepts these ids
        token = signer.mint_token(customer_id=fields["c"], campaign_id=fields["k"],
                                  recipient_id=fields["r"], url=fields["u"])
    except LinkError:  # else another implementation of docs/links.md, or an old minter
        token = _sign(link_keys[0], json.dumps(fields).encode())

    odd_status = await http_status(f"{base}/t/{token}")
    normal = await click_stream(base, mint_tokens(signer, 50, "normal"), rate=200)
    assert normal.statuses() == {302: 50}
    expected = 50 + (1 if odd_status == 302 else 0)
    rows = await _logger_progress(database, expected, 6)
    counts = await row_counts(database)
    dead = [str((m.headers or {}).get("x-dead-error"))[:200] for m in await drain_queue(
        broker, broker_topology.Topology(broker.exchange).dead_queue("logger"))]
    print(f"odd link answered {odd_status}; rows {rows} of {expected}; dead letters {dead}; "
          f"write failures {len(log_lines(logger, 'clicks.write_failed'))}")
    assert odd_status in (302, 404)
    assert counts.rows == expected, (
        f"the odd link was answered {odd_status} but {counts.rows} of {expected} clicks are "
        f"rows; dead letters: {dead}")
    assert_exactly_once(counts, normal.served | ({fields["r"]} if odd_status == 302 else set()))


async def test_an_event_of_another_type_on_the_click_key_is_dead_lettered_not_dropped(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    """The routing key is the event's type (shared/events.py). A domain.created event sent
    with key click.tracked is not a click: the logger must not ack it away unseen."""
    logger = await start_logger(services)
    stray = _envelope({"domain": "shop.example", "customer_id": "cust"},
                      type="domain.created",
                      dataschema="urn:tracking-domains:domain.created:1")
    await publish_raw(broker, [_message(stray, STRUCTURED),
                               _message(click_event("after-stray"), STRUCTURED)])
    assert await _logger_progress(database, 1, 15) == 1
    await asyncio.sleep(0.5)
    dead = (await queue_depth(broker, "logger.dead"))[0]
    handled = [line for line in log_lines(logger, '"message.handled"') if '"events": 1' in line]
    assert dead == 1, (f"the stray event is neither stored nor dead-lettered; logger said: "
                       f"{handled[:1]}")


@pytest.mark.parametrize("agent", [
    pytest.param("Mozilla/5.0 (literal \\u0000 in the header text)", id="user-agent"),
])
async def test_text_that_merely_spells_backslash_u0000_is_stored_not_refused(
        broker: BrokerSettings, database: DatabaseSettings, services: Services,
        signer: LinkSigner, agent: str) -> None:
    """A User-Agent with the six characters `\\u0000` (no NUL in it) is an ordinary click:
    served 302, it must become a row, not a dead letter."""
    logger = await start_logger(services)
    redirector, base = await start_redirector(services)
    await asyncio.to_thread(redirector.wait_for_log, "broker.connected", 20.0)
    token = signer.mint_token(customer_id="cust-odd", campaign_id="camp", recipient_id="bs",
                              url="https://shop.example/odd")
    async with aiohttp.ClientSession() as session, session.get(
            f"{base}/t/{token}", allow_redirects=False,
            headers={"Host": TRACKING_HOST, "User-Agent": agent}) as response:
        status = response.status
    assert status == 302
    rows = await _logger_progress(database, 1, 6)
    dead = await drain_queue(broker, broker_topology.Topology(broker.exchange)
                             .dead_queue("logger"))
    reasons = [(m.headers or {}).get("x-dead-error") for m in dead]
    assert rows == 1, f"the click answered 302 is not a row; dead letters: {reasons}"
    stored = await row_counts(database)
    assert_exactly_once(stored, {"bs"})
    assert logger.process is not None and logger.process.poll() is None


async def test_a_batch_of_many_malformed_elements_is_one_dead_letter_even_across_a_sigterm(
        broker: BrokerSettings, database: DatabaseSettings, services: Services) -> None:
    """Thousands of bad elements in one batched message are parked as one dead letter
    (their count and first reasons in its headers), in bounded time. A SIGTERM while the
    message is in hand (its good clicks waiting for their commit) lets the logger finish
    it: nothing is dead-lettered again after a restart, and every good click is one row.
    (tests/integration/test_consumer.py covers a stop that gives up before the commit.)"""
    bad = [json.dumps({"hello": number}).encode() if number % 2 else
           _envelope(time=DROP) for number in range(3000)]
    good = [f"good-{number}" for number in range(20)]
    elements = list(bad)
    for number, recipient in enumerate(good):
        elements.insert(number * 150, click_event(recipient))
    # Commits wait 3 s, so the message is still in hand when the SIGTERM comes.
    logger = await start_logger(services, LOGGER_FLUSH_MS="3000")
    published = time.monotonic()
    await publish_raw(broker, [_message(_batch(elements), BATCH)])
    deadline = published + 20
    while time.monotonic() < deadline:
        if (await queue_depth(broker, "logger"))[0] == 0:  # delivered, not yet acked
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert (await count_rows(database)) == 0, "the SIGTERM came too late to be in the middle"
    assert logger.terminate() == 0, tail(logger)
    handled = [json.loads(line) for line in log_lines(logger, '"message.handled"')]
    print(f"{len(bad)} malformed elements and {len(good)} clicks in one message: "
          f"{handled[0]['duration_ms'] if handled else '?'} ms, "
          f"{len(log_lines(logger, 'event.malformed'))} event.malformed line(s)")
    assert [line["malformed"] for line in handled] == [len(bad)]
    assert handled[0]["duration_ms"] < 10_000
    assert len(log_lines(logger, '"event.malformed"')) == 1

    await start_logger(services)
    await asyncio.sleep(3)
    counts = await row_counts(database)
    assert_exactly_once(counts, good)
    letters = await drain_queue(broker, broker_topology.Topology(broker.exchange)
                                .dead_queue("logger"), limit=len(bad) + 10)
    assert len(letters) == 1, f"{len(letters)} dead letters for one message"
    [letter] = letters
    headers = letter.headers or {}
    assert letter.body == _batch(bad)
    assert letter.content_type == BATCH
    assert headers["x-dead-reason"] == "malformed"
    error = str(headers["x-dead-error"])
    assert error.startswith(f"{len(bad)} malformed elements: #2: "), error  # #1 is good
    assert len(error) <= 1000 and "and 2997 more" in error, error
    assert (await queue_depth(broker, "logger"))[0] == 0
