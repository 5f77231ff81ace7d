"""`ReputationEngine`: names looked up on DNS blocklists, as every reputation watch asks.

One engine serves the tracking-domain watch and the destination watch alike, so the
rules that keep the lists' free tiers usable hold for both:

- the question is the list's (`BlockList.query_name`): DBL the full host name, SURBL
  and URIBL the registered domain, so `a.shop.example` and `b.shop.example` cost one
  SURBL question between them (`lookup_many` deduplicates; concurrent callers asking
  the same question share one answer in flight);
- a listed or not-listed answer is reused for its TTL (at most `max_cache_s`); a
  refusal or an error never is;
- each list has a daily budget of questions (UTC days), retries included, that is
  never exceeded: once it is spent the lookup answers `BUDGET_SPENT` (an error, never a
  verdict) without asking; `budget_left` lets a schedule stretch instead;
- at most `concurrency` questions are out at once, across all lists;
- SERVFAIL, a timeout or any other failed answer is asked again (`attempts` in all,
  `retry_delay_s` apart, the next server each time) and, if it keeps failing, stays an
  error: never counted as listed nor as clean.

Construct it with the dnspython adapter (or any object with `ask`), the configured lists
and the budget:

    resolver = DnspythonListResolver((("127.0.0.1", 53),), timeout_s=2.0)
    engine = ReputationEngine(resolver, parse_lists(None), daily_budget=250_000)
    found = await engine.lookup_many(engine.lists[0], ["track.shop.example"])
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.verifier.reputation.blocklists import (
    NOERROR,
    NXDOMAIN,
    BlockList,
    Control,
    Kind,
    Status,
    Verdict,
    controls,
    decode,
)
from services.verifier.reputation.dnspython import RawAnswer
from shared.domains import InvalidDomain

DEFAULT_DAILY_BUDGET = 250_000
DEFAULT_CONCURRENCY = 32
DEFAULT_ATTEMPTS = 3
DEFAULT_MAX_CACHE_S = 3600.0
BUDGET_SPENT = Verdict(Status.ERROR, raw=("BUDGET",),
                       detail="the list's daily query budget is spent; asked again tomorrow")
CACHED_STATUSES = (Status.LISTED, Status.NOT_LISTED)


class ListResolver(Protocol):
    """What the engine needs of DNS: one question to one server, the answer as received."""

    async def ask(self, qname: str) -> RawAnswer: ...


@dataclass(frozen=True)
class Lookup:
    """One name on one list: the question asked, the verdict, and whether it was reused."""

    blocklist: BlockList
    name: str
    query_name: str
    verdict: Verdict
    cached: bool = False

    @property
    def status(self) -> Status:
        return self.verdict.status


@dataclass(frozen=True)
class ControlRound:
    """The list's answers to its positive and negative controls this round."""

    blocklist: BlockList
    passed: bool
    verdicts: dict[str, Verdict]

    @property
    def why(self) -> str:
        """For the operator: which control came back wrong, and as what."""
        wrong = [f"{name} answered {verdict.status.value}"
                 + (f" ({verdict.detail})" if verdict.detail else "")
                 for name, verdict in self.verdicts.items()
                 if not _control(self.blocklist.kind, name).passes(verdict)]
        return "; ".join(wrong)


def _control(kind: Kind, name: str) -> Control:
    return next(control for control in controls(kind) if control.name == name)


class DailyBudget:
    """Questions a list may still be asked today (UTC); `take` never lets it go below 0."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._day = self._today()
        self.spent = 0

    def _today(self) -> int:
        return int(self._clock() // 86400)

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self.spent = today, 0

    @property
    def left(self) -> int:
        self._roll()
        return max(0, self.limit - self.spent)

    def seconds_to_reset(self) -> float:
        """Until the next UTC midnight, when the budget is whole again."""
        return (self._today() + 1) * 86400 - self._clock()

    def take(self) -> bool:
        """One question's worth, if any is left."""
        self._roll()
        if self.spent >= self.limit:
            return False
        self.spent += 1
        return True


@dataclass
class _Cached:
    verdict: Verdict
    expires_at: float


@dataclass
class EngineStats:
    """Counters for tests, the benchmark and metrics: questions sent, answers reused."""

    queries: Counter[str] = field(default_factory=Counter)  # by list kind
    cache_hits: Counter[str] = field(default_factory=Counter)
    budget_refusals: Counter[str] = field(default_factory=Counter)


class ReputationEngine:
    """Lookups on the configured lists, cached, deduplicated, budgeted and bounded."""

    def __init__(self, resolver: ListResolver, lists: Sequence[BlockList], *,
                 daily_budget: int = DEFAULT_DAILY_BUDGET,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 attempts: int = DEFAULT_ATTEMPTS,
                 retry_delay_s: float = 0.5,
                 max_cache_s: float = DEFAULT_MAX_CACHE_S,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if attempts < 1 or concurrency < 1 or daily_budget < 0:
            raise ValueError("attempts and concurrency must be >= 1, the budget >= 0")
        self.lists = tuple(lists)
        self.stats = EngineStats()
        self._resolver = resolver
        self._attempts = attempts
        self._retry_delay_s = retry_delay_s
        self._max_cache_s = max_cache_s
        self._clock = clock
        self._sleep = sleep
        self._limit = asyncio.Semaphore(concurrency)
        self._budgets = {blocklist.kind: DailyBudget(daily_budget, clock)
                         for blocklist in self.lists}
        self._cache: dict[str, _Cached] = {}
        self._in_flight: dict[tuple[str, bool], asyncio.Future[Verdict]] = {}

    # --- budget ---------------------------------------------------------------------

    def budget(self, blocklist: BlockList) -> DailyBudget:
        return self._budgets[blocklist.kind]

    def budget_left(self, blocklist: BlockList) -> int:
        """Questions `blocklist` may still be asked today."""
        return self.budget(blocklist).left

    def query_names(self, blocklist: BlockList, names: Iterable[str]) -> set[str]:
        """The distinct questions `names` cost on `blocklist` (before the cache): what a
        round must be able to afford."""
        found = set()
        for name in names:
            try:
                found.add(blocklist.query_name(name))
            except InvalidDomain:
                continue
        return found

    def cached(self, blocklist: BlockList, name: str) -> bool:
        """Whether `name`'s answer on `blocklist` would come from the cache now."""
        try:
            qname = blocklist.query_name(name)
        except InvalidDomain:
            return False
        entry = self._cache.get(qname)
        return entry is not None and entry.expires_at > self._clock()

    # --- lookups --------------------------------------------------------------------

    async def lookup(self, blocklist: BlockList, name: str, *, fresh: bool = False) -> Lookup:
        """`name` on `blocklist`; `fresh` skips the cache (the controls must be asked)."""
        try:
            qname = blocklist.query_name(name)
        except InvalidDomain as exc:
            return Lookup(blocklist, name, "", Verdict(Status.ERROR, detail=str(exc)))
        return await self._lookup(blocklist, name, qname, fresh=fresh)

    async def _lookup(self, blocklist: BlockList, name: str, qname: str, *,
                      fresh: bool) -> Lookup:
        if not fresh:
            entry = self._cache.get(qname)
            if entry is not None and entry.expires_at > self._clock():
                self.stats.cache_hits[blocklist.kind] += 1
                return Lookup(blocklist, name, qname, entry.verdict, cached=True)
        key = (qname, fresh)
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(blocklist, qname))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda _f: self._in_flight.pop(key, None))
        # shield: one caller cancelled must not cancel the answer others wait for.
        verdict = await asyncio.shield(pending)
        return Lookup(blocklist, name, qname, verdict)

    async def lookup_many(self, blocklist: BlockList, names: Iterable[str], *,
                          fresh: bool = False) -> dict[str, Lookup]:
        """Every name on `blocklist`, one question per distinct query name; by name."""
        unique = list(dict.fromkeys(names))
        results = await asyncio.gather(*(self.lookup(blocklist, name, fresh=fresh)
                                         for name in unique))
        return dict(zip(unique, results, strict=True))

    async def run_controls(self, blocklist: BlockList) -> ControlRound:
        """Ask the list's positive and negative controls afresh: whether its answers
        through this resolver can be believed this round."""
        # Asked as documented, host parts and all (`test.surbl.org.<zone>`): the test
        # entries are the exception to SURBL's and URIBL's registered-domain rule.
        asked = await asyncio.gather(*(
            self._lookup(blocklist, control.name, f"{control.name}.{blocklist.zone}",
                         fresh=True)
            for control in controls(blocklist.kind)))
        verdicts = {lookup.name: lookup.verdict for lookup in asked}
        passed = all(control.passes(verdicts[control.name])
                     for control in controls(blocklist.kind))
        return ControlRound(blocklist, passed, verdicts)

    async def _resolve(self, blocklist: BlockList, qname: str) -> Verdict:
        """Ask until an answer that means something, or the attempts or budget run out."""
        kind = blocklist.kind
        verdict = BUDGET_SPENT
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._retry_delay_s * attempt)
            if not self._budgets[kind].take():
                self.stats.budget_refusals[kind] += 1
                return verdict
            async with self._limit:
                self.stats.queries[kind] += 1
                answer = await self._resolver.ask(qname)
            verdict = decode(kind, answer.rcode, answer.addresses)
            if answer.rcode in (NOERROR, NXDOMAIN):
                # A definite answer (listed, clean, refused or an undocumented address):
                # asking again would cost budget and say the same.
                if verdict.status in CACHED_STATUSES and answer.ttl_s > 0:
                    self._store(qname, verdict, answer.ttl_s)
                return verdict
        return verdict

    def _store(self, qname: str, verdict: Verdict, ttl_s: float) -> None:
        now = self._clock()
        if len(self._cache) > 200_000:  # drop what has expired before growing further
            self._cache = {k: v for k, v in self._cache.items() if v.expires_at > now}
        self._cache[qname] = _Cached(verdict, now + min(ttl_s, self._max_cache_s))
