"""Renewal: when the CA's renewal information says (RFC 9773), else when a third of the
lifetime remains, jittered; spread in time either way.

Each certificate's `certificate_renew_at` is set when it is recorded (`Issuer.schedule`).
Where the CA offers ACME Renewal Information (services/certifier/ari.py), it is a
moment picked at random inside the CA's suggested window, or when to ask the CA again
(its Retry-After) if that is sooner; at each look the window is asked for again, and
the certificate is renewed once its moment has come (the CA may move the window
earlier, for a mass revocation). Without ARI: `not_after` minus a third of the lifetime,
minus up to `jitter` (10%) of that third again, at random, so certificates issued
together (a migration, a burst of sign-ups) do not all renew together. For Let's
Encrypt's 90-day certificates that is 30 to 33 days before expiry; for Pebble's 5-year
ones, 20 to 22 months.

No thundering herd after a restore or an outage: renewals run one at a time, and the
ones the CA's limits hold back are put off to when the limit allows plus a random part
of `spread` (3 hours), not all to the same moment; failed ones are retried after
`retry` plus up to 10%.

A periodic task in the certifier (`renew_forever`, every `CERTIFIER_RENEW_CHECK_S`,
jittered) renews the active domains that are due, one at a time through the same
`Issuer` as `domain.verified` (same lock, same rate limits). A failed renewal is
tried again after `CERTIFIER_RENEW_RETRY_S`; once expiry is within
`CERTIFIER_EXPIRY_WARNING_DAYS`, every failed attempt also publishes
`certificate.expiring`, so people hear of it while there is time to act.
Lapsed and deleted domains have no `certificate_renew_at` and are never renewed.
A stopping certifier ends the pass after the renewal in progress; the domains it did not
reach stay due for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from services.certifier.certbot import Stopping
from services.certifier.handlers import Policy, already_recorded, explain, put_in_service
from services.certifier.issuance import Failed, HeldBack, Issuer, stable_rng
from services.certifier.store import CertificateRow, CertificateStore
from shared.broker.publisher import Publisher
from shared.events import CertificateExpiring
from shared.metrics import CertifierMetrics
from shared.outcomes import Outcome

log = structlog.get_logger(__name__)

# The certifier is stopping: this renewal was not started (nor counted).
STOPPED = Outcome("stopped")
# Batches of due rows one pass may go through (ARI looks are quick; renewals are not).
MAX_BATCHES = 50


@dataclass(frozen=True)
class RenewalPolicy:
    retry: timedelta = timedelta(hours=6)
    warning: timedelta = timedelta(days=14)
    batch: int = 100
    # Renewals held back by a rate limit are spread over this much after it allows.
    spread: timedelta = timedelta(hours=3)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def renew_due(*, store: CertificateStore, issuer: Issuer, publisher: Publisher,
                    policy: Policy, renewal: RenewalPolicy,
                    rng: random.Random, clock: Callable[[], datetime] = _utcnow,
                    metrics: CertifierMetrics | None = None) -> int:
    """Renew every active domain that is due now, `batch` rows at a time (up to
    `MAX_BATCHES` batches a pass: each look reschedules its row, so a pass ends);
    returns how many were looked at."""
    looked_at = 0
    for _ in range(MAX_BATCHES):
        rows = await store.due_for_renewal(clock(), limit=renewal.batch)
        for row in rows:
            outcome = await renew_one(row, store=store, issuer=issuer, publisher=publisher,
                                      policy=policy, renewal=renewal,
                                      rng=rng, clock=clock)
            if outcome is STOPPED:
                return looked_at
            looked_at += 1
            if metrics is not None:
                metrics.renewal(outcome)
        if len(rows) < renewal.batch:
            break
    return looked_at


async def update_expiry_gauges(store: CertificateStore, metrics: CertifierMetrics,
                               renewal: RenewalPolicy,
                               clock: Callable[[], datetime] = _utcnow) -> None:
    """`tracking_certificates_expiring`: active certificates inside the warning window,
    which renewal (a third of the lifetime before expiry) should have replaced long ago."""
    count, soonest = await store.expiring(clock() + renewal.warning)
    metrics.expiring.set(count)
    metrics.earliest_expiry.set(soonest.timestamp() if soonest is not None else 0)


async def renew_one(row: CertificateRow, *, store: CertificateStore, issuer: Issuer,
                    publisher: Publisher, policy: Policy,
                    renewal: RenewalPolicy,
                    rng: random.Random, clock: Callable[[], datetime] = _utcnow) -> Outcome:
    started = time.perf_counter()
    outcome = Outcome("unfinished")
    retry_at = clock() + renewal.retry * (1 + 0.1 * rng.random())
    try:
        later = await _not_yet(row, issuer=issuer, clock=clock)
        if later is not None:
            outcome = Outcome("ari-not-yet")
            await store.postpone_renewal(row.name, later)
            return outcome
        result = await issuer.ensure(row.name, replace_serial=row.certificate_serial)
        if isinstance(result, HeldBack):
            outcome = Outcome("held-back", detail=result.hold.reason)
            retry_at = result.hold.until + renewal.spread * rng.random()
        elif isinstance(result, Failed):
            outcome = Outcome("failed", result.failure.code,
                              explain(row.name, result.failure, policy.tracking_host))
        elif not result.fresh and await already_recorded(store, row.name, result.certificate):
            outcome = Outcome("already-renewed")  # by another certifier sharing the directory
            return outcome
        else:
            await put_in_service(row.name, row.customer_id, result.certificate, store=store,
                                 issuer=issuer, publisher=publisher, policy=policy, rng=rng)
            outcome = Outcome("renewed" if result.fresh else "recorded-existing")
            return outcome
    except Stopping:
        outcome = STOPPED  # not postponed: still due when a certifier next looks
        return outcome
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # logged and retried later; the loop must go on
        outcome = Outcome("error", detail=f"{type(exc).__name__}: {exc}")
    finally:
        log.info("certificate.renewal", domain=row.name, outcome=outcome.name,
                 error=outcome.detail, expires_at=row.certificate_expires_at,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
    await store.postpone_renewal(row.name, retry_at)
    expires = row.certificate_expires_at
    if expires is not None and expires - clock() <= renewal.warning:
        try:
            await publisher.publish_event(CertificateExpiring(
                domain=row.name, customer_id=row.customer_id, not_after=expires,
                reason=(f"The certificate for {row.name} expires at {expires.isoformat()} and "
                        f"could not be renewed: {outcome.detail}")[:2000]))
        except Exception as exc:
            log.warning("certificate.expiring_not_sent", domain=row.name, error=str(exc))
    return outcome


async def _not_yet(row: CertificateRow, *, issuer: Issuer,
                   clock: Callable[[], datetime]) -> datetime | None:
    """When to look again if the CA's renewal window says this certificate's moment has
    not come (ARI); None: renew now (its moment came, or the CA offers no ARI)."""
    if issuer.ari is None or row.certificate_serial is None:
        return None
    stored = await issuer.vault.get(row.name)
    if stored is None or stored.serial != row.certificate_serial:
        return None  # replaced meanwhile, or only on disk: ensure() finds out
    current = stored.info
    window = await issuer.renewal_window(row.name, current)
    if window is None:
        return None
    now = clock()
    moment = window.choose(now, stable_rng(current, window))
    if moment <= now:
        return None
    return min(moment, now + window.retry_after)


async def renew_forever(stop: asyncio.Event, *, interval_s: float, store: CertificateStore,
                        issuer: Issuer, publisher: Publisher,
                        policy: Policy, renewal: RenewalPolicy, rng: random.Random,
                        metrics: CertifierMetrics | None = None) -> None:
    """Run `renew_due` now and then every `interval_s` (±10%) until `stop` is set."""
    while not stop.is_set():
        try:
            await renew_due(store=store, issuer=issuer, publisher=publisher,
                            policy=policy, renewal=renewal, rng=rng, metrics=metrics)
            if metrics is not None:
                await update_expiry_gauges(store, metrics, renewal)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be down; try again next round
            log.warning("certificate.renewal_pass_failed", error=str(exc) or type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s * (0.9 + 0.2 * rng.random())):
                await stop.wait()
