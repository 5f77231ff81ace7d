"""The lookup engine and its dnspython adapter against list zones on the loopback DNS
server: every class of answer each list gives, faults, answers changed mid-test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from demo.blocklists import ListZones
from demo.dns import DnsServer
from services.verifier.reputation.blocklists import NXDOMAIN, TIMEOUT, Kind, Status, parse_lists
from services.verifier.reputation.dnspython import DnspythonListResolver
from services.verifier.reputation.engine import ReputationEngine


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as running:
        yield running


@pytest.fixture
def zones(dns: DnsServer) -> ListZones:
    return ListZones(dns)


def make_engine(dns: DnsServer, zones: ListZones, **kwargs: object) -> ReputationEngine:
    resolver = DnspythonListResolver((("127.0.0.1", dns.port),), timeout_s=0.3)
    return ReputationEngine(resolver, parse_lists(zones.setting), retry_delay_s=0.01,
                            **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "listed_as", "name", "categories"), [
    ("dbl", "track.bad.test", "track.bad.test", ("spam",)),
    ("dbl", "track.bad.test", "track.bad.test", ("phishing", "malware")),
    ("dbl", "track.bad.test", "track.bad.test", ("abused-redirector",)),
    ("dbl", "track.bad.test", "track.bad.test", ("botnet-cc",)),
    ("surbl", "bad.test", "track.bad.test", ("ph", "mw")),
    ("surbl", "bad.test", "x.y.bad.test", ("abuse", "cr")),
    ("uribl", "bad.co.uk", "track.bad.co.uk", ("black",)),
    ("uribl", "bad.co.uk", "bad.co.uk", ("grey", "red")),
])
async def test_listings_decode_with_each_category(
        dns: DnsServer, zones: ListZones, kind: str, listed_as: str, name: str,
        categories: tuple[str, ...]) -> None:
    zones.list(kind, listed_as, *categories)  # type: ignore[arg-type]
    engine = make_engine(dns, zones)
    blocklist = next(b for b in engine.lists if b.kind == kind)
    lookup = await engine.lookup(blocklist, name)
    assert lookup.status == Status.LISTED
    assert set(lookup.verdict.categories) == set(categories)
    assert lookup.query_name == zones.qname(kind, listed_as)  # type: ignore[arg-type]
    assert all(address.startswith("127.") for address in lookup.verdict.raw)


@pytest.mark.parametrize(("kind", "address"), [
    ("dbl", "127.255.255.254"), ("dbl", "127.255.255.252"), ("dbl", "127.255.255.255"),
    ("dbl", "127.0.1.255"), ("surbl", "127.0.0.1"), ("uribl", "127.0.0.1"),
])
async def test_refusals_are_never_listings_and_fail_the_controls(
        dns: DnsServer, zones: ListZones, kind: str, address: str) -> None:
    zones.list(kind, "bad.test", "spam" if kind == "dbl" else  # type: ignore[arg-type]
               "ph" if kind == "surbl" else "black")
    zones.refuse(kind, address)  # type: ignore[arg-type]
    engine = make_engine(dns, zones)
    blocklist = next(b for b in engine.lists if b.kind == kind)
    for name in ("bad.test", "clean.test"):
        lookup = await engine.lookup(blocklist, name)
        assert lookup.status == Status.REFUSED
        assert lookup.verdict.raw == (address,)
    controls = await engine.run_controls(blocklist)
    assert not controls.passed
    zones.serve(kind)  # type: ignore[arg-type]
    assert (await engine.run_controls(blocklist)).passed
    assert (await engine.lookup(blocklist, "clean.test")).status == Status.NOT_LISTED


async def test_controls_pass_on_every_list_as_served(dns: DnsServer, zones: ListZones) -> None:
    engine = make_engine(dns, zones)
    for blocklist in engine.lists:
        result = await engine.run_controls(blocklist)
        assert result.passed, result.why
    assert dns.query_count("test.surbl.org.surbl.test") == 1
    assert dns.query_count("invalid.uribl.test") == 1


async def test_a_delisted_control_fails_its_list_only(dns: DnsServer, zones: ListZones) -> None:
    zones.delist("uribl", "test.uribl.com")
    engine = make_engine(dns, zones)
    results = {b.kind: await engine.run_controls(b) for b in engine.lists}
    assert not results[Kind.URIBL].passed
    assert "test.uribl.com answered not_listed" in results[Kind.URIBL].why
    assert results[Kind.DBL].passed and results[Kind.SURBL].passed


async def test_nxdomain_is_not_listed_and_cached_for_the_default_negative_ttl(
        dns: DnsServer, zones: ListZones) -> None:
    engine = make_engine(dns, zones)
    dbl = engine.lists[0]
    assert (await engine.lookup(dbl, "clean.test")).verdict.raw == (NXDOMAIN,)
    assert (await engine.lookup(dbl, "clean.test")).cached
    assert dns.query_count("clean.test.dbl.test") == 1


async def test_servfail_and_timeouts_are_retried_and_stay_errors(
        dns: DnsServer, zones: ListZones) -> None:
    engine = make_engine(dns, zones, attempts=2)
    dbl, surbl = engine.lists[0], engine.lists[1]
    zones.fault("dbl", "servfail")
    lookup = await engine.lookup(dbl, "any.test")
    assert lookup.status == Status.ERROR and lookup.verdict.raw == ("SERVFAIL",)
    assert dns.query_count("any.test.dbl.test") == 2
    zones.fault("surbl", "timeout")
    started = time.monotonic()
    lookup = await engine.lookup(surbl, "any.test")
    assert lookup.status == Status.ERROR and lookup.verdict.raw == (TIMEOUT,)
    assert time.monotonic() - started >= 0.6  # two attempts of 0.3 s
    zones.fault("surbl", None)
    assert (await engine.lookup(surbl, "any.test")).status == Status.NOT_LISTED


async def test_answers_changed_during_the_test_are_seen_once_the_ttl_has_passed(
        dns: DnsServer) -> None:
    zones = ListZones(dns, ttl=1)
    engine = make_engine(dns, zones)
    dbl = engine.lists[0]
    zones.list("dbl", "track.c.test", "phishing")
    assert (await engine.lookup(dbl, "track.c.test")).status == Status.LISTED
    zones.delist("dbl", "track.c.test")
    cached = await engine.lookup(dbl, "track.c.test")
    assert (cached.status, cached.cached) == (Status.LISTED, True)
    await asyncio.sleep(1.05)
    # NXDOMAIN without an SOA: cached for the adapter's default negative TTL.
    assert (await engine.lookup(dbl, "track.c.test")).status == Status.NOT_LISTED
    assert dns.query_count("track.c.test.dbl.test") == 2


async def test_a_slow_server_is_waited_for_within_the_timeout() -> None:
    with DnsServer(delay_s=0.05) as dns:
        zones = ListZones(dns)
        zones.list("surbl", "slow.test", "mw")
        engine = make_engine(dns, zones)
        lookup = await engine.lookup(engine.lists[1], "a.slow.test")
        assert lookup.verdict.categories == ("mw",)
