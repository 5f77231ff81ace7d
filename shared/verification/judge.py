"""Pure judgement: is a name acceptable, and does what DNS says lead to the platform host?

No I/O here. `validate_name` screens the name before any lookup; `judge` turns an
`Observation` (what the resolver saw, gathered by checks.py) into a verdict:

- `Verified`: the CNAME chain reaches the platform host ("cname"; an alias of it from
  `TRACKING_HOST_ALIASES` counts too, and is named), or the name's A/AAAA set equals
  the host's ("address": CNAME flattening), and CAA allows our CA;
- `NotYet`: DNS is not right *now* (it may be fixed): the reason says what is
  wrong and what to do; rechecked until the deadline, then rejected;
- `Unsure`: the resolver failed (SERVFAIL, timeout): transient, nothing is known.

Every `code` has a section in docs/troubleshooting.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.domains import InvalidDomain, normalise_domain, platform_host_of

# Rejected at once (the name itself is unusable for this customer).
INVALID_NAME = "invalid_name"
PLATFORM_HOST = "platform_host"
OWNED_BY_OTHER_CUSTOMER = "owned_by_other_customer"
# Not yet correct (rechecked until the deadline; also the reasons a domain lapses).
NXDOMAIN = "nxdomain"
NO_CNAME = "no_cname"
WRONG_TARGET = "wrong_target"
CNAME_LOOP = "cname_loop"
CHAIN_TOO_LONG = "chain_too_long"
CAA_FORBIDS = "caa_forbids"
# Transient: the resolver could not answer.
DNS_SERVFAIL = "dns_servfail"
DNS_TIMEOUT = "dns_timeout"
DNS_ERROR = "dns_error"

# Longest CNAME chain accepted (hops after the name itself); resolvers give up near here.
MAX_CHAIN_HOPS = 8
# CAA property tags a CA must understand (RFC 8659 §4); a critical unknown tag forbids.
KNOWN_CAA_TAGS = frozenset({"issue", "issuewild", "iodef"})
CAA_CRITICAL = 0x80


class DnsTrouble(Exception):
    """The resolver could not say (SERVFAIL, REFUSED, timeout): try again later."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class CaaRecord:
    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


@dataclass(frozen=True)
class CaaLevel:
    """The CAA answer at one name on the way up the tree (the name itself first)."""

    owner: str
    records: tuple[CaaRecord, ...] = ()
    trouble: DnsTrouble | None = None


@dataclass(frozen=True)
class Observation:
    """What DNS said about one name, as checks.py gathered it."""

    name: str
    # The name, then each CNAME target in order; a repeated name ends a loop.
    chain: tuple[str, ...]
    # False when the chain's last name does not exist (NXDOMAIN).
    exists: bool = True
    # A/AAAA of the chain's last name and of the platform host (looked up only when the
    # chain does not reach the host).
    addresses: frozenset[str] = frozenset()
    target_addresses: frozenset[str] = frozenset()
    caa: tuple[CaaLevel, ...] = ()
    # The chain or address lookup failed; nothing else is reliable.
    trouble: DnsTrouble | None = None


@dataclass(frozen=True)
class Verified:
    matched_by: str  # "cname" or "address"
    chain: tuple[str, ...]
    # Human form for `tracking_domains.dns_chain`.
    description: str
    # CAA allowed issuance: the level that decided, for the log.
    caa_note: str | None = None
    # The TRACKING_HOST_ALIASES entry the chain reached, when it was not the host itself.
    alias: str | None = None


@dataclass(frozen=True)
class NotYet:
    code: str
    reason: str


@dataclass(frozen=True)
class Unsure:
    code: str
    reason: str


@dataclass(frozen=True)
class Rejection:
    code: str
    reason: str


Verdict = Verified | NotYet | Unsure


@dataclass(frozen=True)
class CaaDecision:
    allowed: bool
    owner: str | None = None
    records: tuple[CaaRecord, ...] = field(default=())
    why: str = ""


def validate_name(raw: str, tracking_host: str,
                  aliases: Sequence[str] = ()) -> str | Rejection:
    """The normal form of `raw`, or why it can never be a tracking domain."""
    try:
        name = normalise_domain(raw)
    except InvalidDomain as exc:
        return Rejection(INVALID_NAME, f"{exc}. Give the exact host name, such as "
                                       "track.example.com.")
    platform = platform_host_of(name, (tracking_host, *aliases))
    if platform is not None:
        what = ("is the platform's own tracking host" if name == platform
                else f"is under the platform's own tracking host {platform}")
        return Rejection(PLATFORM_HOST, (
            f"{name} {what}; use a name under your own domain, such as "
            f"track.yourcompany.com, with a CNAME to {tracking_host}."))
    return name


def owned_elsewhere(name: str) -> Rejection:
    return Rejection(OWNED_BY_OTHER_CUSTOMER, (
        f"{name} is already registered by another account. If it is yours, remove it "
        "from the other account first (or ask support), then add it again."))


def judge(observation: Observation, *, target: str, ca_identity: str,
          max_hops: int = MAX_CHAIN_HOPS, aliases: Sequence[str] = ()) -> Verdict:
    """The verdict on one observation; see the module docstring. A chain that does not
    reach `target` but reaches one of `aliases` (other names of it: TRACKING_HOST_ALIASES)
    is accepted too, and the verdict names the alias."""
    name, chain = observation.name, observation.chain
    reached = reached_platform(chain, target, aliases)
    walked = reached or chain  # past the platform host, nothing the chain does matters
    advice = f"Set a CNAME record: {name} CNAME {target}."
    if len(set(walked)) < len(walked):
        return NotYet(CNAME_LOOP, (
            f"the CNAME chain of {name} loops: {arrow(chain)}. {advice}"))
    if len(walked) - 1 > max_hops:
        return NotYet(CHAIN_TOO_LONG, (
            f"the CNAME chain of {name} is longer than {max_hops} hops: {arrow(chain)}. "
            f"{advice}"))
    if observation.trouble is not None:
        return Unsure(observation.trouble.code, observation.trouble.reason)
    matched: Verified | None = None
    if reached is not None and reached[-1] == target:
        matched = Verified("cname", reached, arrow(reached))
    elif reached is not None:
        matched = Verified("cname", reached, (
            f"{arrow(reached)} [{reached[-1]} is an alias of {target} in "
            "TRACKING_HOST_ALIASES]"), alias=reached[-1])
    elif (observation.exists and observation.addresses
          and observation.addresses == observation.target_addresses):
        matched = Verified("address", chain, (
            f"{arrow(chain)} [same addresses as {target}: "
            f"{listing(observation.addresses)}]"))
    if matched is None:
        return _not_leading(observation, target=target, advice=advice)
    caa = decide_caa(observation.caa, ca_identity)
    if isinstance(caa, Unsure):
        return caa
    if not caa.allowed:
        assert caa.owner is not None
        records = ", ".join(str(r) for r in caa.records)
        return NotYet(CAA_FORBIDS, (
            f"the CAA records at {caa.owner} ({records}) do not allow {ca_identity} to "
            f"issue certificates for {name}: {caa.why}. Add a CAA record at {caa.owner}: "
            f'0 issue "{ca_identity}" (or remove the CAA records there).'))
    note = f"CAA at {caa.owner} allows {ca_identity}" if caa.owner else "no CAA records"
    return Verified(matched.matched_by, matched.chain, matched.description, note,
                    matched.alias)


def _not_leading(observation: Observation, *, target: str, advice: str) -> NotYet:
    name, chain = observation.name, observation.chain
    points_to = chain[1] if len(chain) > 1 else None
    via = f" (chain: {arrow(chain)})" if len(chain) > 2 else ""
    if not observation.exists:
        if points_to is None:
            return NotYet(NXDOMAIN, f"{name} does not exist in DNS (NXDOMAIN). {advice}")
        return NotYet(WRONG_TARGET, (
            f"{name} points to {points_to}{via}, and {chain[-1]} does not exist; "
            f"it should point to {target}. {advice}"))
    if points_to is None:
        found = (f"; it resolves to {listing(observation.addresses)}, not to the "
                 f"addresses of {target} ({listing(observation.target_addresses)})"
                 if observation.addresses else "")
        return NotYet(NO_CNAME, f"{name} has no CNAME record{found}. {advice}")
    return NotYet(WRONG_TARGET, (
        f"{name} points to {points_to}{via}; it should point to {target}. {advice}"))


def reached_platform(chain: Sequence[str], target: str,
                     aliases: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The chain up to `target`; else up to the first of `aliases` in it; else None.
    `target` wins even behind an alias (old name CNAME new name): such a domain does not
    depend on the alias, and its verdict does not name it."""
    if target in chain:
        return tuple(chain[:chain.index(target) + 1])
    at = next((i for i, hop in enumerate(chain) if hop in aliases), None)
    return None if at is None else tuple(chain[:at + 1])


def decide_caa(levels: Sequence[CaaLevel], ca_identity: str) -> CaaDecision | Unsure:
    """RFC 8659: the closest non-empty CAA set on the way up applies; its `issue` tags
    (this is never a wildcard request) must name `ca_identity`. A failed lookup at or
    below the deciding level leaves the answer unknown, as it does for a CA."""
    for level in levels:
        if level.trouble is not None:
            return Unsure(level.trouble.code, f"CAA lookup failed: {level.trouble.reason}")
        if level.records:
            allowed, why = caa_allows(level.records, ca_identity)
            return CaaDecision(allowed, level.owner, level.records, why)
    return CaaDecision(True)


def caa_allows(records: Sequence[CaaRecord], ca_identity: str) -> tuple[bool, str]:
    """Whether one (non-empty, relevant) CAA set lets `ca_identity` issue by HTTP-01."""
    for record in records:
        if record.flags & CAA_CRITICAL and record.tag.lower() not in KNOWN_CAA_TAGS:
            return False, f"the critical property {record.tag!r} is not understood by CAs"
    issue = [record for record in records if record.tag.lower() == "issue"]
    if not issue:
        return True, "no issue property restricts issuance"
    named = []
    for record in issue:
        issuer, parameters = parse_issue_value(record.value)
        named.append(issuer or "nobody")
        if issuer != ca_identity.lower():
            continue
        methods = parameters.get("validationmethods")
        if methods is not None and "http-01" not in [m.strip() for m in methods.split(",")]:
            return False, (f"{issuer} is allowed only with validationmethods={methods}, "
                           "and certificates here are validated by http-01")
        return True, f"issue names {issuer}"
    return False, f"only {', '.join(sorted(set(named)))} may issue"


def parse_issue_value(value: str) -> tuple[str, dict[str, str]]:
    """`issuer-domain-name; key=value; ...` → (lower-case issuer or "", parameters)."""
    issuer, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    for item in rest.split(";"):
        key, sep, val = item.strip().partition("=")
        if sep and key.strip():
            parameters[key.strip().lower()] = val.strip().lower()
    return issuer.strip().lower().rstrip("."), parameters


def caa_owners(name: str) -> tuple[str, ...]:
    """The name and each ancestor up to (not including) the root, closest first."""
    labels = name.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


def chain_of(description: str) -> list[str]:
    """The names in a `Verified.description` (as stored in `dns_chain`)."""
    return description.split(" [", 1)[0].split(" -> ")


def arrow(chain: Sequence[str]) -> str:
    return " -> ".join(chain)


def listing(addresses: frozenset[str]) -> str:
    return ", ".join(sorted(addresses)) or "no addresses"
