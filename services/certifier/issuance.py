"""Getting a certificate for one name, once: the step the handler and the renewal loop share.

Everything happens under the certbot directory's lock, so the decision (is the
certificate on disk still good? do the rate limits allow an order?) and the run that
follows it cannot interleave with another handler, the renewal loop, or another
certifier process on the same directory. Every order, certificate and failed
validation is written to `acme_events`, which is what `ratelimits` counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from services.certifier.certbot import (
    Certbot,
    CertbotError,
    CertbotFailure,
    CertificateInfo,
    FailureKind,
)
from services.certifier.ratelimits import (
    CERTIFICATE,
    FAILED_VALIDATION,
    ORDER,
    Hold,
    Limits,
    hold_back,
)
from services.certifier.store import CertificateStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Issued:
    certificate: CertificateInfo
    fresh: bool  # False: the certificate already on disk is still good; nothing was asked


@dataclass(frozen=True)
class HeldBack:
    hold: Hold


@dataclass(frozen=True)
class Failed:
    failure: CertbotFailure
    recent_failed_validations: int = 0


Outcome = Issued | HeldBack | Failed


def renewal_due(certificate: CertificateInfo) -> datetime:
    """The latest time to renew: when a third of the certificate's lifetime remains."""
    return certificate.not_after - certificate.lifetime / 3


def renew_at(certificate: CertificateInfo, rng: random.Random, *,
             jitter: float = 0.1) -> datetime:
    """When to renew: `renewal_due`, minus up to `jitter` of a third of the lifetime (random),
    so certificates issued together do not all renew together."""
    third = certificate.lifetime / 3
    return certificate.not_after - third - third * (jitter * rng.random())


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Issuer:
    def __init__(self, *, certbot: Certbot, store: CertificateStore, limits: Limits,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.certbot = certbot
        self.store = store
        self.limits = limits
        self.clock = clock

    async def ensure(self, name: str, *, replace_serial: str | None = None) -> Outcome:
        """A good certificate for `name`: the one on disk if it is not due, else a new one.

        `replace_serial` (renewal) asks for that certificate to be replaced even before
        it is due; if the one on disk is already another, it is kept.
        """
        async with self.certbot.exclusive():
            now = self.clock()
            current = self.certbot.current(name)
            if current is not None and current.serial != replace_serial \
                    and now < renewal_due(current):
                return Issued(current, fresh=False)
            hold = hold_back(await self.store.history(name, self.limits, now), self.limits, now)
            if hold is not None:
                return HeldBack(hold)
            try:
                certificate = await self.certbot.certonly(name, replace=current)
            except CertbotError as exc:
                return await self._failed(name, exc.failure)
            except asyncio.CancelledError:
                # Abandoned mid-run (a stopping certifier's deadline): certbot may already
                # have placed an order, so it is counted; the rate-limit ledger errs on the
                # safe side rather than let a redelivery overshoot a CA limit.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self.store.record(ORDER, name, self.clock())
                raise
            at = self.clock()
            await self.store.record(ORDER, name, at)
            await self.store.record(CERTIFICATE, name, at)
            return Issued(certificate, fresh=True)

    async def _failed(self, name: str, failure: CertbotFailure) -> Failed:
        at = self.clock()
        if failure.kind not in (FailureKind.CA_UNREACHABLE, FailureKind.LOCAL):
            await self.store.record(ORDER, name, at)  # the CA saw an order (or refused one)
        recent = 0
        if failure.kind is FailureKind.VALIDATION:
            await self.store.record(FAILED_VALIDATION, name, at)
            recent = await self.store.count_since(
                FAILED_VALIDATION, name, at - self.limits.failed_validations_window)
        return Failed(failure, recent)
