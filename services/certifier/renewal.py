"""Renewal: certificates are replaced when a third of their lifetime remains, jittered.

Each certificate's `certificate_renew_at` is set when it is recorded (`issuance.renew_at`):
`not_after` minus a third of the lifetime, minus up to `jitter` (10%) of that third again,
at random, so certificates issued together (a migration, a burst of sign-ups) do not
all renew together. For Let's Encrypt's 90-day certificates that is 30 to 33 days before
expiry; for Pebble's 5-year ones, 20 to 22 months.

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
from services.certifier.issuance import Failed, HeldBack, Issuer
from services.certifier.nginx import NginxSites
from services.certifier.store import CertificateRow, CertificateStore
from shared.broker.publisher import Publisher
from shared.events import CertificateExpiring
from shared.metrics import CertifierMetrics
from shared.outcomes import Outcome

log = structlog.get_logger(__name__)

# The certifier is stopping: this renewal was not started (nor counted).
STOPPED = Outcome("stopped")


@dataclass(frozen=True)
class RenewalPolicy:
    retry: timedelta = timedelta(hours=6)
    warning: timedelta = timedelta(days=14)
    batch: int = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def renew_due(*, store: CertificateStore, issuer: Issuer, sites: NginxSites,
                    publisher: Publisher, policy: Policy, renewal: RenewalPolicy,
                    rng: random.Random, clock: Callable[[], datetime] = _utcnow,
                    metrics: CertifierMetrics | None = None) -> int:
    """Renew every active domain that is due now; returns how many were looked at."""
    rows = await store.due_for_renewal(clock(), limit=renewal.batch)
    for looked_at, row in enumerate(rows, start=1):
        outcome = await renew_one(row, store=store, issuer=issuer, sites=sites,
                                  publisher=publisher, policy=policy, renewal=renewal, rng=rng,
                                  clock=clock)
        if outcome is STOPPED:
            return looked_at - 1
        if metrics is not None:
            metrics.renewal(outcome)
    return len(rows)


async def update_expiry_gauges(store: CertificateStore, metrics: CertifierMetrics,
                               renewal: RenewalPolicy,
                               clock: Callable[[], datetime] = _utcnow) -> None:
    """`tracking_certificates_expiring`: active certificates inside the warning window,
    which renewal (a third of the lifetime before expiry) should have replaced long ago."""
    count, soonest = await store.expiring(clock() + renewal.warning)
    metrics.expiring.set(count)
    metrics.earliest_expiry.set(soonest.timestamp() if soonest is not None else 0)


async def renew_one(row: CertificateRow, *, store: CertificateStore, issuer: Issuer,
                    sites: NginxSites, publisher: Publisher, policy: Policy,
                    renewal: RenewalPolicy,
                    rng: random.Random, clock: Callable[[], datetime] = _utcnow) -> Outcome:
    started = time.perf_counter()
    outcome = Outcome("unfinished")
    retry_at = clock() + renewal.retry
    try:
        result = await issuer.ensure(row.name, replace_serial=row.certificate_serial)
        if isinstance(result, HeldBack):
            outcome, retry_at = Outcome("held-back", detail=result.hold.reason), result.hold.until
        elif isinstance(result, Failed):
            outcome = Outcome("failed", result.failure.code,
                              explain(row.name, result.failure, policy.tracking_host))
        elif not result.fresh and await already_recorded(store, row.name, result.certificate):
            outcome = Outcome("already-renewed")  # by another certifier sharing the directory
            return outcome
        else:
            await put_in_service(row.name, row.customer_id, result.certificate, store=store,
                                 sites=sites, publisher=publisher, policy=policy, rng=rng)
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


async def renew_forever(stop: asyncio.Event, *, interval_s: float, store: CertificateStore,
                        issuer: Issuer, sites: NginxSites, publisher: Publisher,
                        policy: Policy, renewal: RenewalPolicy, rng: random.Random,
                        metrics: CertifierMetrics | None = None) -> None:
    """Run `renew_due` now and then every `interval_s` (±10%) until `stop` is set."""
    while not stop.is_set():
        try:
            await renew_due(store=store, issuer=issuer, sites=sites, publisher=publisher,
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
