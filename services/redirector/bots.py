"""Recognising clicks that no person made: flagged with every reason, never dropped.

Mail security gateways fetch every link in a message before the recipient sees
it; counting those as clicks inflates campaign figures, losing them loses the
audit trail. So each click carries all its `reasons` and the verdict `bot`
(shared/bot_verdict.py), and reports choose. Only what one click shows is found
here; the classifier service adds what several clicks show. None of it changes
the answer: a scanner gets the same 302 as a person.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shared.bot_verdict import (
    HEAD_REQUEST,
    HONEYPOT,
    NO_USER_AGENT,
    SCANNER_NETWORK,
    SOON_AFTER_SEND,
    USER_AGENT,
    Verdict,
)
from shared.links import Link

# Link scanners and previewers seen on email links, then generic automation.
_SCANNERS = re.compile(
    r"(?P<name>barracuda|proofpoint|mimecast|urldefense|safelinks|trend ?micro|symantec"
    r"|forcepoint|ironport|cisco|fortinet|sophos|bitdefender|kaspersky|zscaler|checkpoint"
    r"|microsoft office|ms-office|outlook-(?:ios|android)|googleimageproxy"
    r"|facebookexternalhit|slackbot|twitterbot|linkedinbot|whatsapp|telegrambot|discordbot"
    r"|skypeuripreview|googlebot|bingbot|yandexbot|applebot|duckduckbot|baiduspider"
    r"|headlesschrome|phantomjs|python-requests|python-urllib|aiohttp|httpx|curl|wget"
    r"|go-http-client|okhttp|java/|libwww-perl|apache-httpclient|node-fetch|axios"
    r"|bot\b|crawler|spider|scanner|preview)",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def request_reasons(method: str, user_agent: str | None) -> tuple[str, ...]:
    """What the method and the user agent say (all of it). Cached: agents repeat."""
    reasons: tuple[str, ...] = ()
    if method != "GET":
        reasons = (HEAD_REQUEST,)  # only GET and HEAD reach a link
    if not user_agent:
        return (*reasons, NO_USER_AGENT)
    match = _SCANNERS.search(user_agent)
    if match:
        return (*reasons, f"{USER_AGENT}:" + match.group("name").lower().rstrip("/"))
    return reasons


class ScannerNetworksError(ValueError):
    """The scanner networks file cannot be read, or a line of it is not a network."""


class ScannerNetworks:
    """The operator's list of networks mail scanners fetch from (a CIDR file), by address.

    Lookups bisect sorted ranges (hundreds of vendor ranges cost a few comparisons) and
    are cached: scanners come back from the same few addresses.
    """

    def __init__(self, networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                             str | None]]) -> None:
        self.count = len(networks)
        # Per IP version: range starts (sorted), ends, labels, and the largest end so far
        # (a nested range hides no wider one to its left).
        self._tables: dict[int, tuple[list[int], list[int], list[str | None], list[int]]] = {}
        for version in (4, 6):
            ranges = sorted((int(net.network_address), int(net.broadcast_address), label)
                            for net, label in networks if net.version == version)
            reach, widest = [], -1
            for _, end, _ in ranges:
                widest = max(widest, end)
                reach.append(widest)
            self._tables[version] = ([r[0] for r in ranges], [r[1] for r in ranges],
                                     [r[2] for r in ranges], reach)
        self.label = lru_cache(maxsize=65536)(self._label)

    @classmethod
    def from_file(cls, path: Path | None) -> ScannerNetworks:
        """`CIDR [label]` per line; `#` starts a comment; blank lines are skipped."""
        if path is None:
            return cls([])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScannerNetworksError(f"{path}: {exc}") from None
        networks = []
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) > 2 or (len(words) == 2 and not re.fullmatch(r"[a-z0-9._-]{1,40}",
                                                                     words[1])):
                raise ScannerNetworksError(f"{path}:{number}: expected `CIDR [label]`, the "
                                           "label 1-40 of a-z 0-9 . _ -")
            try:
                network = ipaddress.ip_network(words[0], strict=False)
            except ValueError as exc:
                raise ScannerNetworksError(f"{path}:{number}: {exc}") from None
            networks.append((network, words[1] if len(words) == 2 else None))
        return cls(networks)

    def _label(self, address: str | None) -> str | None:
        """The reason for an address in a listed network (with its label), else None."""
        if not self.count or not address:
            return None
        # inet_pton, not ipaddress: a tenth of the cost, and most people's addresses are
        # new to the cache.
        version, family = (6, socket.AF_INET6) if ":" in address else (4, socket.AF_INET)
        try:
            value = int.from_bytes(socket.inet_pton(family, address), "big")
        except OSError:
            return None
        starts, ends, labels, reach = self._tables[version]
        index = bisect.bisect_right(starts, value) - 1
        while index >= 0 and reach[index] >= value:
            if ends[index] >= value:
                label = labels[index]
                return SCANNER_NETWORK if label is None else f"{SCANNER_NETWORK}:{label}"
            index -= 1
        return None


@dataclass(frozen=True)
class ClickReasons:
    """Everything one click shows, and its verdict: built once at start."""

    networks: ScannerNetworks = field(default_factory=lambda: ScannerNetworks([]))
    soon_after_send_s: float = 60.0
    verdict: Verdict = field(default_factory=Verdict)

    def of(self, method: str, user_agent: str | None, ip: str | None, link: Link,
           now: float) -> tuple[str, ...]:
        """The click's reasons, strongest first (the order of shared/bot_verdict.py)."""
        reasons = request_reasons(method, user_agent)
        network = self.networks.label(ip)
        if network is not None:
            reasons = (*reasons, network)
        if link.honeypot:
            reasons = (*reasons, HONEYPOT)
        minted_at = link.minted_at
        if minted_at is not None and now - minted_at <= self.soon_after_send_s:
            reasons = (*reasons, SOON_AFTER_SEND)
        return reasons
