"""DomainChecker's gathering logic against an in-memory DNS (no network)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.verification.checks import DomainChecker
from shared.verification.dns import Hop
from shared.verification.judge import (
    CAA_FORBIDS,
    CNAME_LOOP,
    DNS_TIMEOUT,
    CaaRecord,
    DnsTrouble,
    NotYet,
    Unsure,
    Verified,
)

HOST = "click.platform.test"


@dataclass
class FakeDns:
    cnames: dict[str, str] = field(default_factory=dict)
    addrs: dict[str, frozenset[str]] = field(default_factory=dict)
    caas: dict[str, tuple[CaaRecord, ...]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def _exists(self, name: str) -> bool:
        return name in self.cnames or name in self.addrs or name in self.caas

    async def cname(self, name: str) -> Hop:
        self.asked.append(("CNAME", name))
        if name in self.broken:
            raise DnsTrouble(DNS_TIMEOUT, f"no answer for {name}")
        if not self._exists(name):
            return Hop(exists=False)
        return Hop(exists=True, target=self.cnames.get(name))

    async def addresses(self, name: str) -> frozenset[str]:
        self.asked.append(("ADDR", name))
        return self.addrs.get(name, frozenset())

    async def caa(self, name: str) -> tuple[CaaRecord, ...]:
        self.asked.append(("CAA", name))
        return self.caas.get(name, ())


async def test_chain_is_followed_hop_by_hop_and_stops_at_the_host() -> None:
    dns = FakeDns(cnames={"t.a.test": "x.cdn.test", "x.cdn.test": HOST, HOST: "lb.test"},
                  addrs={"lb.test": frozenset({"192.0.2.1"})})
    verdict = await DomainChecker(dns, target=HOST, ca_identity="letsencrypt.org").check(
        "t.a.test")
    assert isinstance(verdict, Verified) and verdict.chain == ("t.a.test", "x.cdn.test", HOST)
    assert ("CNAME", HOST) not in dns.asked and not [q for q in dns.asked if q[0] == "ADDR"]


async def test_an_alias_of_the_host_is_a_target_and_the_chain_is_followed_past_it() -> None:
    old = "click.old-platform.test"
    dns = FakeDns(cnames={"t.a.test": old}, addrs={old: frozenset({"192.0.2.9"})})
    checker = DomainChecker(dns, target=HOST, aliases=(old,), ca_identity="letsencrypt.org")
    verdict = await checker.check("t.a.test")
    assert isinstance(verdict, Verified) and verdict.chain == ("t.a.test", old)
    assert verdict.alias == old and old in verdict.description
    # The alias's own CNAME was asked (does the domain depend on the alias?); no address.
    assert ("CNAME", old) in dns.asked and not [q for q in dns.asked if q[0] == "ADDR"]

    dns.broken.add(old)  # the old zone does not answer: the alias was reached, enough
    verdict = await checker.check("t.a.test")
    assert isinstance(verdict, Verified) and verdict.alias == old

    dns.broken.clear()
    dns.cnames[old] = HOST  # the old name now leads to the new one: no alias needed
    verdict = await checker.check("t.a.test")
    assert isinstance(verdict, Verified) and verdict.alias is None
    assert verdict.chain == ("t.a.test", old, HOST)


async def test_loop_stops_following() -> None:
    dns = FakeDns(cnames={"t.a.test": "b.test", "b.test": "c.test", "c.test": "b.test"})
    verdict = await DomainChecker(dns, target=HOST, ca_identity="letsencrypt.org").check(
        "t.a.test")
    assert isinstance(verdict, NotYet) and verdict.code == CNAME_LOOP
    assert len([q for q in dns.asked if q[0] == "CNAME"]) == 3


async def test_caa_of_every_ancestor_is_asked_and_the_closest_applies() -> None:
    dns = FakeDns(cnames={"t.a.test": HOST},
                  caas={"a.test": (CaaRecord(0, "issue", "digicert.com"),)})
    verdict = await DomainChecker(dns, target=HOST, ca_identity="letsencrypt.org").check(
        "t.a.test")
    assert isinstance(verdict, NotYet) and verdict.code == CAA_FORBIDS
    assert {q[1] for q in dns.asked if q[0] == "CAA"} == {"t.a.test", "a.test", "test"}


async def test_trouble_on_the_chain_is_unsure() -> None:
    dns = FakeDns(broken={"t.a.test"})
    verdict = await DomainChecker(dns, target=HOST, ca_identity="letsencrypt.org").check(
        "t.a.test")
    assert isinstance(verdict, Unsure) and verdict.code == DNS_TIMEOUT


async def test_target_addresses_are_fetched_once_for_concurrent_checks() -> None:
    same = frozenset({"192.0.2.10"})
    dns = FakeDns(addrs={HOST: same, **{f"t{i}.a.test": same for i in range(20)}})
    checker = DomainChecker(dns, target=HOST, ca_identity="letsencrypt.org")
    verdicts = await asyncio.gather(*(checker.check(f"t{i}.a.test") for i in range(20)))
    assert all(isinstance(v, Verified) and v.matched_by == "address" for v in verdicts)
    assert dns.asked.count(("ADDR", HOST)) == 1
