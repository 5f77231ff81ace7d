"""Gathering what DNS says about one name (in parallel where it can), then judging it.

Per check: the CNAME chain hop by hop (a CNAME question per hop, so loops and long
chains are seen, not hidden inside a resolver error) until it reaches the platform
host (past one of its aliases too, to learn whether the domain depends on the alias;
nothing found beyond the alias can fail the check), the CAA sets of the name and every
ancestor at the same time (RFC 8659 climbs the tree), and only when the chain reaches
neither, the A/AAAA sets for CNAME flattening (against the host itself, not its
aliases). The host's own addresses are cached briefly: every check would otherwise ask
for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from shared.verification.dns import Hop
from shared.verification.judge import (
    MAX_CHAIN_HOPS,
    CaaLevel,
    CaaRecord,
    DnsTrouble,
    Observation,
    Verdict,
    caa_owners,
    judge,
)


class DnsLookup(Protocol):
    async def cname(self, name: str) -> Hop: ...

    async def addresses(self, name: str) -> frozenset[str]: ...

    async def caa(self, name: str) -> tuple[CaaRecord, ...]: ...


class DomainChecker:
    def __init__(self, dns: DnsLookup, *, target: str, ca_identity: str,
                 aliases: Sequence[str] = (), max_hops: int = MAX_CHAIN_HOPS,
                 target_ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._dns = dns
        self.target = target
        # Other names of the platform host (TRACKING_HOST_ALIASES): a chain ends there too.
        self.aliases = tuple(aliases)
        self._platform = frozenset((target, *self.aliases))
        self.ca_identity = ca_identity
        self._max_hops = max_hops
        self._target_ttl_s = target_ttl_s
        self._clock = clock
        self._target_addresses: asyncio.Future[frozenset[str]] | None = None
        self._target_fetched_at = 0.0

    async def check(self, name: str) -> Verdict:
        return judge(await self.observe(name), target=self.target,
                     ca_identity=self.ca_identity, max_hops=self._max_hops,
                     aliases=self.aliases)

    async def observe(self, name: str) -> Observation:
        caa = asyncio.ensure_future(self._caa_levels(name))
        try:
            chain, exists = await self._chain(name)
            loops = len(set(chain)) < len(chain)
            if not self._platform.isdisjoint(chain) or loops or \
                    len(chain) - 1 > self._max_hops:
                return Observation(name, chain, exists, caa=await caa)
            if not exists:
                return Observation(name, chain, exists)
            addresses, target_addresses = await asyncio.gather(
                self._dns.addresses(chain[-1]), self.target_addresses())
            return Observation(name, chain, exists, addresses=addresses,
                               target_addresses=target_addresses, caa=await caa)
        except DnsTrouble as trouble:
            return Observation(name, (name,), trouble=trouble)
        finally:
            if not caa.done():
                caa.cancel()

    async def _chain(self, name: str) -> tuple[tuple[str, ...], bool]:
        chain = [name]
        while chain[-1] != self.target and len(chain) - 1 <= self._max_hops:
            try:
                hop = await self._dns.cname(chain[-1])
            except DnsTrouble:
                if not self._platform.isdisjoint(chain):
                    break  # an alias was reached: that is enough to judge
                raise
            if not hop.exists:
                return tuple(chain), False
            if hop.target is None:
                break
            chain.append(hop.target)
            if hop.target in chain[:-1]:
                break
        return tuple(chain), True

    async def _caa_levels(self, name: str) -> tuple[CaaLevel, ...]:
        owners = caa_owners(name)
        answers = await asyncio.gather(*(self._dns.caa(owner) for owner in owners),
                                       return_exceptions=True)
        levels = []
        for owner, answer in zip(owners, answers, strict=True):
            if isinstance(answer, DnsTrouble):
                levels.append(CaaLevel(owner, trouble=answer))
            elif isinstance(answer, BaseException):
                raise answer
            else:
                levels.append(CaaLevel(owner, records=answer))
        return tuple(levels)

    async def target_addresses(self) -> frozenset[str]:
        """The platform host's A/AAAA set, shared by concurrent checks and kept briefly."""
        now = self._clock()
        cached = self._target_addresses
        if cached is None or (cached.done() and (
                cached.exception() is not None
                or now - self._target_fetched_at > self._target_ttl_s)):
            cached = self._target_addresses = asyncio.ensure_future(
                self._dns.addresses(self.target))
            self._target_fetched_at = now
        return await asyncio.shield(cached)
