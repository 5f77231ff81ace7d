"""DNS blocklists (Spamhaus DBL, SURBL, URIBL): query names and the exact meaning of answers.

Pure logic for the reputation watch (issue 14): no DNS traffic here. The watch asks
`<query name>.<zone> IN A` and hands the rcode and addresses to `decode`, which says:

- listed, with the list's categories;
- not listed (NXDOMAIN, or an answer with no address);
- refused: the list declined to answer this resolver (a public resolver, over the free
  tier, a mistyped DQS key). Never a listing: a refused resolver must not get every
  customer told they are listed;
- error: SERVFAIL, timeout, any other rcode, or an address the list does not document
  (an NXDOMAIN-rewriting resolver, say). Retried, never a verdict.

Each list's positive control (an entry the list documents as always listed) and a
negative control (`invalid`, which RFC 5782 section 5 says no domain list may list) tell
whether the list answers this resolver truthfully at all (`controls_pass`).

Sources of the codes (checked 2026-12):
- DBL: https://docs.spamhaus.com/datasets/docs/source/10-data-type-documentation/datasets/040-zones.html
  (127.0.1.x codes; 127.0.1.255 for an IP query) and
  https://www.spamhaus.org/faq/section/DNSBL%2520Usage (127.255.255.252 typo in the
  query zone or DQS key, .254 query via a public/open resolver, .255 excessive queries).
  Test entry: dbltest.com, listed as 127.0.1.2.
- SURBL: https://www.surbl.org/lists (multi.surbl.org bitmask: 8 PH, 16 MW, 64 ABUSE,
  128 CR; 127.0.0.1 / bit 1 means the resolver is blocked). Test entry: test.surbl.org,
  listed on every list.
- URIBL: https://uribl.com/about.shtml and https://uribl.com/refused.shtml (bitmask: 2
  black, 4 grey, 8 red; 127.0.0.1 / bit 1 "query refused"). Test entry: test.uribl.com,
  listed on black, grey and red (127.0.0.14).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.domains import InvalidDomain, normalise_domain, registered_domain
from shared.errors import SettingsError


class Kind(StrEnum):
    DBL = "dbl"
    SURBL = "surbl"
    URIBL = "uribl"


class Status(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not_listed"
    REFUSED = "refused"
    ERROR = "error"


DEFAULT_LISTS = "dbl=dbl.spamhaus.org,surbl=multi.surbl.org,uribl=multi.uribl.com"

# DBL return codes (127.0.1.x): 2-99 the domain itself, 100-199 a legitimate domain abused.
DBL_CODES: dict[int, str] = {
    2: "spam",
    4: "phishing",
    5: "malware",
    6: "botnet-cc",
    102: "abused-legit-spam",
    103: "abused-redirector",
    104: "abused-legit-phishing",
    105: "abused-legit-malware",
    106: "abused-legit-botnet-cc",
}
DBL_IP_QUERY = "127.0.1.255"
SPAMHAUS_REFUSALS: dict[str, str] = {
    "127.255.255.252": "typing error in the query zone or DQS key",
    "127.255.255.254": "query via a public or open resolver",
    "127.255.255.255": "excessive number of queries from this resolver",
}
SURBL_BITS: dict[int, str] = {8: "ph", 16: "mw", 64: "abuse", 128: "cr"}
URIBL_BITS: dict[int, str] = {2: "black", 4: "grey", 8: "red"}
REFUSED_BIT = 1  # SURBL and URIBL answer 127.0.0.1 to a resolver they refuse

# Where each list lets anyone look a domain up, see why it is listed and ask for removal:
# the fix-it link in domain.listed, `trackctl reputation` and `trackctl doctor`.
FIX_URLS: dict[Kind, str] = {
    Kind.DBL: "https://check.spamhaus.org/",
    Kind.SURBL: "https://www.surbl.org/surbl-analysis",
    Kind.URIBL: "https://admin.uribl.com/",
}

# Rcodes (dnspython's names) and the watch's own word for no answer in time.
NOERROR, NXDOMAIN, SERVFAIL, TIMEOUT = "NOERROR", "NXDOMAIN", "SERVFAIL", "TIMEOUT"


@dataclass(frozen=True)
class BlockList:
    """One configured list: which kind of answers it gives, and the zone asked."""

    kind: Kind
    zone: str

    def query_name(self, name: str) -> str:
        """What to ask for `name`: DBL lists host names, SURBL and URIBL only registered
        domains (they strip host parts themselves and list nothing below)."""
        return f"{_subject(self.kind, name)}.{self.zone}"

    @property
    def label(self) -> str:
        """The zone fit for logs and metrics: a DQS key (a secret) is masked."""
        return redact_zone(self.zone)

    def __repr__(self) -> str:
        return f"BlockList(kind={self.kind.value!r}, zone={self.label!r})"


@functools.lru_cache(maxsize=100_000)
def _subject(kind: Kind, name: str) -> str:
    # Cached: every pass asks the same names again, and the Public Suffix List lookup
    # and IDNA normalisation were about a tenth of a round's CPU (bench/reputation.py).
    host = normalise_domain(name, allow_single_label=True)
    return host if kind == Kind.DBL else registered_domain(host)


@dataclass(frozen=True)
class Verdict:
    """What one answer means. `raw` is the answer as received (rcode or addresses)."""

    status: Status
    categories: tuple[str, ...] = ()
    raw: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Control:
    """A name whose answer is known: listed (with at least `categories`) or not."""

    name: str
    listed: bool
    categories: frozenset[str] = frozenset()

    def passes(self, verdict: Verdict) -> bool:
        if not self.listed:
            return verdict.status == Status.NOT_LISTED
        return (verdict.status == Status.LISTED
                and self.categories <= frozenset(verdict.categories))


# RFC 5782 section 5: a domain-name list must not list the reserved name INVALID.
NEGATIVE_CONTROL = Control("invalid", listed=False)
POSITIVE_CONTROLS: dict[Kind, Control] = {
    Kind.DBL: Control("dbltest.com", listed=True, categories=frozenset({"spam"})),
    Kind.SURBL: Control("test.surbl.org", listed=True),
    Kind.URIBL: Control("test.uribl.com", listed=True,
                        categories=frozenset({"black", "grey", "red"})),
}


def controls(kind: Kind) -> tuple[Control, Control]:
    """The positive and the negative control for a list of `kind`."""
    return POSITIVE_CONTROLS[kind], NEGATIVE_CONTROL


def controls_pass(kind: Kind, answers: dict[str, Verdict]) -> bool:
    """Whether the list answered both controls (verdicts by control name) as documented;
    if not, the round's results from this list are discarded."""
    return all(control.name in answers and control.passes(answers[control.name])
               for control in controls(kind))


def decode(kind: Kind, rcode: str, addresses: Sequence[str] = ()) -> Verdict:
    """The meaning of one answer to `<query name>.<zone> IN A` from a list of `kind`."""
    rcode = rcode.upper()
    if rcode == NXDOMAIN:
        return Verdict(Status.NOT_LISTED, raw=(NXDOMAIN,))
    if rcode != NOERROR:
        why = "no answer in time" if rcode == TIMEOUT else f"the resolver answered {rcode}"
        return Verdict(Status.ERROR, raw=(rcode,), detail=why)
    raw = tuple(sorted(set(addresses)))
    if not raw:
        return Verdict(Status.NOT_LISTED, raw=(NOERROR,), detail="no address (NODATA)")
    decoder = _decode_dbl if kind == Kind.DBL else _decode_bitmask
    verdicts = [decoder(kind, address) for address in raw]
    # Several addresses: one refusal or oddity spoils the answer (it cannot be trusted);
    # otherwise the categories add up.
    for status in (Status.REFUSED, Status.ERROR):
        spoilt = [v for v in verdicts if v.status == status]
        if spoilt:
            return Verdict(status, raw=raw, detail="; ".join(v.detail for v in spoilt))
    categories = tuple(dict.fromkeys(c for v in verdicts for c in v.categories))
    return Verdict(Status.LISTED, categories, raw)


def _ipv4(address: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        return None


def _unexpected(address: str) -> Verdict:
    return Verdict(Status.ERROR, detail=f"{address} is not a documented answer of this list")


def _decode_dbl(kind: Kind, address: str) -> Verdict:
    if address in SPAMHAUS_REFUSALS:
        return Verdict(Status.REFUSED, detail=f"{address}: {SPAMHAUS_REFUSALS[address]}")
    if address == DBL_IP_QUERY:
        return Verdict(Status.REFUSED, detail=f"{address}: an IP address was asked of a "
                                              "domain list")
    ip = _ipv4(address)
    if ip is None or not address.startswith("127.0.1."):
        return _unexpected(address)
    category = DBL_CODES.get(ip.packed[3])
    return _unexpected(address) if category is None else Verdict(Status.LISTED, (category,))


def _decode_bitmask(kind: Kind, address: str) -> Verdict:
    ip = _ipv4(address)
    if ip is None or ip.packed[0] != 127:
        return _unexpected(address)
    octet = ip.packed[3]
    if octet & REFUSED_BIT:
        return Verdict(Status.REFUSED, detail=f"{address}: {kind} refuses this resolver "
                                              "(public resolver, or over the free tier)")
    if octet == 0:
        return _unexpected(address)
    bits = SURBL_BITS if kind == Kind.SURBL else URIBL_BITS
    # A bit the list's public docs do not name (SURBL's test entry answers 127.0.0.254,
    # with bits beyond PH/MW/ABUSE/CR) still says "on one of our lists": kept as `bit-N`.
    categories = tuple(bits.get(1 << n, f"bit-{1 << n}") for n in range(1, 8)
                       if octet & (1 << n))
    return Verdict(Status.LISTED, categories)


def redact_zone(zone: str) -> str:
    """A Spamhaus DQS zone carries the customer's key as its first label: mask it."""
    if ".dq.spamhaus.net" in zone.lower():
        return "<key>." + zone.partition(".")[2]
    return zone


def parse_lists(value: str | None) -> tuple[BlockList, ...]:
    """`REPUTATION_LISTS`: comma-separated `kind=zone` (kind dbl, surbl or uribl), each kind
    at most once. Unset: `DEFAULT_LISTS`; empty: no lists (the watch is off)."""
    if value is None:
        value = DEFAULT_LISTS
    lists: list[BlockList] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        kind_text, sep, zone_text = item.partition("=")
        kind_text = kind_text.strip().lower()
        if not sep:
            raise SettingsError(f"REPUTATION_LISTS entry {redact_zone(item)!r} must be "
                                "kind=zone, e.g. dbl=dbl.spamhaus.org")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise SettingsError(
                f"REPUTATION_LISTS kind {kind_text!r} is not one of "
                f"{', '.join(k.value for k in Kind)}") from None
        try:
            zone = normalise_domain(zone_text)
        except InvalidDomain as exc:
            raise SettingsError(f"REPUTATION_LISTS zone for {kind} is not a valid DNS zone: "
                                f"{_masked(str(exc), zone_text)}") from None
        if any(existing.kind == kind for existing in lists):
            raise SettingsError(f"REPUTATION_LISTS names {kind} twice; give each kind once")
        lists.append(BlockList(kind, zone))
    return tuple(lists)


def _masked(text: str, zone: str) -> str:
    zone = zone.strip()
    return text.replace(zone, redact_zone(zone.lower())) if zone else text
