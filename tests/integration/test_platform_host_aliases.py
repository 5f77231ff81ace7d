"""TRACKING_HOST_ALIASES while the platform host moves, against a real DNS server on loopback
that the test controls: the verifier's checker, and `trackctl doctor`'s DNS check. The
platform moves from click.old-platform.test (the alias) to click.platform.test. The
verifier's handler with an alias is in test_verifier.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.dns import DnsServer
from services.verifier.settings import load
from shared.verification.checks import DomainChecker
from shared.verification.dns import DnsResolver
from shared.verification.judge import NotYet, Verified
from trackctl.doctor import FAIL, PASS, check_dns

HOST = "click.platform.test"  # TRACKING_HOST: where the platform moves to
OLD = "click.old-platform.test"  # TRACKING_HOST_ALIASES: where it moves from
NAME = "track.customer-a.test"
CA = "letsencrypt.org"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.a(HOST, "192.0.2.10")
        server.a(OLD, "192.0.2.20")
        server.cname(NAME, OLD)  # the customer pointed at the old host and never moved
        yield server


def checker(server: DnsServer, aliases: tuple[str, ...]) -> DomainChecker:
    resolver = DnsResolver((("127.0.0.1", server.port),), timeout_s=1.0)
    return DomainChecker(resolver, target=HOST, aliases=aliases, ca_identity=CA)


async def test_a_chain_to_the_alias_verifies_until_the_old_name_leads_to_the_new(
        dns_server: DnsServer) -> None:
    policy = load({"TRACKING_HOST": HOST, "TRACKING_HOST_ALIASES": OLD}).policy
    during, after = checker(dns_server, policy.tracking_host_aliases), checker(dns_server, ())
    # While the old name has addresses of its own, the alias is what verifies the domain.
    verdict = await during.check(NAME)
    assert isinstance(verdict, Verified) and verdict.alias == OLD
    assert verdict.description == (f"{NAME} -> {OLD} [{OLD} is an alias of {HOST} in "
                                   "TRACKING_HOST_ALIASES]")
    lapsing = await after.check(NAME)
    assert isinstance(lapsing, NotYet) and lapsing.code == "wrong_target"
    # Once the old name is a CNAME to the new one, the chain reaches the new host: the
    # verdict no longer names the alias, and removing the alias lapses nothing.
    dns_server.cname(OLD, HOST)
    for check in (during, after):
        verdict = await check.check(NAME)
        assert isinstance(verdict, Verified) and verdict.alias is None
        assert verdict.description == f"{NAME} -> {OLD} -> {HOST}"


async def test_doctor_accepts_the_alias_and_says_it_matched(dns_server: DnsServer) -> None:
    nameservers = (("127.0.0.1", dns_server.port),)
    facts = await check_dns(NAME, host=HOST, ca_identity=CA, nameservers=nameservers,
                            timeout_s=1.0, aliases=(OLD,))
    check = facts.check
    assert check.status == PASS and facts.leads_here
    assert check.summary == (f"{NAME} -> {OLD} (matched by cname, through {OLD}, an alias "
                             f"of {HOST} in TRACKING_HOST_ALIASES)")
    assert check.data["matched_host"] == OLD
    assert facts.addresses == ["192.0.2.20"]  # where its HTTPS is then tried
    assert any(f"must reach {HOST}" in detail for detail in check.details)

    without = await check_dns(NAME, host=HOST, ca_identity=CA, nameservers=nameservers,
                              timeout_s=1.0)
    assert without.check.status == FAIL and without.check.code == "wrong_target"
