"""A labelled corpus of click streams, played against the real services over HTTP, scored.

The streams follow what is published about mail scanners and people
(docs/classification.md):

- scanners fetch every link of a message (the hidden honeypot among them, when the
  campaign has one) within seconds, mostly seconds after the send, usually with a
  browser's user agent. Kinds: `listed` (from a network in the operator's scanner file:
  Microsoft's, Mimecast's), `vendor-agent` (its own user agent), `nat-gateway` (an
  on-premises gateway fetching from the company's NAT address, which its people share),
  `head` (HEAD requests), `late-rescan` (a re-scan long after the send, from an unlisted
  address), `one-link` (fetches only the first link: the miss this design accepts);
- people open one or two links (rarely the same link twice in a row), minutes to days
  after the send, from browsers; `corporate` people sit behind the NAT address their
  gateway scans from, minutes after it did; `consumer` people have no gateway; a few
  `quick` people click within a minute of the send.

Time is scaled by `scale` (0.1: a minute plays in six seconds) so a corpus plays in
seconds; the services must run with their thresholds scaled alike (`service_settings`).
Labels are matched back to rows by recipient, link, address, agent and method, in
time order (two fetches of one such key are always seconds apart).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shared.links import LinkSigner

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
VENDOR_AGENTS = ("Mozilla/5.0 (compatible; Barracuda Sentinel)",
                 "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
                 "Mimecast Link Scanner")
# Ranges the corpus's scanner file lists (as an operator would, from the vendors' pages).
LISTED = {"microsoft": "40.92.0.0/15", "mimecast": "205.139.110.0/24"}
SCANNER_FILE = "".join(f"{cidr} {label}\n" for label, cidr in LISTED.items())
CONSUMERS = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: phones, homes
COMPANIES = ipaddress.ip_network("198.18.0.0/15")  # one NAT address per company
UNLISTED_CLOUD = ipaddress.ip_network("203.0.113.0/24")
MINUTE = 60.0


@dataclass(frozen=True)
class Fetch:
    at: float  # seconds after the play starts
    token: str
    url: str
    recipient: str
    ip: str
    user_agent: str
    method: str
    scanner: bool  # the label
    kind: str


@dataclass
class Corpus:
    fetches: list[Fetch]
    start: float  # Unix time the play starts at (the links' `t` count from it)
    scale: float

    @property
    def duration_s(self) -> float:
        return max((f.at for f in self.fetches), default=0.0)


def service_settings(scale: float) -> dict[str, str]:
    """The classification settings, scaled like the corpus (defaults at scale 1)."""
    return {"BOT_SOON_AFTER_SEND_S": f"{60 * scale:g}", "BOT_BURST_WINDOW_S": f"{10 * scale:g}",
            "BOT_HONEYPOT_WINDOW_S": f"{30 * scale:g}", "BOT_SETTLE_S": f"{60 * scale:g}"}


@dataclass
class _Builder:
    signer: LinkSigner
    rng: random.Random
    scale: float
    start: float
    span_s: float
    gap_min: tuple[float, float]
    fetches: list[Fetch] = field(default_factory=list)

    def message(self, campaign: str, recipient: str, sent_at: float,
                honeypot: bool) -> list[tuple[str, str]]:
        """The (token, url) of each link of one message, the honeypot last."""
        count = self.rng.randint(3, 8)
        links = []
        for n in range(count + (1 if honeypot else 0)):
            trap = n == count
            url = (f"https://shop.example/{campaign}/{'pixel.gif' if trap else f'item-{n}'}"
                   f"?r={recipient}")
            links.append((self.signer.mint_token(
                customer_id="corpus", campaign_id=campaign, recipient_id=recipient, url=url,
                minted_at=int(sent_at), honeypot=trap), url))
        return links

    def add(self, at: float, link: tuple[str, str], recipient: str, ip: str, agent: str,
            method: str, scanner: bool, kind: str) -> None:
        self.fetches.append(Fetch(at, link[0], link[1], recipient, ip, agent, method,
                                  scanner, kind))

    def scan(self, kind: str, links: list[tuple[str, str]], recipient: str, at: float,
             ip: str) -> None:
        agent = self.rng.choice(VENDOR_AGENTS if kind == "vendor-agent" else BROWSERS)
        method = "HEAD" if kind == "head" else "GET"
        chosen = links[:1] if kind == "one-link" else self.rng.sample(links, len(links))
        for link in chosen:
            self.add(at, link, recipient, ip, agent, method, True, kind)
            at += self.rng.uniform(0.05, 0.8) * self.scale  # all within seconds

    def person(self, kind: str, links: list[tuple[str, str]], recipient: str, at: float,
               ip: str) -> None:
        agent = self.rng.choice(BROWSERS)
        visible = [link for link in links if "pixel.gif" not in link[1]]
        first = self.rng.choice(visible)
        self.add(at, first, recipient, ip, agent, "GET", False, kind)
        roll = self.rng.random()
        if roll < 0.05:  # a double click on the same link
            self.add(at + self.rng.uniform(0.3, 1.0) * self.scale, first, recipient, ip, agent,
                     "GET", False, kind)
        elif roll < 0.35:  # a second link, minutes later
            second = self.rng.choice([link for link in visible if link != first])
            self.add(at + self.rng.uniform(*self.gap_min) * MINUTE * self.scale, second,
                     recipient, ip, agent, "GET", False, kind)


def generate(signer: LinkSigner, *, recipients: int, scale: float, span_s: float,
             seed: int = 15, start: float | None = None,
             gap_min: tuple[float, float] = (1, 6)) -> Corpus:
    """`recipients` recipients over two campaigns (one hides a honeypot link in each
    message), their scanners' and their own fetches from 0 to `span_s` seconds (and a
    person's `gap_min` minutes, scaled, after the scan or their first click)."""
    rng = random.Random(seed)
    start = time.time() + 2.0 if start is None else start
    build = _Builder(signer, rng, scale, start, span_s, gap_min)
    company_ips = [str(COMPANIES[i * 7 + 1]) for i in range(max(1, recipients // 8))]
    for number in range(recipients):
        recipient = f"rcpt-{number:05d}"
        campaign = "spring-honeypot" if number % 2 == 0 else "spring-plain"
        offset = rng.uniform(0, span_s)
        roll = rng.random()
        if roll < 0.5:  # behind a mail gateway (a company)
            scanner_delay = rng.uniform(1, 20) * scale  # seconds after the send
            kind = rng.choices(["listed", "vendor-agent", "nat-gateway", "head",
                                "late-rescan", "one-link"], [30, 15, 30, 8, 12, 5])[0]
            if kind == "late-rescan":
                scanner_delay = rng.uniform(10, 60) * MINUTE * scale
            sent_at = start + offset - scanner_delay
            links = build.message(campaign, recipient, sent_at, honeypot=number % 2 == 0)
            nat = rng.choice(company_ips)
            if kind == "listed":
                label = rng.choice(sorted(LISTED))
                network = ipaddress.ip_network(LISTED[label])
                ip = str(network[rng.randrange(1, network.num_addresses - 1)])
            elif kind == "nat-gateway":
                ip = nat
            else:
                ip = str(UNLISTED_CLOUD[rng.randrange(1, 255)])
            build.scan(kind, links, recipient, offset, ip)
            if rng.random() < 0.6:  # the person behind it, minutes later, same NAT
                build.person("corporate", links, recipient,
                             offset + rng.uniform(*gap_min) * MINUTE * scale, nat)
        else:
            quick = rng.random() < 0.05
            delay = (rng.uniform(5, 55) if quick
                     else rng.choice([rng.uniform(2, 59) * MINUTE,
                                      rng.uniform(1, 23) * 3600,
                                      rng.uniform(1, 6) * 86400])) * scale
            links = build.message(campaign, recipient, start + offset - delay,
                                  honeypot=number % 2 == 0)
            ip = str(CONSUMERS[rng.randrange(1, CONSUMERS.num_addresses - 1)])
            build.person("quick" if quick else "consumer", links, recipient, offset, ip)
    build.fetches.sort(key=lambda f: f.at)
    return Corpus(build.fetches, start, scale)


async def play(corpus: Corpus, base_url: str, host: str, *, concurrency: int = 32) -> int:
    """Make every fetch at its time (through a trusted proxy's X-Forwarded-For); returns
    how many were answered 302. Any other answer is an error: scanners and people must
    get the same redirect."""
    limit = asyncio.Semaphore(concurrency)
    answers: Counter[int] = Counter()

    async def one(session: aiohttp.ClientSession, fetch: Fetch) -> None:
        delay = corpus.start + fetch.at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with limit, session.request(
                fetch.method, f"{base_url}/t/{fetch.token}", allow_redirects=False,
                headers={"Host": host, "User-Agent": fetch.user_agent,
                         "X-Forwarded-For": fetch.ip}) as response:
            answers[response.status] += 1
            if response.status != 302 or response.headers.get("Location") != fetch.url:
                raise RuntimeError(f"{fetch.kind} fetch got {response.status}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, fetch) for fetch in corpus.fetches))
    return answers[302]


@dataclass
class Score:
    """The confusion matrix (truth by verdict), and by kind."""

    matrix: Counter[tuple[bool, bool]]  # (scanner, flagged) -> clicks
    kinds: dict[str, Counter[bool]]  # kind -> flagged -> clicks
    reasons: Counter[str]  # reason -> flagged clicks that have it

    @property
    def scanners_flagged(self) -> float:
        total = self.matrix[True, True] + self.matrix[True, False]
        return self.matrix[True, True] / total if total else 1.0

    @property
    def people_flagged(self) -> float:
        total = self.matrix[False, True] + self.matrix[False, False]
        return self.matrix[False, True] / total if total else 0.0

    def markdown(self) -> str:
        m = self.matrix
        lines = ["| truth | flagged bot | left human | flagged |", "| --- | ---: | ---: | ---: |",
                 f"| scanner clicks | {m[True, True]} | {m[True, False]} | "
                 f"{self.scanners_flagged:.1%} |",
                 f"| human clicks | {m[False, True]} | {m[False, False]} | "
                 f"{self.people_flagged:.1%} |", "", "| kind | clicks | flagged bot |",
                 "| --- | ---: | ---: |"]
        for kind in sorted(self.kinds):
            counts = self.kinds[kind]
            lines.append(f"| {kind} | {counts[True] + counts[False]} | {counts[True]} |")
        return "\n".join(lines)


def score(corpus: Corpus, rows: Sequence[Mapping[str, Any]]) -> Score:
    """Match each stored row to its fetch (same recipient, link, address, agent and
    method; in time order) and count verdicts against labels."""
    def key(recipient: str, url: str, ip: str, agent: str, method: str) -> tuple[str, ...]:
        return (recipient, url, ip, agent, method)

    labels: dict[tuple[str, ...], list[Fetch]] = defaultdict(list)
    for fetch in corpus.fetches:  # already in time order
        labels[key(fetch.recipient, fetch.url, fetch.ip, fetch.user_agent,
                   fetch.method)].append(fetch)
    stored: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["clicked_at"]):
        stored[key(row["recipient_id"], row["url"], row["ip"], row["user_agent"],
                   row["method"])].append(row)
    if {k: len(v) for k, v in labels.items()} != {k: len(v) for k, v in stored.items()}:
        raise RuntimeError("the stored clicks do not match the corpus's fetches")
    matrix: Counter[tuple[bool, bool]] = Counter()
    kinds: dict[str, Counter[bool]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for k, fetches in labels.items():
        for fetch, row in zip(fetches, stored[k], strict=True):
            flagged = bool(row["bot"])
            matrix[fetch.scanner, flagged] += 1
            kinds[fetch.kind][flagged] += 1
            if flagged:
                reasons.update((row["reasons"] or "").split(","))
    return Score(matrix, dict(kinds), reasons)


def write_scanner_file(path: Path, extra: int = 0) -> Path:
    """The corpus's listed networks, and `extra` more /24s (a file as long as a real one:
    the vendors' lists run to hundreds of ranges)."""
    rng = random.Random(15)
    more = "".join(
        f"{ipaddress.ip_address((rng.randrange(1, 223) << 24) | (rng.randrange(1 << 16) << 8))}"
        f"/24 vendor-{n % 7}\n" for n in range(extra))
    path.write_text("# the corpus's listed scanner networks\n" + SCANNER_FILE + more)
    return path
