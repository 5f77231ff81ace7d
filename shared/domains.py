"""Host-name rules: one normal form for every domain the system stores or compares.

Tracking domains arrive from customers in every spelling (`Track.Example.COM.`,
Unicode, with a port). Stored names, the redirector's host lookups and the
verifier's DNS queries all use the form returned by `normalise_domain`:
lower-case A-labels (punycode), no trailing dot.

`registered_domain` groups names the way blocklists and Let's Encrypt do, with the
Public Suffix List shipped in the `publicsuffixlist` package (never fetched at run time).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

import idna
from publicsuffixlist import PublicSuffixList

MAX_NAME_LENGTH = 253
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidDomain(ValueError):
    """The name cannot be a tracking domain; the message says why, for the customer."""


def normalise_domain(name: str, *, allow_single_label: bool = False) -> str:
    """Return the canonical A-label form of `name`, or raise `InvalidDomain`.

    `allow_single_label` admits names like `localhost` (the platform host in development).
    """
    candidate = name.strip()
    if not candidate:
        raise InvalidDomain("the name is empty")
    if candidate.endswith("."):
        candidate = candidate[:-1]
    if any(ch.isspace() for ch in candidate) or "/" in candidate or ":" in candidate:
        raise InvalidDomain(f"{name!r} is not a bare host name (no spaces, ports or paths)")
    if "*" in candidate:
        raise InvalidDomain(f"{name!r} is a wildcard; give one exact host name")
    try:
        ipaddress.ip_address(candidate.strip("[]"))
    except ValueError:
        pass
    else:
        raise InvalidDomain(f"{name!r} is an IP address; a tracking domain must be a host name")
    if candidate.isascii() and "xn--" not in candidate.lower():
        ascii_name = candidate.lower()
    else:
        try:
            ascii_name = idna.encode(candidate, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidDomain(f"{name!r} is not a valid internationalised name: {exc}") from None
    if len(ascii_name) > MAX_NAME_LENGTH:
        raise InvalidDomain(f"the name is {len(ascii_name)} characters; at most 253 are allowed")
    labels = ascii_name.split(".")
    if len(labels) < 2 and not allow_single_label:
        raise InvalidDomain(f"{name!r} has no dot; use a full name such as track.example.com")
    for label in labels:
        if not label:
            raise InvalidDomain(f"{name!r} has an empty label (two dots in a row?)")
        if not _LABEL_RE.match(label):
            raise InvalidDomain(
                f"label {label!r} must be 1-63 letters, digits or hyphens, "
                "not starting or ending with a hyphen"
            )
    if labels[-1].isdigit():
        raise InvalidDomain(f"{name!r} ends in a number; that is not a domain")
    return ascii_name


def host_from_header(host_header: str) -> str:
    """The host part of an HTTP Host header, lower-cased, port and trailing dot removed.

    Cheap on purpose (it runs on every click): no IDNA, no validation. A host that
    is not in normal form simply matches no tracking domain.
    """
    host = host_header
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    colon = host.rfind(":")
    if colon != -1:
        host = host[:colon]
    if host.endswith("."):
        host = host[:-1]
    return host.lower()


def platform_host_of(name: str, hosts: Iterable[str]) -> str | None:
    """The first of `hosts` (the platform's own names) that `name` is or is under; such a
    name can never be a customer's tracking domain."""
    return next((host for host in hosts if name == host or name.endswith("." + host)), None)


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Parsed on first use (a few tens of ms), not at import.
    return PublicSuffixList()


def registered_domain(name: str) -> str:
    """The registered domain of `name`: its public suffix plus one label, as an A-label
    name (`track.shop.co.uk` -> `shop.co.uk`, `Track.Bücher.example` ->
    `xn--bcher-kva.example`), so U-label and A-label spellings group together.

    The Public Suffix List is used whole, private section included (`a.github.io` ->
    `a.github.io`): that is the list Let's Encrypt counts its certificates-per-registered-
    domain limit by, and SURBL and URIBL likewise treat shared-hosting domains as
    suffixes in their own multi-level lists, so for them it is the best approximation a
    maintained list gives. An unknown TLD counts as a one-label suffix (`a.b.test` ->
    `b.test`). A name that is itself a public suffix, or has one label, is its own
    registered domain (nothing smaller can be grouped).
    """
    try:
        ascii_name = normalise_domain(name, allow_single_label=True)
    except InvalidDomain:
        ascii_name = name.strip().lower().rstrip(".")
    return _public_suffixes().privatesuffix(ascii_name) or ascii_name
