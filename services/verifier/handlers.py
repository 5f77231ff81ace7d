"""The verifier's handler: `domain.created` → judged, and `domain.deleted` → forgotten.

Idempotent under at-least-once delivery: the row's status decides what a message
may still do, every change is a conditional update, and an outcome already
recorded is only re-announced (so a lost publish is repaired by the redelivery).

A domain whose DNS is not right yet stays `pending` with `last_error` saying what
is wrong; the handler raises `TransientError(delay_s=...)` so the consumer parks
the same message in a retry tier: each recheck is a delayed message, and the
delay grows with the domain's age. Past the deadline (from `created_at`) the
domain is rejected with the last reason.

`last_error` is stored as `<code>: <reason>`; the codes are in docs/troubleshooting.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.verifier.announcer import Announces
from services.verifier.settings import VerifyPolicy
from services.verifier.store import Isolation, VerificationRow, VerificationStore
from shared.domain_status import DomainStatus
from shared.domains import InvalidDomain, normalise_domain, registered_domain
from shared.errors import TransientError
from shared.events import DomainCreated, DomainDeleted, DomainRejected, DomainVerified, Event
from shared.metrics import VerifierMetrics
from shared.outcomes import Outcome
from shared.verification.checks import DomainChecker
from shared.verification.judge import (
    Rejection,
    Verified,
    chain_of,
    owned_elsewhere,
    validate_name,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
MAX_REASON = 2000


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class VerifierOutcome(Outcome):
    """An `Outcome` that also says how the domain's DNS matched the platform host.

    `retry_in_s` set: the domain must be looked at again (a recheck), so the message goes
    to a retry tier with `detail` as the reason."""

    matched_by: str | None = None


async def handle_domain_events(events: Sequence[Event[Any]], *, store: VerificationStore,
                               checker: DomainChecker, announcer: Announces,
                               policy: VerifyPolicy, clock: Clock = utc_now,
                               metrics: VerifierMetrics | None = None) -> None:
    """Consumer entry point. A batch is handled concurrently; if any of its domains needs
    a recheck the whole batch is retried (harmless: every event is idempotent)."""
    deps: dict[str, Any] = {"store": store, "checker": checker, "announcer": announcer,
                            "policy": policy, "clock": clock, "metrics": metrics}
    if len(events) == 1:
        await handle_event(events[0], **deps)
        return
    results = await asyncio.gather(*(handle_event(event, **deps) for event in events),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, TransientError):
            raise result
    retries = [result for result in results if isinstance(result, TransientError)]
    if retries:
        delays = [retry.delay_s for retry in retries if retry.delay_s is not None]
        raise TransientError("; ".join(retry.reason for retry in retries)[:1000],
                             delay_s=min(delays) if delays else None)


async def handle_event(event: Event[Any], *, store: VerificationStore, checker: DomainChecker,
                       announcer: Announces, policy: VerifyPolicy,
                       clock: Clock = utc_now,
                       metrics: VerifierMetrics | None = None) -> VerifierOutcome:
    """One event, one summary log line; raises `TransientError` to be rechecked later."""
    started = time.perf_counter()
    data = event.data
    outcome = VerifierOutcome("error")
    try:
        if isinstance(data, DomainCreated):
            outcome = await verify_domain(event, store=store, checker=checker,
                                          announcer=announcer, policy=policy, clock=clock)
        elif isinstance(data, DomainDeleted):
            outcome = await forget_domain(event, store=store, policy=policy, clock=clock)
        else:
            outcome = VerifierOutcome("ignored")
    finally:
        log.info("domain.handled", event_id=event.id, event_type=event.type,
                 domain=getattr(data, "domain", None),
                 customer_id=getattr(data, "customer_id", None), outcome=outcome.name,
                 code=outcome.code, matched_by=outcome.matched_by,
                 recheck_in_s=outcome.retry_in_s,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        if metrics is not None and isinstance(data, DomainCreated):
            metrics.verification("created", outcome)
    if outcome.retry_in_s is not None:
        raise TransientError(outcome.detail or outcome.name, delay_s=outcome.retry_in_s)
    return outcome


async def verify_domain(event: Event[DomainCreated], *, store: VerificationStore,
                        checker: DomainChecker, announcer: Announces, policy: VerifyPolicy,
                        clock: Clock) -> VerifierOutcome:
    data = event.data
    customer = data.customer_id
    checked = validate_name(data.domain, policy.tracking_host, policy.tracking_host_aliases)
    if isinstance(checked, Rejection):
        await announce_rejected(announcer, data.domain, customer, checked.code, checked.reason)
        return VerifierOutcome("rejected", checked.code)
    name = checked
    now = clock()
    row = await store.get(name) or await store.add_pending(name, customer, now)
    if row is None:  # added by another message between the two: look again shortly
        return VerifierOutcome("raced", retry_in_s=policy.min_recheck_delay_s,
                       detail=f"{name} changed while being added")
    if row.customer_id != customer and row.status != DomainStatus.REJECTED:
        rejection = owned_elsewhere(name)
        await announce_rejected(announcer, name, customer, rejection.code, rejection.reason)
        return VerifierOutcome("rejected", rejection.code)
    if row.customer_id != customer or (
            row.status.can_become(DomainStatus.PENDING) and event.time > row.updated_at):
        # A rejected name taken over, or the customer asking again after fixing DNS.
        if not await store.restart(row, customer, now):
            return VerifierOutcome("raced", retry_in_s=policy.min_recheck_delay_s,
                           detail=f"{name} changed while being restarted")
        row = await store.get(name)
        if row is None:
            return VerifierOutcome("deleted-meanwhile")
    elif row.status in (DomainStatus.VERIFIED, DomainStatus.ACTIVE):
        # Never downgraded; re-announced so a certifier that missed it catches up.
        await announcer.announce(DomainVerified(
            domain=name, customer_id=customer, matched_by=row.matched_by or "cname",
            chain=chain_of(row.dns_chain or name), registered_domain=row.registered_domain,
            isolation_warning=row.isolation_warning))
        return VerifierOutcome(f"already-{row.status}", matched_by=row.matched_by)
    elif row.status == DomainStatus.REJECTED:
        if row.tombstone:
            return VerifierOutcome("ignored-deleted")
        code, reason = split_error(row.last_error)
        await announce_rejected(announcer, name, customer, code, reason)
        return VerifierOutcome("already-rejected", code)
    elif row.status == DomainStatus.LAPSED:
        return VerifierOutcome("ignored-lapsed")  # a stale redelivery; the schedule watches it
    return await judge_pending(row, checker=checker, store=store, announcer=announcer,
                               policy=policy, clock=clock)


async def judge_pending(row: VerificationRow, *, checker: DomainChecker,
                        store: VerificationStore, announcer: Announces, policy: VerifyPolicy,
                        clock: Clock) -> VerifierOutcome:
    name, customer = row.name, row.customer_id
    verdict = await checker.check(name)
    now = clock()
    if isinstance(verdict, Verified):
        isolation = await assess_isolation(name, customer, store=store, policy=policy)
        if not await store.mark_verified(
                name, customer, from_status=DomainStatus.PENDING, matched_by=verdict.matched_by,
                dns_chain=verdict.description, check_due_at=policy.next_periodic_check(now),
                now=now, isolation=isolation):
            return VerifierOutcome("changed-meanwhile")
        if isolation.warning is not None:
            log.warning("domain.shared_registered_domain", domain=name, customer_id=customer,
                        registered_domain=isolation.registered_domain)
        await announcer.announce(DomainVerified(
            domain=name, customer_id=customer, matched_by=verdict.matched_by,
            chain=list(verdict.chain), registered_domain=isolation.registered_domain,
            isolation_warning=isolation.warning))
        return VerifierOutcome("verified", matched_by=verdict.matched_by)
    age_s = (now - row.created_at).total_seconds()
    if age_s >= policy.deadline_s:
        reason = (f"{verdict.reason} (still not right {format_age(policy.deadline_s)} after "
                  "the domain was added; fix DNS, then add the domain again)")
        if await store.mark_rejected(name, customer, last_error=f"{verdict.code}: {reason}",
                                     now=now):
            await announce_rejected(announcer, name, customer, verdict.code, reason)
            return VerifierOutcome("rejected", verdict.code)
        return VerifierOutcome("changed-meanwhile")
    delay_s = policy.recheck_delay_s(age_s)
    if not await store.note_pending(name, customer, last_error=f"{verdict.code}: {verdict.reason}",
                                    check_due_at=now + timedelta(seconds=delay_s), now=now):
        return VerifierOutcome("changed-meanwhile")  # deleted or decided meanwhile: stop here
    return VerifierOutcome("not-yet" if verdict.code[:4] != "dns_" else "dns-unavailable",
                   verdict.code, retry_in_s=delay_s,
                   detail=f"{verdict.code}: {verdict.reason}")


async def assess_isolation(name: str, customer_id: str, *, store: VerificationStore,
                           policy: VerifyPolicy) -> Isolation:
    """Does `name` share its registered domain with another customer's tracking domain or
    with the platform host? SURBL and URIBL list registered domains, so all of them share
    one fate there: the isolation the product promises does not hold for this name."""
    registered = registered_domain(name)
    hosts = (policy.tracking_host, *policy.tracking_host_aliases)
    platform = [host for host in hosts if registered_domain(host) == registered]
    others = await store.other_customers_under(registered, customer_id)
    return Isolation(registered, isolation_warning(name, registered, platform, others))


def isolation_warning(name: str, registered: str, platform_hosts: Sequence[str],
                      other_customers: int) -> str | None:
    """The warning for the customer (None: isolated). Other customers' names are never
    given; the platform's host is public anyway."""
    sharers = []
    if other_customers:
        sharers.append("another customer's tracking domain" if other_customers == 1 else
                       f"{other_customers} other customers' tracking domains")
    if platform_hosts:
        sharers.append(f"the platform host ({', '.join(platform_hosts)})")
    if not sharers:
        return None
    return (f"{name} shares its registered domain {registered} with {' and '.join(sharers)}: "
            "SURBL and URIBL list registered domains, so a listing caused by one lands on all "
            "of them. Use a name under a domain of the customer's own.")


async def forget_domain(event: Event[DomainDeleted], *, store: VerificationStore,
                        policy: VerifyPolicy, clock: Clock) -> VerifierOutcome:
    data = event.data
    try:
        name = normalise_domain(data.domain)
    except InvalidDomain:
        return VerifierOutcome("absent")
    now = clock()
    result = await store.forget(name, data.customer_id, now=now,
                                tombstone_until=now + timedelta(seconds=policy.tombstone_s))
    return VerifierOutcome(result)


async def announce_rejected(announcer: Announces, domain: str, customer_id: str, code: str,
                            reason: str) -> None:
    await announcer.announce(DomainRejected(domain=domain, customer_id=customer_id, code=code,
                                            reason=reason[:MAX_REASON]))


def split_error(last_error: str | None) -> tuple[str, str]:
    """`last_error` is `<code>: <reason>`."""
    code, sep, reason = (last_error or "").partition(": ")
    if not sep or " " in code:
        return "rejected", last_error or "rejected"
    return code, reason


def format_age(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
