"""The dnspython adapter against the loopback DNS server, and that server itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from demo.dns import DnsServer
from demo.net import free_port
from shared.verification.dns import DnsResolver, Hop
from shared.verification.judge import DNS_SERVFAIL, DNS_TIMEOUT, CaaRecord, DnsTrouble


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer() as running:
        running.cname("track.a.test", "edge.a.test")
        running.cname("edge.a.test", "click.platform.test")
        running.a("click.platform.test", "192.0.2.10", "192.0.2.11")
        running.aaaa("click.platform.test", "2001:db8::10")
        running.caa("a.test", 'issue "letsencrypt.org"', '128 tbs "x"')
        running.txt("only-txt.a.test", "hello")
        yield running


def resolver(server: DnsServer, timeout_s: float = 0.5) -> DnsResolver:
    return DnsResolver((("127.0.0.1", server.port),), timeout_s=timeout_s)


async def test_cname_hops_nxdomain_and_nodata(server: DnsServer) -> None:
    dns_ = resolver(server)
    assert await dns_.cname("track.a.test") == Hop(True, "edge.a.test")
    assert await dns_.cname("click.platform.test") == Hop(True, None)
    assert await dns_.cname("only-txt.a.test") == Hop(True, None)
    assert await dns_.cname("missing.a.test") == Hop(False)
    # An empty non-terminal exists (names below it do).
    assert await dns_.cname("platform.test") == Hop(True, None)


async def test_addresses_follow_the_chain_and_caa_reads_flags_tag_value(
        server: DnsServer) -> None:
    dns_ = resolver(server)
    assert await dns_.addresses("track.a.test") == {"192.0.2.10", "192.0.2.11",
                                                     "2001:db8::10"}
    assert await dns_.addresses("missing.a.test") == frozenset()
    assert set(await dns_.caa("a.test")) == {CaaRecord(0, "issue", "letsencrypt.org"),
                                             CaaRecord(128, "tbs", "x")}
    assert await dns_.caa("test") == ()
    assert await dns_.caa("missing.a.test") == ()


async def test_servfail_refused_and_timeouts_are_dns_trouble(server: DnsServer) -> None:
    dns_ = resolver(server, timeout_s=0.3)
    server.fault("track.a.test", "servfail")
    with pytest.raises(DnsTrouble) as failed:
        await dns_.cname("track.a.test")
    assert failed.value.code == DNS_SERVFAIL and "SERVFAIL" in failed.value.reason
    server.fault("track.a.test", "refused")
    with pytest.raises(DnsTrouble) as refused:
        await dns_.cname("track.a.test")
    assert refused.value.code == DNS_SERVFAIL and "REFUSED" in refused.value.reason
    # A fault further down the chain fails the address question too.
    server.fault("track.a.test", None)
    server.fault("edge.a.test", "servfail")
    with pytest.raises(DnsTrouble):
        await dns_.addresses("track.a.test")
    server.fault("edge.a.test", None)
    server.fault("track.a.test", "timeout")
    started = time.monotonic()
    with pytest.raises(DnsTrouble) as timed_out:
        await dns_.cname("track.a.test")
    assert timed_out.value.code == DNS_TIMEOUT
    assert time.monotonic() - started < 1.5
    server.delay("track.a.test", 0.1)
    server.fault("track.a.test", None)
    assert await dns_.cname("track.a.test") == Hop(True, "edge.a.test")


async def test_a_dead_first_nameserver_fails_over_to_the_next(server: DnsServer) -> None:
    dead = free_port()
    dns_ = DnsResolver((("127.0.0.1", dead), ("127.0.0.1", server.port)), timeout_s=1.0)
    started = time.monotonic()
    assert await dns_.cname("track.a.test") == Hop(True, "edge.a.test")
    assert time.monotonic() - started < 1.0


async def test_records_change_while_it_runs_and_it_answers_over_tcp(
        server: DnsServer) -> None:
    query = dns.message.make_query("track.a.test", "CNAME")
    response = await dns.asyncquery.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    assert response.answer[0][0].target.to_text() == "edge.a.test."
    server.cname("track.a.test", "click.platform.test")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert response.answer[0][0].target.to_text() == "click.platform.test."
    server.remove("track.a.test")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert server.query_count("track.a.test", "CNAME") == 3
