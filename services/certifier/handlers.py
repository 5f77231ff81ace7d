"""The certifier's handlers: `domain.verified` → certificate; `domain.deleted`; `domain.lapsed`.

Each is idempotent (delivery is at least once):

- `domain.verified`: if the certificate on disk is good and the row already says so,
  nothing happens (a repeated event issues nothing: Let's Encrypt allows 5 duplicate
  certificates a week). Otherwise the certificate is obtained (or found on disk after a
  crash) and put in the certificate store, `certificate.issued` is published, and only
  then the row becomes `active`, so a crash anywhere before that repeats the missing
  steps. The certifier touches no nginx: every edge agent installs the stored
  certificate and reports it with `certificate.installed` (docs/certificates.md).
- `domain.deleted`: the certificate and its key go from certbot's directory and the
  store; the row's certificate columns are cleared (the edges drop their files on the
  same event).
- `domain.lapsed`: renewal stops (the edges stop serving it on the same event).

An event whose domain has no row, belongs to another customer, or is no longer
`verified`/`active` is stale (the verifier writes the row before it publishes) and is
skipped, with the reason in the summary line.

Failures: a failed validation is retried with a growing delay (counted in `acme_events`,
so the count survives restarts) and after `validation_attempts` becomes
`certificate.failed` with what the customer should fix; a CA refusal (CAA, policy)
becomes `certificate.failed` at once; rate limits and an unreachable CA are
`TransientError`s with the delay the limit needs. A stopping certifier starts no certbot
run: the events still waiting for one are handed back (`certbot.Stopping`, outcome
`handed-back`) through the shortest retry tier.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from services.certifier.certbot import (
    Certbot,
    CertbotFailure,
    CertificateInfo,
    FailureKind,
    Stopping,
)
from services.certifier.issuance import Failed, HeldBack, Issued, Issuer
from services.certifier.store import CERTIFIABLE_STATUSES, CertificateStore
from shared.broker.publisher import Publisher
from shared.certificates import CertStore
from shared.domain_status import DomainStatus
from shared.domains import InvalidDomain, normalise_domain
from shared.errors import PermanentError, TransientError
from shared.events import (
    CertificateFailed,
    CertificateIssued,
    DomainDeleted,
    DomainLapsed,
    DomainVerified,
    Event,
    EventData,
)
from shared.outcomes import Outcome

log = structlog.get_logger(__name__)

MAX_DETAIL = 900
# `certify`'s outcome until it has one (an exception turns it into retry or handed-back).
UNFINISHED = Outcome("unfinished")


@dataclass(frozen=True)
class Policy:
    validation_attempts: int = 3
    validation_retry_s: float = 60.0
    tracking_host: str | None = None
    renew_jitter: float = 0.1


async def handle_events(events: Sequence[Event[Any]], *, store: CertificateStore, issuer: Issuer,
                        publisher: Publisher, policy: Policy, rng: random.Random,
                        outcomes: Counter[str]) -> None:
    """Dispatch by type; `outcomes` counts what each finished event came to, by name."""
    for event in events:
        data = event.data
        if isinstance(data, DomainVerified):
            outcome = await certify(data, store=store, issuer=issuer, publisher=publisher,
                                    policy=policy, rng=rng)
        elif isinstance(data, DomainDeleted):
            outcome = await forget(data, store=store, certbot=issuer.certbot, vault=issuer.vault)
        elif isinstance(data, DomainLapsed):
            outcome = await stop_renewing(data, store=store)
        else:
            outcome = Outcome(f"ignored-{event.type}")
        outcomes[outcome.name] += 1


async def certify(data: DomainVerified, *, store: CertificateStore, issuer: Issuer,
                  publisher: Publisher, policy: Policy, rng: random.Random) -> Outcome:
    """Make sure `data.domain` has a certificate, stored, announced and recorded; returns
    the outcome."""
    started = time.perf_counter()
    name = _name(data.domain)
    outcome = UNFINISHED
    try:
        row = await store.get(name)
        if row is None:
            outcome = Outcome("skipped-unknown-domain")
        elif row.customer_id != data.customer_id:
            outcome = Outcome("skipped-other-customer")
        elif row.status not in CERTIFIABLE_STATUSES or not row.verified:
            outcome = Outcome(f"skipped-status-{row.status}")
        else:
            result = await issuer.ensure(name)
            if isinstance(result, Issued):
                certificate = result.certificate
                if not result.fresh and await already_recorded(store, name, certificate):
                    outcome = Outcome("already-certified")
                else:
                    await put_in_service(name, data.customer_id, certificate, store=store,
                                         issuer=issuer, publisher=publisher, policy=policy,
                                         rng=rng)
                    outcome = Outcome("issued" if result.fresh else "recorded-existing")
            elif isinstance(result, HeldBack):
                outcome = Outcome("held-back", detail=result.hold.reason)
                raise TransientError(f"held back by rate limit {result.hold.limit}: "
                                     f"{result.hold.reason}",
                                     delay_s=result.hold.delay_s(datetime.now(UTC)))
            else:
                outcome = await _failed(name, data.customer_id, result, store=store,
                                        publisher=publisher, policy=policy)
        return outcome
    except Exception as exc:
        if outcome is UNFINISHED:
            outcome = Outcome("handed-back" if isinstance(exc, Stopping) else "retry")
        if not outcome.detail:
            outcome = replace(outcome, detail=exc.reason if isinstance(exc, TransientError)
                              else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        log.info("certificate.certify", domain=name, customer_id=data.customer_id,
                 outcome=outcome.name, error=outcome.detail,
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))


async def already_recorded(store: CertificateStore, name: str,
                           certificate: CertificateInfo) -> bool:
    """True if the row is active with this certificate (read now: another handler, the
    renewal loop or another process may have recorded it while we waited for the lock)."""
    row = await store.get(name)
    return row is not None and row.status == DomainStatus.ACTIVE \
        and row.certificate_serial == certificate.serial


async def put_in_service(name: str, customer_id: str, certificate: CertificateInfo, *,
                         store: CertificateStore, issuer: Issuer, publisher: Publisher,
                         policy: Policy, rng: random.Random) -> bool:
    """Tell the platform and the edges, then mark the row active (in that order), with
    its renewal scheduled (`Issuer.schedule`: the CA's ARI window, or a third of the
    lifetime).

    The certificate is already in the store (`Issuer.ensure` put it there). The
    certifier serves nothing itself: every edge agent installs it from the store on
    `certificate.issued` (or at its next reconciliation) and confirms it with
    `certificate.installed`. A crash between the publish and the row is repaired by the
    event being delivered again (the handlers are idempotent).
    """
    await _publish(publisher, CertificateIssued(
        domain=name, customer_id=customer_id, not_before=certificate.not_before,
        not_after=certificate.not_after, serial=certificate.serial))
    return await store.activate(name, certificate, await issuer.schedule(
        name, certificate, rng, jitter=policy.renew_jitter))


async def forget(data: DomainDeleted, *, store: CertificateStore, certbot: Certbot,
                 vault: CertStore) -> Outcome:
    """Delete the domain's certificate from certbot's directory and the store (the edge
    agents remove their files on the same `domain.deleted`)."""
    started = time.perf_counter()
    name = _name(data.domain)
    row = await store.get(name)
    if row is not None and row.customer_id != data.customer_id:
        outcome = Outcome("skipped-other-customer")
    else:
        async with certbot.exclusive():
            removed = await certbot.delete(name)
            removed = await vault.delete(name) or removed
        if row is not None:
            await store.forget_certificate(name)
        outcome = Outcome("removed" if removed else "nothing-to-remove")
    log.info("certificate.forget", domain=name, customer_id=data.customer_id,
             outcome=outcome.name,
             duration_ms=round((time.perf_counter() - started) * 1000, 1))
    return outcome


async def stop_renewing(data: DomainLapsed, *, store: CertificateStore) -> Outcome:
    name = _name(data.domain)
    row = await store.get(name)
    if row is None or row.customer_id != data.customer_id:
        outcome = Outcome("skipped")
    else:
        await store.postpone_renewal(name, None)
        outcome = Outcome("renewal-stopped")
    log.info("certificate.lapsed", domain=name, customer_id=data.customer_id,
             outcome=outcome.name, code=data.code)
    return outcome


async def _failed(name: str, customer_id: str, result: Failed, *, store: CertificateStore,
                  publisher: Publisher, policy: Policy) -> Outcome:
    failure = result.failure
    reason = explain(name, failure, policy.tracking_host)
    if failure.kind is FailureKind.VALIDATION:
        attempts = result.recent_failed_validations
        if attempts < policy.validation_attempts:
            await store.set_last_error(name, reason)
            raise TransientError(
                f"validation failed ({attempts} of {policy.validation_attempts}): "
                f"{failure.code}: {failure.detail[:MAX_DETAIL]}",
                delay_s=policy.validation_retry_s * 4 ** max(attempts - 1, 0))
    elif failure.kind is FailureKind.RATE_LIMITED:
        delay = 3600.0
        if failure.retry_after is not None:
            delay = max((failure.retry_after - datetime.now(UTC)).total_seconds(), 1.0)
        raise TransientError(f"the CA rate-limited us: {failure.detail[:MAX_DETAIL]}",
                             delay_s=delay)
    elif failure.kind is FailureKind.ACCOUNT:
        raise TransientError(f"the CA does not know our account; registering again: "
                             f"{failure.detail[:MAX_DETAIL]}", delay_s=1.0)
    elif failure.kind is FailureKind.CONFIGURATION:
        log.error("certifier.misconfigured", domain=name, error=failure.detail)
        raise TransientError(f"the CA refuses our account settings (fix ACME_EMAIL or the "
                             f"account): {failure.detail[:MAX_DETAIL]}", delay_s=3600.0)
    elif failure.kind is not FailureKind.REFUSED:
        raise TransientError(f"{failure.kind.value}: {failure.detail[:MAX_DETAIL]}")
    # A refusal, or validations that kept failing: the customer has to act.
    await store.set_last_error(name, reason)
    await _publish(publisher, CertificateFailed(domain=name, customer_id=customer_id,
                                                code=failure.code, reason=reason))
    return Outcome("failed", failure.code, reason)


def explain(name: str, failure: CertbotFailure, tracking_host: str | None) -> str:
    """What went wrong, in words the customer can act on."""
    host = tracking_host or "the platform's tracking host"
    detail = failure.detail[:MAX_DETAIL]
    texts = {
        "unauthorized": (
            f"The certificate authority fetched http://{name}/.well-known/acme-challenge/ "
            f"and did not get our answer. Make sure {name} is a CNAME to {host}, with no "
            "other A or AAAA records and no proxy or CDN answering for it."),
        "connection": (
            f"The certificate authority could not connect to {name} on port 80. Make sure "
            f"{name} is a CNAME to {host} and that nothing blocks port 80."),
        "dns": (f"The certificate authority could not resolve {name}. Check its DNS "
                f"records: it must be a CNAME to {host}."),
        "tls": (f"The certificate authority hit a TLS error while validating {name}. Make "
                f"sure nothing but {host} answers for it."),
        "caa": (f"A CAA record on {name} or a parent domain does not allow our certificate "
                "authority. Add a CAA record allowing it (for Let's Encrypt: "
                '0 issue "letsencrypt.org") or remove the restriction.'),
        "rejectedIdentifier": (f"The certificate authority will not issue a certificate "
                               f"for {name}. Use another name."),
    }
    texts["incorrectResponse"] = texts["unauthorized"]
    texts["unsupportedIdentifier"] = texts["rejectedIdentifier"]
    if failure.acme_error is None:
        return f"No certificate could be obtained for {name}: {detail}"
    text = texts.get(failure.acme_error, f"No certificate could be obtained for {name}.")
    return f"{text} The certificate authority said: {detail}"


async def _publish(publisher: Publisher, data: EventData) -> None:
    await publisher.publish_event(data)


def _name(domain: str) -> str:
    try:
        return normalise_domain(domain)
    except InvalidDomain as exc:
        raise PermanentError(f"not a domain name: {exc}") from exc
