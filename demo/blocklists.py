"""DBL, SURBL and URIBL zones on the local `DnsServer`, answering as the real lists do.

The tests and the benchmark need lists whose answers they choose: a listing with any
category, a refusal of the resolver, NXDOMAIN, SERVFAIL, silence, and the documented
control entries (which answer as the real lists' do, unless a test breaks them):

    with DnsServer() as dns:
        zones = ListZones(dns)               # dbl.test, surbl.test, uribl.test
        zones.list("dbl", "track.bad.test", "phishing")
        zones.list("surbl", "bad.test", "ph", "mw")
        zones.refuse("uribl")                # 127.0.0.1 for every name, controls too
        zones.fault("surbl", "servfail")     # the whole zone
        REPUTATION_LISTS = zones.setting     # "dbl=dbl.test,surbl=surbl.test,uribl=uribl.test"

Names are given as the list keys them (DBL the host, SURBL/URIBL the registered
domain); categories by the names `services.verifier.reputation.blocklists` decodes to,
or a raw address (`"127.0.1.255"`). Everything else under a zone is NXDOMAIN.
Deliberately its own table of codes, not the decoder's: a test of the decoder against
the decoder's own table could not fail.
"""

from __future__ import annotations

from typing import Literal

from demo.dns import DnsServer, Fault

ListKind = Literal["dbl", "surbl", "uribl"]

DBL_ADDRESSES = {
    "spam": "127.0.1.2", "phishing": "127.0.1.4", "malware": "127.0.1.5",
    "botnet-cc": "127.0.1.6", "abused-legit-spam": "127.0.1.102",
    "abused-redirector": "127.0.1.103", "abused-legit-phishing": "127.0.1.104",
    "abused-legit-malware": "127.0.1.105", "abused-legit-botnet-cc": "127.0.1.106",
}
BITS = {
    "surbl": {"ph": 8, "mw": 16, "abuse": 64, "cr": 128},
    "uribl": {"black": 2, "grey": 4, "red": 8},
}
# What each list answers a resolver it will not serve (the first of each is the default).
REFUSALS = {
    "dbl": ("127.255.255.254", "127.255.255.252", "127.255.255.255"),
    "surbl": ("127.0.0.1",),
    "uribl": ("127.0.0.1",),
}
# The lists' documented test entries and what the real lists answer for them.
CONTROL_ENTRIES = {
    "dbl": ("dbltest.com", ("127.0.1.2",)),
    "surbl": ("test.surbl.org", ("127.0.0.254",)),
    "uribl": ("test.uribl.com", ("127.0.0.14",)),
}


def addresses(kind: ListKind, categories: tuple[str, ...]) -> tuple[str, ...]:
    """The A records `kind` answers for a name on `categories` (raw addresses kept)."""
    raw = tuple(c for c in categories if c[:1].isdigit())
    named = [c for c in categories if not c[:1].isdigit()]
    if kind == "dbl":
        return raw + tuple(DBL_ADDRESSES[c] for c in named)
    if not named:
        return raw
    return (*raw, f"127.0.0.{sum(BITS[kind][c] for c in named)}")


class ListZones:
    """The three list zones on `dns`, with their control entries listed."""

    def __init__(self, dns: DnsServer, *, dbl: str = "dbl.test", surbl: str = "surbl.test",
                 uribl: str = "uribl.test", ttl: int | None = None) -> None:
        self.dns = dns
        self.zones: dict[ListKind, str] = {"dbl": dbl, "surbl": surbl, "uribl": uribl}
        self.ttl = ttl
        self._listed: dict[ListKind, dict[str, tuple[str, ...]]] = {k: {} for k in self.zones}
        self._refused: dict[ListKind, str | None] = dict.fromkeys(self.zones)
        for kind, (name, answer) in CONTROL_ENTRIES.items():
            self.list(kind, name, *answer)  # type: ignore[arg-type]

    @property
    def setting(self) -> str:
        """The REPUTATION_LISTS value naming these zones."""
        return ",".join(f"{kind}={zone}" for kind, zone in self.zones.items())

    def qname(self, kind: ListKind, name: str) -> str:
        return f"{name.lower().rstrip('.')}.{self.zones[kind]}"

    def list(self, kind: ListKind, name: str, *categories: str) -> None:
        """Answer for `name` as listed on `categories` (or raw addresses)."""
        self._listed[kind][name] = addresses(kind, categories)
        self._write(kind, name)

    def delist(self, kind: ListKind, name: str) -> None:
        """`name` is NXDOMAIN on `kind` again (a control entry too: the control fails)."""
        self._listed[kind].pop(name, None)
        self.dns.remove(self.qname(kind, name))

    def refuse(self, kind: ListKind, address: str | None = None) -> None:
        """Answer every question on `kind` with its refusal code (None: the default one)."""
        refusal = address or REFUSALS[kind][0]
        self._refused[kind] = refusal
        self.dns.a(f"*.{self.zones[kind]}", refusal)
        for name in self._listed[kind]:
            self._write(kind, name)

    def serve(self, kind: ListKind) -> None:
        """Stop refusing: listings answer as listed again, the rest NXDOMAIN."""
        self._refused[kind] = None
        self.dns.a(f"*.{self.zones[kind]}")
        for name in self._listed[kind]:
            self._write(kind, name)

    def fault(self, kind: ListKind, fault: Fault | None) -> None:
        """Every question on `kind` answered SERVFAIL/REFUSED or never (None: clear)."""
        self.dns.fault(f"*.{self.zones[kind]}", fault)

    def queries(self, kind: ListKind) -> int:
        """Questions asked of `kind`'s zone so far."""
        suffix = "." + self.zones[kind]
        return sum(n for (qname, _qtype), n in self.dns.queries.items()
                   if qname.endswith(suffix))

    def _write(self, kind: ListKind, name: str) -> None:
        refused = self._refused[kind]
        answer = (refused,) if refused else self._listed[kind][name]
        self.dns.a(self.qname(kind, name), *answer, ttl=self.ttl)
