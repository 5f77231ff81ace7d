"""Getting a certificate for one name, once: the step the handler and the renewal loop share.

Everything happens under the certbot directory's lock, so the decision (is the
current certificate still good? do the rate limits allow an order?) and the run that
follows it cannot interleave with another handler, the renewal loop, or another
certifier process on the same directory. Every order, certificate and failed
validation is written to `acme_events`, which is what `ratelimits` counts.

The certificate store (shared/certificates) is the truth; certbot's directory is a
cache the certifier may lose. The current certificate is the stored one (or the one on
disk when it is newer: stored then, which also adopts what an older version left on
disk). Every certificate certbot obtains is stored, its key sealed, before anything is
published. certbot's ACME account is stored after each run and written back into an
empty directory before the next, so a certifier on a new machine renews from the store
with the same account and places no order for a certificate that is still good.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from services.certifier.ari import AriClient, RenewalWindow
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
from shared.certificates import AcmeAccounts, CertStore

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


# The soonest a certificate just recorded is looked at again for renewal.
FRESH_LOOK_DELAY = timedelta(hours=1)


def stable_rng(certificate: CertificateInfo, window: RenewalWindow) -> random.Random:
    """The same draw for one certificate and one window at every look, so asking the CA
    again (each Retry-After) does not re-roll the moment earlier and earlier."""
    return random.Random(f"{certificate.serial}/{window.start.isoformat()}/"
                         f"{window.end.isoformat()}")


class Issuer:
    def __init__(self, *, certbot: Certbot, store: CertificateStore, vault: CertStore,
                 accounts: AcmeAccounts, limits: Limits, ari: AriClient | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.certbot = certbot
        self.store = store
        self.vault = vault  # the certificate store every edge reads
        self.accounts = accounts
        self.limits = limits
        self.ari = ari  # None: the CA's renewal information is never asked for
        self.clock = clock
        self._saved_account: dict[str, str] | None = None

    async def renewal_window(self, name: str,
                             certificate: CertificateInfo) -> RenewalWindow | None:
        """The CA's suggested renewal window for `name`'s stored `certificate` (RFC 9773);
        None when the CA offers none (or did not answer), or the certificate is not the
        stored one, or it has no ARI identifier."""
        if self.ari is None:
            return None
        stored = await self.vault.get(name)
        if stored is None or stored.serial != certificate.serial or stored.ari_id is None:
            return None
        return await self.ari.window(stored.ari_id, self.clock())

    async def schedule(self, name: str, certificate: CertificateInfo, rng: random.Random, *,
                       jitter: float = 0.1) -> datetime:
        """When the renewal loop should next look at `name`: the moment picked in the CA's
        window (or when to ask the CA again, if sooner); without ARI, `renew_at`."""
        window = await self.renewal_window(name, certificate)
        if window is None:
            return renew_at(certificate, rng, jitter=jitter)
        now = self.clock()
        # A window already over for a certificate just recorded would renew it again at
        # once, and again: such a CA is heard an hour later, not in a loop.
        return max(min(window.choose(now, stable_rng(certificate, window)),
                       now + window.retry_after), now + FRESH_LOOK_DELAY)

    async def current(self, name: str) -> CertificateInfo | None:
        """The certificate in service for `name`: the stored one, or the one on disk when
        the store has none or an older one (it is stored now)."""
        stored = await self.vault.get(name)
        disk = self.certbot.current(name)
        if disk is not None and (stored is None or (
                disk.serial != stored.serial and disk.not_before > stored.not_before)):
            chain, key = self.certbot.lineage(name)
            await self.vault.put(name, chain, key, issued_at=self.clock())
            log.info("certificate.stored_from_disk", domain=name, serial=disk.serial)
            return disk
        return stored.info if stored is not None else None

    async def _restore_account(self) -> None:
        """An empty certbot directory gets the stored account back (no new registration)."""
        if self.certbot.has_account():
            return
        stored = await self.accounts.load(self.certbot.server)
        if stored is not None:
            account_id, files = stored
            self.certbot.restore_account(files)
            self._saved_account = files
            log.info("acme.account_restored", account=account_id, server=self.certbot.server)

    async def _save_account(self) -> None:
        files = self.certbot.account_files()
        if not files or files == self._saved_account:
            return
        regr = next((path for path in files if path.endswith("/regr.json")), None)
        account_id = regr.rsplit("/", 2)[-2] if regr else "unknown"
        await self.accounts.save(self.certbot.server, account_id, files)
        self._saved_account = files

    async def ensure(self, name: str, *, replace_serial: str | None = None) -> Outcome:
        """A good certificate for `name`: the current one (`current`: the store's, or a
        newer one on disk) if it is not due, else a new one, stored before it is returned.

        `replace_serial` (renewal) asks for that certificate to be replaced even before
        it is due; if the one on disk is already another, it is kept.
        """
        async with self.certbot.exclusive():
            now = self.clock()
            current = await self.current(name)
            if current is not None and current.serial != replace_serial \
                    and now < renewal_due(current):
                return Issued(current, fresh=False)
            hold = hold_back(await self.store.history(name, self.limits, now), self.limits, now)
            if hold is not None:
                return HeldBack(hold)
            await self._restore_account()
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
            await self._save_account()
            chain, key = self.certbot.lineage(name)
            await self.vault.put(name, chain, key, issued_at=at)
            return Issued(certificate, fresh=True)

    async def _failed(self, name: str, failure: CertbotFailure) -> Failed:
        at = self.clock()
        if failure.kind is FailureKind.ACCOUNT:  # certbot removed it; so does the store
            await self.accounts.forget(self.certbot.server)
            self._saved_account = None
        elif failure.kind not in (FailureKind.CA_UNREACHABLE, FailureKind.LOCAL):
            await self._save_account()  # registered even if the order then failed
        if failure.kind not in (FailureKind.CA_UNREACHABLE, FailureKind.LOCAL):
            await self.store.record(ORDER, name, at)  # the CA saw an order (or refused one)
        recent = 0
        if failure.kind is FailureKind.VALIDATION:
            await self.store.record(FAILED_VALIDATION, name, at)
            recent = await self.store.count_since(
                FAILED_VALIDATION, name, at - self.limits.failed_validations_window)
        return Failed(failure, recent)
