"""The tracking-domain reputation watch: every watched name on every list, on a schedule.

Watched: verified and active tracking domains, the platform host and its aliases. Each
pass (every `poll_s`, jittered) a replica:

1. adds a row per new watched name and list, due at once (so a domain is looked up
   within one pass of its first verification), and drops the rows of names no longer
   watched;
2. per list, claims the rows that are due, moving each one's next lookup an interval on
   (jittered; a new name's first interval is spread over the whole interval so that a
   crowd verified together does not come back together);
3. asks the list's controls (its documented test entry must come back listed, `invalid`
   must not). A list that fails them is unusable from this resolver: the round's
   lookups on it are discarded (looked at again next pass), and the operator is told
   (`tracking_reputation_list_unusable`, the alert, a `reputation.list_unusable` log
   line). Customers are told nothing;
4. looks the names up (`ReputationEngine`: cached, deduplicated, budgeted) and stores
   each verdict; a change publishes `domain.listed` / `domain.delisted` first, then is
   written (at least once: if the write fails the next pass publishes again). A refusal
   or an error is never a verdict: the row is looked at again sooner.

The daily budget stretches the schedule: a list's interval is at least long enough for
the watched names to fit the budget left after the controls (docs/reputation.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from services.verifier.announcer import Announces
from services.verifier.handlers import Clock
from services.verifier.reputation.blocklists import FIX_URLS, BlockList, Status
from services.verifier.reputation.engine import BUDGET_SPENT, Lookup, ReputationEngine
from services.verifier.reputation.store import (
    LISTED,
    NOT_LISTED,
    ReputationRow,
    ReputationStore,
    VerdictWrite,
    Watched,
)
from services.verifier.settings import ReputationPolicy
from shared.events import DomainDelisted, DomainListed
from shared.metrics import ReputationMetrics
from shared.periodic import every

log = structlog.get_logger(__name__)

# After an answer that was no verdict (or a discarded round), look again this much sooner.
UNSURE_FRACTION = 0.1
DAY_S = 86400.0


@dataclass
class ListRound:
    """What one pass did on one list (the log line's fields, and for tests)."""

    blocklist: str
    claimed: int = 0
    controls_passed: bool | None = None  # None: nothing was due, no controls asked
    results: Counter[str] = field(default_factory=Counter)
    listed: list[str] = field(default_factory=list)
    delisted: list[str] = field(default_factory=list)


class ReputationWatch:
    """Runs the passes until `stop` is set; `run_once` is one pass."""

    def __init__(self, *, store: ReputationStore, engine: ReputationEngine,
                 announcer: Announces, policy: ReputationPolicy,
                 platform_hosts: tuple[str, ...], clock: Clock,
                 metrics: ReputationMetrics | None = None, batch: int = 5000) -> None:
        self._store = store
        self._engine = engine
        self._announcer = announcer
        self._policy = policy
        self._hosts = platform_hosts
        self._clock = clock
        self._metrics = metrics
        self._batch = batch
        self._reported: Counter[str] = Counter()  # queries already added to the metric

    async def run(self, stop: asyncio.Event) -> None:
        await every(stop, self._policy.poll_s, self.run_once, failed="reputation.pass_failed",
                    jitter=0.2, rng=self._policy.rng)

    def interval_s(self, blocklist: BlockList, watched: int) -> float:
        """The list's interval: REPUTATION_INTERVAL_S, stretched so that `watched` names
        fit the day's budget after the controls (2 questions a pass)."""
        # Controls are asked in passes that find names due: at most every pass. A very
        # short poll must not eat the whole budget on paper: at least half is for names.
        controls_per_day = 2 * DAY_S / self._policy.poll_s
        budget = self._policy.daily_budget
        for_names = max(1.0, budget / 2, budget - controls_per_day)
        return max(self._policy.interval_s, DAY_S * watched / for_names)

    async def run_once(self) -> list[ListRound]:
        """One pass over every list; returns what it did per list."""
        started = time.perf_counter()
        now = self._clock()
        watched = await self._store.watched(self._hosts)
        lists = {b.kind.value: b.label for b in self._engine.lists}
        intervals = {b.kind.value: self.interval_s(b, len(self._engine.query_names(b, watched)))
                     for b in self._engine.lists}
        # A new name is due now; its next lookup is spread over the first interval.
        added, removed = await self._store.sync(watched, lists, due=lambda: now)
        rounds = await asyncio.gather(*(
            self._round(blocklist, watched, now, intervals[blocklist.kind.value])
            for blocklist in self._engine.lists))
        await self.update_gauges(watched)
        if self._metrics is not None:
            self._metrics.round_timestamp.set(time.time())
        log.info("reputation.pass", watched=len(watched), added=added, removed=removed,
                 lists={r.blocklist: {"claimed": r.claimed, "controls": r.controls_passed,
                                      **r.results} for r in rounds},
                 listed=[n for r in rounds for n in r.listed] or None,
                 delisted=[n for r in rounds for n in r.delisted] or None,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        return list(rounds)

    async def _round(self, blocklist: BlockList, watched: dict[str, Watched], now: datetime,
                     interval_s: float) -> ListRound:
        kind = blocklist.kind.value
        summary = ListRound(kind)
        while True:
            rows = await self._store.claim_due(
                kind, now, self._batch, lambda row: self._after_claim(row, now, interval_s))
            summary.claimed += len(rows)
            if rows:
                await self._check(blocklist, rows, watched, now, interval_s, summary)
            if len(rows) < self._batch or summary.controls_passed is False:
                return summary

    def _next(self, now: datetime, interval_s: float, fraction: float = 1.0) -> datetime:
        return now + timedelta(seconds=self._policy.spread(interval_s * fraction))

    def _after_claim(self, row: ReputationRow, now: datetime, interval_s: float) -> datetime:
        """When a claimed row is next due: an interval on (jittered). A row never looked up
        before goes anywhere in the first interval, so names added together spread out."""
        if row.last_checked_at is None:
            return now + timedelta(seconds=interval_s * (0.1 + 0.9 * self._policy.rng.random()))
        return self._next(now, interval_s)

    async def _check(self, blocklist: BlockList, rows: list[ReputationRow],
                     watched: dict[str, Watched], now: datetime, interval_s: float,
                     summary: ListRound) -> None:
        kind = blocklist.kind.value

        def soon() -> datetime:
            return self._next(now, interval_s, UNSURE_FRACTION)

        if self._engine.budget_left(blocklist) < 3:
            # Spent: nothing is asked, not even the controls, until the budget is whole.
            reset_s = self._engine.budget(blocklist).seconds_to_reset()
            await self._store.reschedule(kind, (r.name for r in rows), next_check=lambda: (
                now + timedelta(seconds=reset_s + self._policy.rng.random() * interval_s)))
            summary.results["budget-spent"] += len(rows)
            self._count(kind, "budget-spent", len(rows))
            log.warning("reputation.budget_spent", list=kind, zone=blocklist.label,
                        deferred=len(rows), resets_in_s=round(reset_s))
            self._note_queries(blocklist)
            return
        if summary.controls_passed is None:
            controls = await self._engine.run_controls(blocklist)
            summary.controls_passed = controls.passed
            if self._metrics is not None:
                self._metrics.list_unusable.labels(kind).set(0 if controls.passed else 1)
            if not controls.passed:
                log.warning("reputation.list_unusable", list=kind, zone=blocklist.label,
                            why=controls.why, discarded=len(rows),
                            hint="the list refuses or misanswers this resolver: check "
                                 "REPUTATION_NAMESERVERS (never a public resolver) and, "
                                 "for Spamhaus DQS, the key")
        if not summary.controls_passed:
            await self._store.reschedule(kind, (r.name for r in rows), next_check=soon)
            summary.results["discarded"] += len(rows)
            self._count(kind, "discarded", len(rows))
            self._note_queries(blocklist)
            return
        lookups = await self._engine.lookup_many(blocklist, [row.name for row in rows])
        retry: list[str] = []
        writes: list[VerdictWrite] = []
        for row in rows:
            lookup = lookups[row.name]
            result = await self._apply(blocklist, row, lookup, watched.get(row.name),
                                       summary, writes)
            summary.results[result] += 1
            self._count(kind, result, 1)
            if result not in (LISTED, NOT_LISTED):
                retry.append(row.name)
        # Announced first, written after: if the write fails, the next pass sees the old
        # status and announces again (at least once, never a change nobody was told of).
        await self._store.record(writes, now=now)
        await self._store.reschedule(kind, retry, next_check=soon)
        self._note_queries(blocklist)

    async def _apply(self, blocklist: BlockList, row: ReputationRow, lookup: Lookup,
                     who: Watched | None, summary: ListRound,
                     writes: list[VerdictWrite]) -> str:
        """What `lookup` means for `row`: a change is announced, and a verdict is added to
        `writes`; returns the result (listed, not_listed, refused, error, ...)."""
        verdict = lookup.verdict
        if verdict == BUDGET_SPENT:
            return "budget-spent"
        if verdict.status == Status.REFUSED:
            return "refused"
        if verdict.status == Status.ERROR:
            return "error"
        status = LISTED if verdict.status == Status.LISTED else NOT_LISTED
        # The platform host's changes are the operator's (metric, alert, log line): the
        # events are for the upstream platform to tell a customer.
        customer = who.customer_id if who is not None else None
        listed_name = lookup.query_name.removesuffix("." + blocklist.zone)
        fix_url = FIX_URLS[blocklist.kind]
        event: DomainListed | DomainDelisted | None = None
        noted = f"{row.name}@{blocklist.kind.value}"
        changes = None
        if status == LISTED and row.status != LISTED:
            changes = summary.listed
            if customer is not None:
                event = DomainListed(
                    domain=row.name, customer_id=customer, blocklist=blocklist.kind.value,
                    zone=blocklist.label, listed_name=listed_name,
                    categories=list(verdict.categories), fix_url=fix_url)
        elif status == NOT_LISTED and row.status == LISTED:
            changes = summary.delisted
            if customer is not None:
                event = DomainDelisted(
                    domain=row.name, customer_id=customer, blocklist=blocklist.kind.value,
                    zone=blocklist.label, listed_name=listed_name,
                    listed_since=row.first_listed_at)
        if event is not None:
            try:
                await self._announcer.announce(event)
            except Exception as exc:  # the broker: not written, so announced again soon
                log.warning("reputation.announce_failed", domain=row.name, type=event.TYPE,
                            list=blocklist.kind.value, error=str(exc) or type(exc).__name__)
                return "announce-failed"
        if changes is not None:
            changes.append(noted)
            if customer is None:
                # The operator's: the alert fires on the gauge; this line says which list.
                log.warning("reputation.platform_host_" + status.replace("not_", "de"),
                            host=row.name, list=blocklist.kind.value, zone=blocklist.label,
                            categories=list(verdict.categories) or None, fix_url=fix_url)
        writes.append(VerdictWrite(row, status, verdict.categories, verdict.raw, fix_url))
        return status

    async def update_gauges(self, watched: dict[str, Watched]) -> None:
        """Listed customers' domains per list and category; the platform host per list."""
        if self._metrics is None:
            return
        counts: Counter[tuple[str, str]] = Counter()
        host_listed = {b.kind.value: 0 for b in self._engine.lists}
        for listing in await self._store.listings():
            who = watched.get(listing.name)
            if who is None:
                continue
            if who.platform_host:
                host_listed[listing.blocklist] = 1
                continue
            for category in listing.categories or ("unknown",):
                counts[(listing.blocklist, category)] += 1
        self._metrics.set_listed(dict(counts))
        for kind, value in host_listed.items():
            self._metrics.platform_host_listed.labels(kind).set(value)

    def _count(self, kind: str, result: str, n: int) -> None:
        if self._metrics is not None and n:
            self._metrics.lookup(kind, result, n)

    def _note_queries(self, blocklist: BlockList) -> None:
        if self._metrics is None:
            return
        kind = blocklist.kind.value
        sent = self._engine.stats.queries[blocklist.kind]
        counter = self._metrics.queries.labels(kind)
        counter.inc(max(0, sent - self._reported.get(kind, 0)))
        self._reported[kind] = sent
        self._metrics.budget_left.labels(kind).set(self._engine.budget_left(blocklist))
