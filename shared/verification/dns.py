"""The dnspython adapter: the three questions the verifier asks DNS, asynchronously.

Failures the resolver cannot answer through (SERVFAIL, REFUSED, timeouts, broken
responses) become `DnsTrouble`; NXDOMAIN and "no such record" are answers, not
failures. No cache: every check must see DNS as it is now.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from shared.verification.judge import DNS_ERROR, DNS_SERVFAIL, DNS_TIMEOUT, CaaRecord, DnsTrouble


@dataclass(frozen=True)
class Hop:
    """The CNAME question's answer: `exists` False is NXDOMAIN; `target` None is no CNAME."""

    exists: bool
    target: str | None = None


class DnsResolver:
    def __init__(self, nameservers: tuple[tuple[str, int], ...] = (), *,
                 timeout_s: float = 5.0) -> None:
        # configure=True reads /etc/resolv.conf: the system's resolvers by default.
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                          for host, port in nameservers]
        # `lifetime` bounds a whole question; each server gets a share of it (at most
        # 2 s, then the next server or a retry), so one dead server cannot use it all.
        self._resolver.lifetime = timeout_s
        self._resolver.timeout = min(2.0, timeout_s / max(1, len(nameservers)))
        self._resolver.cache = None
        self.timeout_s = timeout_s

    @property
    def description(self) -> str:
        return ", ".join(str(ns) for ns in self._resolver.nameservers)

    async def cname(self, name: str) -> Hop:
        answer = await self._resolve(name, "CNAME")
        if answer is None:
            return Hop(exists=False)
        if answer.rrset is None:
            return Hop(exists=True)
        return Hop(exists=True, target=_text(next(iter(answer.rrset)).target))

    async def addresses(self, name: str) -> frozenset[str]:
        """A and AAAA of `name` (CNAMEs followed by the resolver); empty if none."""
        found: set[str] = set()
        for answer in await asyncio.gather(self._resolve(name, "A"),
                                           self._resolve(name, "AAAA")):
            if answer is not None and answer.rrset is not None:
                found.update(rdata.address for rdata in answer.rrset)
        return frozenset(found)

    async def caa(self, name: str) -> tuple[CaaRecord, ...]:
        """The CAA set answering for `name` (at its CNAME target, if it has one)."""
        answer = await self._resolve(name, "CAA")
        if answer is None or answer.rrset is None:
            return ()
        return tuple(CaaRecord(rdata.flags, rdata.tag.decode("ascii", "replace"),
                               rdata.value.decode("utf-8", "replace"))
                     for rdata in answer.rrset)

    async def _resolve(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer (rrset None: no such record), None for NXDOMAIN, or `DnsTrouble`."""
        qname = dns.name.from_text(name)
        try:
            return await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False,
                                                search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoNameservers as exc:
            raise DnsTrouble(DNS_SERVFAIL, (
                f"the DNS servers did not answer {rdtype} for {name}: "
                f"{_server_errors(exc)}")) from None
        except dns.exception.Timeout:
            raise DnsTrouble(DNS_TIMEOUT, (
                f"no DNS answer for {name} ({rdtype}) within {self.timeout_s:g} s")) from None
        except dns.exception.DNSException as exc:
            raise DnsTrouble(DNS_ERROR, (
                f"DNS lookup of {name} ({rdtype}) failed: "
                f"{str(exc) or type(exc).__name__}")) from None


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    parts = []
    for error in errors:
        server, answer = error[0], error[3]
        parts.append(f"{server} answered {answer}")
    return "; ".join(parts)[:500] or "no server answered"
