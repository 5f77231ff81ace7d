"""Periodic re-verification of verified, active and lapsed domains.

Every `poll_s` (jittered) the scheduler claims the domains whose `check_due_at`
has passed (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas never take the same
domain), moves each one's next check an interval on (jittered, so checks spread
out instead of arriving in waves), commits, and only then checks them, several
at once. It also purges tombstones of deleted pending domains.

- still right: the chain seen is recorded;
- DNS moved away: `domain.lapsed` is published, then the row becomes `lapsed`
  (links fall back to the platform host; the certifier stops renewing);
- CAA now forbids our CA: not a lapse (traffic still reaches us), but renewal will
  fail, so `last_error` says so;
- a lapsed domain whose DNS is right again becomes `verified` and `domain.verified`
  is published, so the certifier brings it back;
- the resolver failed: nothing is concluded; the domain is looked at again sooner.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from services.verifier.announcer import Announces
from services.verifier.handlers import Clock, utc_now
from services.verifier.settings import VerifyPolicy
from services.verifier.store import VerificationRow, VerificationStore
from shared.domain_status import DomainStatus
from shared.events import DomainLapsed, DomainVerified
from shared.metrics import VerifierMetrics
from shared.outcomes import Outcome
from shared.periodic import every
from shared.verification.checks import DomainChecker
from shared.verification.judge import CAA_FORBIDS, NotYet, Verdict, Verified

log = structlog.get_logger(__name__)

# After a resolver failure, look again after this fraction of the interval.
UNSURE_FRACTION = 0.1


async def recheck_domain(row: VerificationRow, *, store: VerificationStore, checker: DomainChecker,
                         announcer: Announces, policy: VerifyPolicy,
                         clock: Clock = utc_now,
                         metrics: VerifierMetrics | None = None) -> Outcome:
    """Check one claimed domain again; returns what happened (also logged, once)."""
    started = time.perf_counter()
    outcome = Outcome("error")
    try:
        verdict = await checker.check(row.name)
        code = getattr(verdict, "code", None)
        outcome = Outcome("error", code)  # until the verdict is applied
        outcome = Outcome(await _apply(row, verdict, store=store, announcer=announcer,
                                       policy=policy, clock=clock), code)
        return outcome
    finally:
        log.info("domain.rechecked", domain=row.name, customer_id=row.customer_id,
                 status=row.status, outcome=outcome.name, code=outcome.code,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        if metrics is not None:
            metrics.verification("recheck", outcome)


async def _apply(row: VerificationRow, verdict: Verdict, *, store: VerificationStore,
                 announcer: Announces, policy: VerifyPolicy, clock: Clock) -> str:
    name, customer, now = row.name, row.customer_id, clock()
    if isinstance(verdict, Verified):
        if row.status == DomainStatus.LAPSED:
            if not await store.mark_verified(
                    name, customer, from_status=row.status, matched_by=verdict.matched_by,
                    dns_chain=verdict.description,
                    check_due_at=policy.next_periodic_check(now), now=now):
                return "changed-meanwhile"
            try:
                await announcer.announce(DomainVerified(
                    domain=name, customer_id=customer, matched_by=verdict.matched_by,
                    chain=list(verdict.chain), registered_domain=row.registered_domain,
                    isolation_warning=row.isolation_warning))
            except Exception:
                # Put it back, due now: the next pass verifies and announces again.
                await store.mark_lapsed(name, customer, last_error=row.last_error or "",
                                        now=now)
                await store.reschedule(name, customer, status=DomainStatus.LAPSED,
                                       check_due_at=now)
                raise
            return "recovered"
        if (row.matched_by, row.dns_chain, row.last_error) != (
                verdict.matched_by, verdict.description, None):
            await store.note_recheck(name, customer, status=row.status,
                                     matched_by=verdict.matched_by,
                                     dns_chain=verdict.description, last_error=None)
        return "still-verified"
    if isinstance(verdict, NotYet):
        error = f"{verdict.code}: {verdict.reason}"
        if row.status == DomainStatus.LAPSED:
            if row.last_error != error:
                await store.note_recheck(name, customer, status=row.status, last_error=error)
            return "still-lapsed"
        if verdict.code == CAA_FORBIDS:
            error += " Certificate renewals will fail until this is fixed."
            if row.last_error != error:
                await store.note_recheck(name, customer, status=row.status, last_error=error)
            return "caa-warning"
        # Announce first: if the update then fails the next pass announces again
        # (at least once), never a lapsed row nobody was told about.
        await announcer.announce(DomainLapsed(domain=name, customer_id=customer,
                                              code=verdict.code, reason=verdict.reason[:2000]))
        if await store.mark_lapsed(name, customer, last_error=error, now=now):
            return "lapsed"
        return "changed-meanwhile"
    await store.reschedule(name, customer, status=row.status,
                           check_due_at=policy.next_periodic_check(now,
                                                                   fraction=UNSURE_FRACTION))
    return "dns-unavailable"


class Rechecker:
    """Runs the periodic checks until `stop` is set."""

    def __init__(self, *, store: VerificationStore, checker: DomainChecker, announcer: Announces,
                 policy: VerifyPolicy, poll_s: float, batch: int = 500,
                 concurrency: int = 64, clock: Clock = utc_now,
                 metrics: VerifierMetrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._checker = checker
        self._announcer = announcer
        self._policy = policy
        self._poll_s = poll_s
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        async def passes() -> None:
            while await self.run_once() >= self._batch and not stop.is_set():
                pass  # a full batch: more are due, carry on at once

        await every(stop, self._poll_s, passes, failed="recheck.pass_failed", jitter=0.2,
                    rng=self._policy.rng)

    async def run_once(self) -> int:
        """One pass: purge tombstones, claim what is due, check it; returns how many."""
        now = self._clock()
        purged = await self._store.purge_tombstones(now)
        if purged:
            log.info("tombstones.purged", count=purged)
        rows = await self._store.claim_due(
            now, self._batch, lambda: self._policy.next_periodic_check(now))
        if rows:
            results = await asyncio.gather(*(self._one(row) for row in rows),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.warning("recheck.failures", count=len(failed), error=str(failed[0]))
        return len(rows)

    async def _one(self, row: VerificationRow) -> Outcome:
        async with self._limit:
            return await recheck_domain(row, store=self._store, checker=self._checker,
                                        announcer=self._announcer, policy=self._policy,
                                        clock=self._clock, metrics=self._metrics)
