"""Keeping one edge's nginx in step with the certificate store.

The store (shared.certificates) is the truth: the agent serves exactly the certificates
`CertStore.served` lists (domain verified or active, not expired). Two ways lead there,
both idempotent:

- events on the edge's own queue: `certificate.issued`, `domain.lapsed` and
  `domain.deleted` each make the agent look at that one domain in the store and
  install, replace or remove its file (`domain.deleted` removes it at once: the
  customer gave the name up, whatever the row says yet);
- `reconcile`: at start and every EDGE_RECONCILE_S, the store's name → serial list is
  compared with the files; only the difference is fetched and written. An edge that was
  down, or a missed event, is repaired here (counted with `via="reconcile"`).

A certificate counts as installed only once nginx presented its serial in a TLS
handshake (SNI = the domain); then the edge's row in `edge_certificates` is written and
`certificate.installed` published.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from services.edge.database import EdgeRecords
from services.edge.nginx import CertificateFiles
from shared.broker.publisher import Publisher
from shared.certificates import CertStore, StoredCertificate
from shared.domains import InvalidDomain, normalise_domain
from shared.errors import PermanentError, TransientError
from shared.events import CertificateInstalled, DomainDeleted, Event
from shared.handshake import presented_serial
from shared.metrics import EdgeMetrics

log = structlog.get_logger(__name__)

CONFIRM_TIMEOUT_S = 5.0  # nginx reads the file at the next handshake: this is generous
RECORD_BATCH = 500


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
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def load(self) -> None:
        """What the files on disk hold (a restarted agent starts from them)."""
        self.files.prepare()
        self.installed = self.files.installed()
        self._gauges()

    # --- one domain ---------------------------------------------------------------------

    async def refresh(self, name: str, *, via: str) -> str:
        """Make `name`'s file what the store says; returns what was done."""
        async with self._lock(name):
            facts = await self.records.domain(name)
            certificate = await self.store.get(name) if facts and facts.served else None
            if certificate is not None and certificate.not_after <= datetime.now(UTC):
                certificate = None
            if certificate is None:
                self.wanted.pop(name, None)
                return await self._remove(name, via=via)
            self.wanted[name] = certificate.serial
            assert facts is not None
            return await self._install(certificate, facts.customer_id, via=via)

    async def remove(self, name: str, *, via: str) -> str:
        async with self._lock(name):
            self.wanted.pop(name, None)
            return await self._remove(name, via=via)

    async def _install(self, certificate: StoredCertificate, customer_id: str, *,
                       via: str) -> str:
        name, serial = certificate.name, certificate.serial
        if self.installed.get(name) == serial:
            return "unchanged"
        await asyncio.to_thread(self.files.write, name, certificate.chain_pem.encode("ascii"),
                                certificate.key_pem)
        await self._confirm(name, serial)
        self.installed[name] = serial
        if via != "reconcile":  # reconcile writes its rows together, at its end
            await self.records.record({name: serial})
        await self.publisher.publish_event(CertificateInstalled(
            edge_id=self.edge_id, domain=name, customer_id=customer_id, serial=serial))
        self.metrics.changed("installed", via)
        self._gauges()
        return "installed"

    async def _remove(self, name: str, *, via: str) -> str:
        removed = await asyncio.to_thread(self.files.remove, name)
        had = self.installed.pop(name, None) is not None
        await self.records.forget([name])
        self._gauges()
        if removed or had:
            self.metrics.changed("removed", via)
            return "removed"
        return "nothing-to-remove"

    async def _confirm(self, name: str, serial: str) -> None:
        """Until nginx presents `serial` for `name` (bounded): it reads the file at each
        handshake, so the first one normally does."""
        if self.verify_address is None:
            return
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        presented = None
        while presented != serial:
            presented = await presented_serial(*self.verify_address, name)
            if presented == serial:
                return
            if time.monotonic() > deadline:
                raise TransientError(f"nginx presents serial {presented} for {name}, "
                                     f"not the installed {serial}")
            await asyncio.sleep(0.05)

    # --- everything ---------------------------------------------------------------------

    async def reconcile(self) -> dict[str, int]:
        """Compare every file with the store and repair the difference; returns counts."""
        started = time.monotonic()
        wanted = await self.store.served_serials()
        self.wanted = dict(wanted)
        gone = [name for name in self.installed if name not in wanted]
        stale = [name for name, serial in wanted.items() if self.installed.get(name) != serial]
        counts = {"removed": 0, "installed": 0, "failed": 0}
        for name in gone:
            if await self.remove(name, via="reconcile") == "removed":
                counts["removed"] += 1
        if stale:
            customers = await self.records.customers(stale)
            for certificate in await self._fetch(stale):
                try:
                    async with self._lock(certificate.name):
                        outcome = await self._install(
                            certificate, customers.get(certificate.name, ""), via="reconcile")
                except TransientError as exc:
                    counts["failed"] += 1
                    log.warning("edge.install_failed", domain=certificate.name, error=exc.reason)
                    continue
                counts["installed"] += outcome == "installed"
        await self._fix_rows()
        self.metrics.reconciled.set(time.time())
        self._gauges()
        log.info("edge.reconciled", edge_id=self.edge_id, served=len(self.installed),
                 behind=self.behind(), duration_ms=round((time.monotonic() - started) * 1000),
                 **counts)
        return counts

    async def _fetch(self, names: Sequence[str]) -> list[StoredCertificate]:
        """The stored certificates of `names`: one by one for a few, all at once for many
        (a new or long-gone edge)."""
        if len(names) > 50:
            wanted = set(names)
            return [c for c in await self.store.served() if c.name in wanted]
        found = [await self.store.get(name) for name in names]
        return [c for c in found if c is not None and c.serial == self.wanted.get(c.name)]

    async def _fix_rows(self) -> None:
        """Make this edge's `edge_certificates` rows say what the files hold (a crash
        between a write and its row, or rows of files removed by hand)."""
        recorded = await self.records.recorded()
        await self.records.forget([name for name in recorded if name not in self.installed])
        differ = {name: serial for name, serial in self.installed.items()
                  if recorded.get(name) != serial}
        items = list(differ.items())
        for start in range(0, len(items), RECORD_BATCH):
            await self.records.record(dict(items[start:start + RECORD_BATCH]))

    def behind(self) -> int:
        """Names whose file is not what the store last said: to install or to remove."""
        return sum(self.installed.get(name) != serial for name, serial in self.wanted.items()) \
            + sum(name not in self.wanted for name in self.installed)

    def _gauges(self) -> None:
        self.metrics.served.set(len(self.installed))
        self.metrics.behind.set(self.behind())

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


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
    return {"served": len(edge.installed), "behind": edge.behind()}
