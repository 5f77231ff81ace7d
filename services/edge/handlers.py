"""Keeping one edge's nginx in step with the certificate store.

The store (shared.certificates) is the truth: the agent serves exactly the certificates
`CertStore.served` lists (domain verified or active, not expired). Two ways lead there,
both idempotent:

- events on the edge's own queue: `certificate.issued`, `domain.lapsed` and
  `domain.deleted` each make the agent look at that one domain in the store and
  install, replace or remove its file (`domain.deleted` removes it at once: the
  customer gave the name up, whatever the row says yet);
- `reconcile`: at start and every EDGE_RECONCILE_S, the store's name → serial list is
  compared with the files; only the difference is fetched and installed, in bulk (every
  file written, then confirmed by handshakes a few at a time, rows written and events
  published in batches). An edge that was down, or a missed event, is repaired here
  (counted with `via="reconcile"`).

A certificate counts as installed only once nginx presented its serial in a TLS
handshake (SNI = the domain); then the edge's row in `edge_certificates` is written
(not announced) and `certificate.installed` published, and the row marked announced
once the broker confirmed it. An announcement that failed is sent again by the next
event for the domain or the next reconciliation: at least once.

One bad domain never holds back the others: a key that does not open with this edge's
CERT_STORE_KEYS, a chain that does not parse, a file that cannot be written, a serial
nginx does not present, an announcement that fails: each is logged, counted
(`tracking_edge_certificate_failures_total{reason}`), and retried (a failed event by its
retry tier when the cause may pass; everything by the next reconciliation, which comes
within `RETRY_S` while anything failed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from services.edge.database import EdgeRecords
from services.edge.nginx import CertificateFiles
from shared.broker.publisher import Publisher
from shared.certificates import CertStore, PemError, StoredCertificate, Unreadable
from shared.certificates.pem import leaf
from shared.domains import InvalidDomain, normalise_domain
from shared.errors import PermanentError, TransientError
from shared.events import CertificateInstalled, DomainDeleted, Event
from shared.handshake import presented_serial
from shared.metrics import EdgeMetrics

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

CONFIRM_TIMEOUT_S = 5.0  # nginx reads the file at the next handshake: this is generous
CONFIRM_CONCURRENCY = 16  # handshakes at once while installing many
WRITERS = 8  # files written at once (their fsyncs overlap)
ANNOUNCE_CONCURRENCY = 64  # certificate.installed publishes awaiting their confirm at once
RETRY_S = 30.0  # the next reconciliation, at the latest, while anything failed
# Failures an event's retry may cure (the others wait for the store to change).
PASSING = frozenset({"write", "confirm", "announce"})
SAMPLE = 10  # names a failure line lists


@dataclass
class Edge:
    """One edge's certificates: what nginx serves (`installed`) against the store."""

    edge_id: str
    store: CertStore
    records: EdgeRecords
    files: CertificateFiles
    publisher: Publisher
    metrics: EdgeMetrics
    # Where to shake hands with nginx to see what it presents; None: trust the file.
    verify_address: tuple[str, int] | None
    installed: dict[str, str] = field(default_factory=dict)  # name -> serial nginx serves
    wanted: dict[str, str] = field(default_factory=dict)  # name -> serial the store serves
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason, until it works
    write_concurrency: int = WRITERS
    confirm_concurrency: int = CONFIRM_CONCURRENCY
    announce_concurrency: int = ANNOUNCE_CONCURRENCY
    # One change at a time: a reconciliation never writes over what an event just did.
    _mutex: asyncio.Lock = field(default_factory=asyncio.Lock)

    def load(self) -> None:
        """What the files on disk hold (a restarted agent starts from them)."""
        self.files.prepare()
        self.installed = self.files.installed()
        self._gauges()

    # --- one domain ---------------------------------------------------------------------

    async def refresh(self, name: str, *, via: str) -> str:
        """Make `name`'s file what the store says, and announce it if that is still to
        do; returns what was done. Raises `TransientError` for a failure a retry may cure."""
        async with self._mutex:
            self.failed.pop(name, None)  # this is its retry
            facts = await self.records.domain(name)
            found = await self.store.get_many([name]) if facts and facts.served else []
            certificate = found[0] if found else None
            if isinstance(certificate, Unreadable):
                self._failed({name: certificate.reason}, "seal", via=via)
                return "failed"
            if certificate is not None and certificate.not_after <= datetime.now(UTC):
                certificate = None
            if certificate is None:
                self.wanted.pop(name, None)
                removed = await self._remove([name], via=via)
                self._gauges()
                return "removed" if removed else "nothing-to-remove"
            self.wanted[name] = certificate.serial
            was = self.installed.get(name)
            await self._install([certificate], via=via)
            announced = await self._announce([name], via=via)
            self._gauges()
        reason = self.failed.get(name)
        if reason in PASSING:
            raise TransientError(f"{name}: {reason} failed (see edge.{reason}_failed)")
        if reason is not None:
            return "failed"
        if was != certificate.serial:
            return "installed"
        return "announced" if announced else "unchanged"

    async def remove(self, name: str, *, via: str) -> str:
        async with self._mutex:
            self.wanted.pop(name, None)
            removed = await self._remove([name], via=via)
            self._gauges()
        return "removed" if removed else "nothing-to-remove"

    # --- many domains -------------------------------------------------------------------

    async def _install(self, certificates: Sequence[StoredCertificate], *, via: str) -> int:
        """Write every file that differs, then confirm them by handshakes (a few at a
        time) and record the confirmed ones; returns how many were installed."""
        todo = [c for c in certificates if self.installed.get(c.name) != c.serial]
        if not todo:
            return 0
        written, bad_chain, unwritten = await asyncio.to_thread(self._write, todo)
        self._failed(bad_chain, "chain", via=via)
        self._failed(unwritten, "write", via=via)
        seen = await at_most(self.confirm_concurrency, written,
                             lambda c: self._confirm(c.name, c.serial))
        confirmed = {c.name: c.serial for c, wrong in zip(written, seen, strict=True)
                     if wrong is None}
        self._failed({c.name: f"nginx presents {wrong}, not {c.serial}"
                      for c, wrong in zip(written, seen, strict=True) if wrong is not None},
                     "confirm", via=via)
        for name, serial in confirmed.items():
            self.installed[name] = serial
            self.failed.pop(name, None)
            self.metrics.changed("installed", via)
        await self.records.record(confirmed)
        return len(confirmed)

    def _write(self, certificates: Sequence[StoredCertificate],
               ) -> tuple[list[StoredCertificate], dict[str, str], dict[str, str]]:
        """(In a thread.) Each file written in place, a few at once (their fsyncs share
        the disk's flushes), unless its chain does not parse or is not the stored
        serial's (the file there is kept); returns the written ones, and why the others
        were not: (bad chain, write failed)."""
        written: list[StoredCertificate] = []
        failures: dict[str, dict[str, str]] = {"chain": {}, "write": {}}
        with ThreadPoolExecutor(max_workers=self.write_concurrency,
                                thread_name_prefix="edge-write") as pool:
            for certificate, failure in zip(
                    certificates, pool.map(self._write_one, certificates), strict=True):
                if failure is None:
                    written.append(certificate)
                else:
                    failures[failure[0]][certificate.name] = failure[1]
        return written, failures["chain"], failures["write"]

    def _write_one(self, certificate: StoredCertificate) -> tuple[str, str] | None:
        """Write one file; None, or (reason, error) when it was not written."""
        try:
            serial = format(leaf(certificate.chain_pem).serial_number, "x")
        except PemError as exc:
            return "chain", str(exc)
        if serial != certificate.serial:
            return "chain", f"the chain's leaf is serial {serial}, the row says " \
                f"{certificate.serial}"
        try:
            self.files.write(certificate.name, certificate.chain_pem.encode("ascii"),
                             certificate.key_pem)
        except (OSError, PermanentError, UnicodeError) as exc:
            return "write", f"{type(exc).__name__}: {exc}"
        return None

    async def _confirm(self, name: str, serial: str) -> str | None:
        """Until nginx presents `serial` for `name` (bounded): None once it does, else
        what it presented. It reads the file at each handshake, so the first one
        normally does."""
        if self.verify_address is None:
            return None
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while (presented := await presented_serial(*self.verify_address, name)) != serial:
            if time.monotonic() > deadline:
                return str(presented)
            await asyncio.sleep(0.05)
        return None

    async def _remove(self, names: Sequence[str], *, via: str) -> int:
        """Remove each name's file and row; returns how many were there."""
        gone: list[str] = []
        unremoved: dict[str, str] = {}
        removed = 0
        for name in names:
            try:
                had_file = await asyncio.to_thread(self.files.remove, name)
            except (OSError, PermanentError) as exc:
                unremoved[name] = f"{type(exc).__name__}: {exc}"
                continue
            removed += had_file or name in self.installed
            self.installed.pop(name, None)
            self.failed.pop(name, None)
            gone.append(name)
        self._failed(unremoved, "write", via=via)
        await self.records.forget(gone)
        for _ in range(removed):
            self.metrics.changed("removed", via)
        return removed

    async def _announce(self, names: Iterable[str] | None = None, *, via: str) -> int:
        """Publish `certificate.installed` for every row (of `names`) that is installed
        and not announced, many awaiting their confirm at once; mark the confirmed ones.
        Returns how many went out."""
        pending = {name: serial for name, serial in
                   (await self.records.unannounced(names)).items()
                   if serial and self.installed.get(name) == serial}
        if not pending:
            return 0
        customers = await self.records.customers(pending)

        async def announce(item: tuple[str, str]) -> str | None:
            name, serial = item
            try:
                await self.publisher.publish_event(CertificateInstalled(
                    edge_id=self.edge_id, domain=name,
                    customer_id=customers.get(name, ""), serial=serial))
            except Exception as exc:  # unroutable, a closed channel, a timeout
                return f"{type(exc).__name__}: {exc}"
            return None

        errors = await at_most(self.announce_concurrency, list(pending.items()), announce)
        done = {name: serial for (name, serial), error in
                zip(pending.items(), errors, strict=True) if error is None}
        await self.records.announced(done)
        for name in done:
            if self.failed.get(name) == "announce":
                del self.failed[name]
        self._failed({name: error for name, error in zip(pending, errors, strict=True)
                      if error is not None}, "announce", via=via)
        return len(done)

    def _failed(self, errors: Mapping[str, str], reason: str, *, via: str) -> None:
        """Note, count and log (one line per pass and reason) the names that failed."""
        if not errors:
            return
        for name in errors:
            self.failed[name] = reason
        self.metrics.failed(reason, len(errors))
        names = sorted(errors)
        log.warning(f"edge.{reason}_failed", edge_id=self.edge_id, via=via, count=len(names),
                    domains=names[:SAMPLE], error=errors[names[0]])

    # --- everything ---------------------------------------------------------------------

    async def reconcile(self) -> dict[str, int]:
        """Compare every file with the store, repair the difference and announce what is
        still unannounced; returns counts."""
        async with self._mutex:
            started = time.monotonic()
            wanted = await self.store.served_serials()
            self.wanted = dict(wanted)
            gone = [name for name in self.installed if name not in wanted]
            stale = [name for name, serial in wanted.items()
                     if self.installed.get(name) != serial]
            self.failed = {name: reason for name, reason in self.failed.items()
                           if name in stale}  # this pass tries them again
            counts = {"removed": await self._remove(gone, via="reconcile"), "installed": 0}
            if stale:
                certificates: list[StoredCertificate] = []
                unreadable: dict[str, str] = {}
                for found in await self.store.get_many(stale):
                    if isinstance(found, Unreadable):
                        unreadable[found.name] = found.reason
                    elif found.serial == wanted.get(found.name):
                        certificates.append(found)
                self._failed(unreadable, "seal", via="reconcile")
                counts["installed"] = await self._install(certificates, via="reconcile")
            await self._fix_rows()
            counts["announced"] = await self._announce(via="reconcile")
            counts["failed"] = len(self.failed)
            self.metrics.reconciled.set(time.time())
            self._gauges()
        log.info("edge.reconciled", edge_id=self.edge_id, served=len(self.installed),
                 behind=self.behind(), duration_ms=round((time.monotonic() - started) * 1000),
                 **counts)
        return counts

    async def _fix_rows(self) -> None:
        """Make this edge's `edge_certificates` rows say what the files hold (a crash
        between a write and its row, or rows of files removed by hand); a row written
        here is announced after."""
        recorded = await self.records.recorded()
        await self.records.forget([name for name in recorded if not self.installed.get(name)])
        await self.records.record({name: serial for name, serial in self.installed.items()
                                   if serial and recorded.get(name) != serial})

    def behind(self) -> int:
        """Names whose file is not what the store last said: to install or to remove."""
        return sum(self.installed.get(name) != serial for name, serial in self.wanted.items()) \
            + sum(name not in self.wanted for name in self.installed)

    def _gauges(self) -> None:
        self.metrics.served.set(len(self.installed))
        self.metrics.behind.set(self.behind())


async def at_most(concurrency: int, items: Sequence[T],
                  work: Callable[[T], Awaitable[R]]) -> list[R]:
    """`work(item)` for every item, `concurrency` at a time; the results in order. (A
    fixed set of workers, not one task per item behind a semaphore: with thousands
    waiting, asyncio's semaphore costs grow with the queue.)"""
    results: dict[int, R] = {}
    next_index = iter(range(len(items)))

    async def worker() -> None:
        for index in next_index:
            results[index] = await work(items[index])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    return [results[index] for index in range(len(items))]


async def handle_events(events: Sequence[Event[Any]], *, edge: Edge) -> None:
    """`certificate.issued`, `domain.lapsed`, `domain.deleted`: see the module docstring."""
    for event in events:
        started = time.perf_counter()
        try:
            name = normalise_domain(event.data.domain)
        except InvalidDomain as exc:
            raise PermanentError(f"{event.type}: {exc}") from exc
        if isinstance(event.data, DomainDeleted):
            outcome = await edge.remove(name, via="event")
        else:
            outcome = await edge.refresh(name, via="event")
        log.info("edge.event", edge_id=edge.edge_id, type=event.type, domain=name,
                 outcome=outcome, serial=edge.installed.get(name),
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))


def summary(edge: Edge) -> Mapping[str, object]:
    return {"served": len(edge.installed), "behind": edge.behind(), "failed": len(edge.failed)}
