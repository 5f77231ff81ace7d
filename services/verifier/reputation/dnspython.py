"""The dnspython adapter for blocklist lookups: one `A` question, the answer as received.

Unlike the verifier's `shared.verification.dns.DnsResolver` (which turns failures into
`DnsTrouble`), the blocklist rules need the exact rcode and addresses of every answer,
and how long it may be cached, so this asks the servers itself with
`dns.asyncquery.udp_with_fallback` (TCP when the answer is truncated) and reports what
came back. One call is one question to one server: retrying is the engine's decision,
because every question counts against a list's daily budget.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from services.verifier.reputation.blocklists import NXDOMAIN, TIMEOUT

# An answer with no TTL to go by (NXDOMAIN without an SOA): cached this long.
DEFAULT_NEGATIVE_TTL_S = 300


@dataclass(frozen=True)
class RawAnswer:
    """What one server said: the rcode's name (or TIMEOUT), the A addresses, and for how
    many seconds the answer may be reused (0: not at all)."""

    rcode: str
    addresses: tuple[str, ...] = ()
    ttl_s: int = 0


class DnspythonListResolver:
    """Asks `name IN A` of the configured servers in turn (round robin), without recursion
    of its own: the servers are the recursive resolvers the lists answer (never a public
    one: the lists refuse those)."""

    def __init__(self, nameservers: tuple[tuple[str, int], ...] = (), *,
                 timeout_s: float = 2.0,
                 negative_ttl_s: int = DEFAULT_NEGATIVE_TTL_S) -> None:
        if not nameservers:
            # The system's resolvers, as /etc/resolv.conf names them.
            system = dns.resolver.Resolver(configure=True)
            nameservers = tuple((str(ns), 53) for ns in system.nameservers)
        self.nameservers = nameservers
        self.timeout_s = timeout_s
        self.negative_ttl_s = negative_ttl_s
        self._next = itertools.cycle(range(len(nameservers)))

    @property
    def description(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self.nameservers)

    async def ask(self, qname: str) -> RawAnswer:
        """One question to the next server; never raises for DNS trouble (the rcode, or
        TIMEOUT, says what happened)."""
        host, port = self.nameservers[next(self._next)]
        query = dns.message.make_query(dns.name.from_text(qname), dns.rdatatype.A)
        query.flags |= dns.flags.RD
        try:
            response, _tcp = await dns.asyncquery.udp_with_fallback(
                query, host, timeout=self.timeout_s, port=port)
        except dns.exception.Timeout:
            return RawAnswer(TIMEOUT)
        except (OSError, dns.exception.DNSException) as exc:
            # An unreachable server or a mangled answer: an error like SERVFAIL.
            return RawAnswer(f"ERROR:{type(exc).__name__}")
        return self._read(response, query.question[0].name)

    def _read(self, response: dns.message.Message, qname: dns.name.Name) -> RawAnswer:
        rcode = dns.rcode.to_text(response.rcode())
        if rcode == NXDOMAIN:
            return RawAnswer(NXDOMAIN, ttl_s=self._negative_ttl(response))
        if rcode != "NOERROR":
            return RawAnswer(rcode)
        addresses: list[str] = []
        ttls: list[int] = []
        for rrset in response.answer:
            # A CNAME chain may lead to the A set; its TTLs bound the answer's too.
            ttls.append(rrset.ttl)
            if rrset.rdtype == dns.rdatatype.A:
                addresses.extend(rdata.address for rdata in rrset)
        if not addresses:
            return RawAnswer("NOERROR", ttl_s=self._negative_ttl(response))
        return RawAnswer("NOERROR", tuple(addresses), min(ttls))

    def _negative_ttl(self, response: dns.message.Message) -> int:
        # RFC 2308 section 5: the SOA's TTL, at most its MINIMUM field.
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(rrset.ttl, next(iter(rrset)).minimum)
        return self.negative_ttl_s
