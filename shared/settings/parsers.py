"""Typed parsers for settings: text (already stripped) in, a value out, or `Invalid`.

Every message here is what follows the variable's name, which the `Setting` puts in
front ("must be a whole number, got 'x'"). Lists are comma-separated, each item
stripped, and empty items are skipped (a trailing comma is harmless); only LINK_KEYS,
whose messages number its entries, refuses an empty one.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
import shlex
from pathlib import Path
from typing import TypeVar

from shared.domains import InvalidDomain, normalise_domain
from shared.settings.declare import Invalid, Parser

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# What turns an optional service off (METRICS_BIND), blank included.
_OFF = frozenset({"", "off", "none", "no", "false", "0"})


def items(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [item for item in (part.strip() for part in text.split(",")) if item]


def string(text: str) -> str:
    return text


def path(text: str) -> Path:
    return Path(text)


def matching(pattern: str, description: str) -> Parser[str]:
    """Text matching `pattern` in full, described as `description` when it does not."""
    compiled = re.compile(pattern)

    def parse(text: str) -> str:
        if not compiled.fullmatch(text):
            raise Invalid(f"must be {description}, got {text!r}")
        return text

    return parse


def choice(*options: str) -> Parser[str]:
    """One of `options`, in any letter case; the option as written there."""
    by_upper = {option.upper(): option for option in options}

    def parse(text: str) -> str:
        if text.upper() not in by_upper:
            raise Invalid(f"must be one of {', '.join(options)}, got {text!r}")
        return by_upper[text.upper()]

    return parse


def whole(minimum: int = 0) -> Parser[int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise Invalid(f"must be a whole number, got {text!r}") from None
        if number < minimum:
            raise Invalid(f"must be at least {minimum}, got {number}")
        return number

    return parse


def number(minimum: float = 0.0) -> Parser[float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {text!r}")
        if value < minimum:
            raise Invalid(f"must be at least {minimum}, got {value}")
        return value

    return parse


def flag(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off, in any letter case; anything else is refused
    (a typo must not silently mean "off")."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise Invalid(f"must be 1 or 0 (or true/false, yes/no, on/off), got {text!r}")


def host_port(text: str) -> tuple[str, int]:
    """`host:port`, `[ipv6]:port`."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if (not sep or not host or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise Invalid(f"must be host:port (e.g. 127.0.0.1:8080), got {text!r}")
    return host, int(port)


def or_off(parser: Parser[T], off_means: str) -> Parser[T | None]:
    """`None` for blank, `off`, `none`, `no`, `false` or `0` (which `off_means`);
    else `parser`'s value."""

    def parse(text: str) -> T | None:
        if text.lower() in _OFF:
            return None
        try:
            return parser(text)
        except Invalid as exc:
            raise Invalid(f"{exc} (or 'off' to {off_means})") from None

    return parse


def networks(text: str) -> tuple[Network, ...]:
    """IP addresses or CIDR ranges (host bits allowed: `10.1.2.3/16` is `10.1.0.0/16`)."""
    found = []
    for item in items(text):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise Invalid(
                f"must be comma-separated IP addresses or CIDR ranges, got {item!r}") from None
    return tuple(found)


def delays_ms(text: str) -> tuple[int, ...]:
    """Retry tiers: strictly increasing positive milliseconds. Each tier is a queue
    named after its delay, so a repeated delay is a mistake, not a second tier."""
    try:
        delays = tuple(int(item) for item in items(text))
    except ValueError:
        raise Invalid(f"must be comma-separated milliseconds, got {text!r}") from None
    if not delays or delays[0] <= 0 or any(a >= b for a, b in itertools.pairwise(delays)):
        raise Invalid(f"must be increasing positive milliseconds, got {text!r}")
    return delays


def nameservers(text: str) -> tuple[tuple[str, int], ...]:
    """`ip`, `ip:port`, `ipv6` or `[ipv6]:port` resolvers; port 53 unless given."""
    servers = []
    for item in items(text):
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            raise Invalid("entries must be ip or ip:port (e.g. 127.0.0.1:5353), "
                          f"got {item!r}") from None
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise Invalid(f"entry {item!r} has a bad port")
        servers.append((address, int(port)))
    return tuple(servers)


def host_name(text: str) -> str:
    """A host name in its normal form (lower case, IDNA, no final dot); one label is
    enough (`localhost`), an address is not a name."""
    try:
        return normalise_domain(text, allow_single_label=True)
    except InvalidDomain as exc:
        raise Invalid(f"is not a valid host name: {exc}") from None


def host_names(text: str) -> tuple[str, ...]:
    """Host names as `host_name` reads them, none twice."""
    names: list[str] = []
    for item in items(text):
        try:
            name = host_name(item)
        except Invalid as exc:
            raise Invalid(f"entry {item!r} {exc}") from None
        if name in names:
            raise Invalid(f"names {name} twice")
        names.append(name)
    return tuple(names)


def command(text: str) -> tuple[str, ...]:
    """A command line, split as a POSIX shell would (quotes kept together)."""
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise Invalid(f"is not a valid command line: {exc}") from None

