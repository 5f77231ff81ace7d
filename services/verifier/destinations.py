"""The destination watch: early warning that a customer's links lead to listed destinations.

A customer linking to phishing or malware is how a tracking domain gets listed. The
verifier reads its own bounded copy of the clicks (`<exchange>.verifier.destinations`,
shared/broker/names.py), so the redirector and the logger never wait for this: a slow or
stopped watch only lets that queue drop its oldest batches. For each batch:

1. each click's destination is reduced to its registered domain (the Public Suffix
   List's, as SURBL and URIBL list them; a destination that is an IP address or not a
   host name is skipped);
2. a destination with a fresh verdict in memory costs nothing more (almost every click:
   customers send many clicks to few destinations). Memory is bounded (`memory` entries,
   the oldest quarter dropped when full); behind it, `destination_checks` keeps verdicts
   across restarts, so a restart does not ask the list again before `recheck_s`;
3. the rest are asked of the DBL through the verifier's `ReputationEngine` (its cache,
   deduplication and daily budget hold for this watch too). A refusal, an error or a
   spent budget is no verdict: nothing is stored, and a later click asks again. The
   list's controls are asked first (at most every `controls_s`); while they fail, no
   verdict is taken from the list;
4. the first time a customer's clicks lead to a listed destination, `destination.listed`
   is published with the row that records it (destination_store.py): once per customer,
   destination and list, whatever the campaign, restarts and redeliveries.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import structlog
from aio_pika.abc import AbstractRobustConnection

from services.verifier.destination_store import DestinationStore, StoredVerdict
from services.verifier.reputation.blocklists import FIX_URLS, BlockList, Kind, Status
from services.verifier.reputation.engine import ReputationEngine
from shared.broker import topology as broker_topology
from shared.broker.connection import open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import DESTINATIONS_QUEUE
from shared.broker.publisher import Publisher
from shared.domains import InvalidDomain, normalise_domain, registered_domain
from shared.events import (
    ClickDestinations,
    DestinationListed,
    Event,
    EventData,
    decode_click_destinations,
)
from shared.metrics import ConsumerMetrics, DestinationMetrics

log = structlog.get_logger(__name__)

K = TypeVar("K")
V = TypeVar("V")
# Event ids derived from (customer, destination, list): a publish repeated after a crash
# between the broker's confirm and the commit carries the same id, which consumers dedup.
_EVENT_NAMESPACE = uuid.UUID("6f1c8d2e-4b7a-5c3d-9e8f-0a1b2c3d4e5f")


class Announcer(Protocol):
    async def publish_event(self, data: EventData, *, event_id: str | None = None) -> str: ...


class BoundedMap(Generic[K, V]):
    """A dict that never holds more than `limit` entries: when full, the oldest quarter
    (by insertion) goes. Cheaper per click than an LRU, and as good for this: a dropped
    entry only costs one more look in `destination_checks`."""

    def __init__(self, limit: int) -> None:
        self.limit = max(4, limit)
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> None:
        items = self._items
        if key not in items and len(items) >= self.limit:
            for old in list(itertools.islice(items, self.limit // 4)):
                del items[old]
        items[key] = value


# scheme://[userinfo@]host: the host as written (a port, path, query or fragment ends it;
# an IPv6 literal gives "", no domain to look up).
_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#\\@]*@)?([^/?#\\:@\[]*)")


def destination_host(url: str) -> str:
    """The host of an absolute URL, as written; empty when there is none."""
    found = _HOST.match(url)
    return found.group(1) if found else ""


@functools.lru_cache(maxsize=65_536)
def destination_of(host: str) -> str | None:
    """The registered domain a host belongs to, in A-label form; None for an IP address
    or a name that is not a domain (nothing any domain list could list)."""
    try:
        name = normalise_domain(host)
    except InvalidDomain:
        return None
    return registered_domain(name)


def event_id_for(customer_id: str, destination: str, blocklist: Kind) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{customer_id}\0{destination}\0{blocklist}"))


@dataclass(frozen=True)
class Known:
    """A verdict held in memory, good until `until` (wall clock, seconds)."""

    listed: bool
    categories: tuple[str, ...]
    until: float


class DestinationWatch:
    """Handles batches of `click.tracked` from the destination queue (see the module doc)."""

    def __init__(self, *, lookups: ReputationEngine, blocklist: BlockList, store: DestinationStore,
                 announcer: Announcer, metrics: DestinationMetrics,
                 recheck_s: float = 86400.0, memory: int = 100_000,
                 controls_s: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._lookups = lookups
        self._blocklist = blocklist
        self._store = store
        self._announcer = announcer
        self._metrics = metrics
        self._recheck_s = recheck_s
        self._controls_s = controls_s
        self._clock = clock
        self._verdicts: BoundedMap[str, Known] = BoundedMap(memory)
        self._told: BoundedMap[tuple[str, str], bool] = BoundedMap(memory)
        self._controls_until = 0.0
        self._controls_ok = False
        self._controls_lock = asyncio.Lock()

    async def handle(self, events: Sequence[Event[ClickDestinations]]) -> None:
        """One message's clicks: the new (customer, destination) pairs checked and told.

        The per-click part is kept to a split and a set lookup: a message's clicks mostly
        repeat a few (customer, URL authority) pairs, and only a new one goes on to the
        host, its registered domain and the verdicts."""
        now = self._clock()
        verdicts, told = self._verdicts, self._told
        pending: dict[tuple[str, str], str] = {}  # (customer, destination) -> campaign
        seen: set[tuple[str, str]] = set()
        clicks = 0
        for event in events:
            clicks += len(event.data.clicks)
            for click in event.data.clicks:
                # scheme:, "", authority[, path]: the authority decides the host.
                parts = click.url.split("/", 3)
                if len(parts) < 3:
                    continue
                key = (click.customer_id, parts[2])
                if key in seen:
                    continue
                seen.add(key)
                destination = destination_of(destination_host(click.url))
                if destination is None:
                    continue
                known = verdicts.get(destination)
                if known is not None and known.until > now and (
                        not known.listed or (click.customer_id, destination) in told):
                    continue
                pending.setdefault((click.customer_id, destination), click.campaign_id)
        if not pending:
            self._metrics.clicks.inc(clicks)
            return
        started = time.perf_counter()
        fresh = await self._verdicts_for({destination for _, destination in pending}, now)
        listed = {pair: campaign for pair, campaign in pending.items()
                  if pair[1] in fresh and fresh[pair[1]].listed}
        already = await self._store.told(listed, self._blocklist.kind.value) if listed else set()
        told_now = 0
        for (customer_id, destination), campaign_id in listed.items():
            if (customer_id, destination) not in already and await self._tell(
                    customer_id, destination, campaign_id, fresh[destination].categories):
                told_now += 1
            told.put((customer_id, destination), True)
        log.info("destinations.checked", clicks=clicks, pairs=len(pending),
                 destinations=len({d for _, d in pending}), listed=len(listed), told=told_now,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
        self._metrics.clicks.inc(clicks)  # once handled: a retried message counts once

    async def _verdicts_for(self, destinations: set[str], now: float) -> dict[str, Known]:
        """A fresh verdict for each destination that has one: memory, then the table, then
        the list. Destinations the list gave no verdict on are left out."""
        found: dict[str, Known] = {}
        missing = []
        for destination in destinations:
            known = self._verdicts.get(destination)
            if known is not None and known.until > now:
                found[destination] = known
            else:
                missing.append(destination)
        if missing:
            for destination, stored in (await self._store.verdicts(missing)).items():
                until = stored.checked_at.timestamp() + self._recheck_s
                if until > now:
                    found[destination] = self._remember(destination, stored.listed,
                                                        stored.categories, until)
            missing = [d for d in missing if d not in found]
        if missing:
            asked = await self._ask(missing, now)
            found.update(asked)
        return found

    async def _ask(self, destinations: list[str], now: float) -> dict[str, Known]:
        if not await self._controls_pass(now):
            self._metrics.checked["unusable"].inc(len(destinations))
            return {}
        destinations = self._affordable(destinations)
        if not destinations:
            return {}
        lookups = await asyncio.gather(*(self._lookups.lookup(self._blocklist, destination)
                                         for destination in destinations))
        found: dict[str, Known] = {}
        stored = []
        checked_at = datetime.fromtimestamp(now, UTC)
        for destination, lookup in zip(destinations, lookups, strict=True):
            verdict = lookup.verdict
            self._metrics.checked[verdict.status.value].inc()
            if verdict.status not in (Status.LISTED, Status.NOT_LISTED):
                log.info("destination.no_verdict", destination=destination,
                         status=verdict.status.value, detail=verdict.detail)
                continue
            listed = verdict.status == Status.LISTED
            found[destination] = self._remember(destination, listed, verdict.categories,
                                                now + self._recheck_s)
            stored.append(StoredVerdict(destination, listed, verdict.categories, checked_at))
        await self._store.save_verdicts(stored)
        return found

    def _affordable(self, destinations: list[str]) -> list[str]:
        """Those of `destinations` the watch may ask now: answers in the engine's cache
        always; otherwise only while more than half of the list's daily budget is left.
        Customers choose their destinations (and their number); that half stays for the
        tracking domains' own watch, whatever they link to. The rest are asked on a
        later click, tomorrow at the latest."""
        budget = self._lookups.budget(self._blocklist)
        room = budget.left - budget.limit // 2
        affordable = []
        for destination in destinations:
            if self._lookups.cached(self._blocklist, destination):
                affordable.append(destination)
            elif room > 0:
                room -= 1
                affordable.append(destination)
        if len(affordable) < len(destinations):
            self._metrics.checked["budget"].inc(len(destinations) - len(affordable))
            log.warning("destinations.budget_reserved", list=self._blocklist.label,
                        not_asked=len(destinations) - len(affordable), left=budget.left)
        return affordable

    async def _controls_pass(self, now: float) -> bool:
        """Whether the list answers this resolver truthfully (its controls, asked at most
        every `controls_s`; concurrent batches share one asking)."""
        async with self._controls_lock:
            if now >= self._controls_until:
                outcome = await self._lookups.run_controls(self._blocklist)
                self._controls_ok = outcome.passed
                self._controls_until = now + self._controls_s
                if not self._controls_ok:
                    log.warning("destinations.list_unusable", list=self._blocklist.label,
                                why=outcome.why)
            return self._controls_ok

    def _remember(self, destination: str, listed: bool, categories: tuple[str, ...],
                  until: float) -> Known:
        known = Known(listed, categories, until)
        self._verdicts.put(destination, known)
        return known

    async def _tell(self, customer_id: str, destination: str, campaign_id: str,
                    categories: tuple[str, ...]) -> bool:
        kind = self._blocklist.kind
        event_id = event_id_for(customer_id, destination, kind)
        data = DestinationListed(customer_id=customer_id, campaign_id=campaign_id,
                                 destination=destination, blocklist=kind.value,
                                 categories=list(categories),
                                 fix_url=FIX_URLS[kind])
        told = await self._store.record_listing(
            customer_id=customer_id, destination=destination, blocklist=kind.value,
            categories=categories, campaign_id=campaign_id, event_id=event_id,
            announce=functools.partial(self._announcer.publish_event, data,
                                       event_id=event_id))
        if told:
            self._metrics.listed(kind.value, categories)
            log.warning("destination.listed", customer_id=customer_id,
                        campaign_id=campaign_id, destination=destination, list=kind.value,
                        categories=list(categories), event_id=event_id)
        return told


def dbl_of(engine: ReputationEngine) -> BlockList | None:
    """The engine's DBL, which the watch asks; None when REPUTATION_LISTS has none."""
    return next((b for b in engine.lists if b.kind == Kind.DBL), None)


async def start_watch(*, connection: AbstractRobustConnection,
                      topology: broker_topology.Topology, engine: ReputationEngine,
                      blocklist: BlockList, store: DestinationStore, source: str,
                      metrics: DestinationMetrics, consumer_metrics: ConsumerMetrics,
                      recheck_s: float, memory: int, prefetch: int,
                      max_attempts: int) -> Consumer:
    """Consume the destination queue on a channel of its own (its own prefetch, so the
    verifier's domain events never queue behind clicks); returns the started consumer,
    whose `stop()` the caller owes."""
    channel = await open_channel(connection)
    exchange = await broker_topology.declare(channel, topology)
    publisher = Publisher(channel, exchange, source=source)
    watch = DestinationWatch(lookups=engine, blocklist=blocklist, store=store,
                             announcer=publisher, metrics=metrics, recheck_s=recheck_s,
                             memory=memory)
    consumer = Consumer(channel=channel, topology=topology, queue=DESTINATIONS_QUEUE,
                        handler=watch.handle, publisher=publisher,
                        policy=ConsumePolicy(prefetch=prefetch, max_attempts=max_attempts),
                        metrics=consumer_metrics, decode=decode_click_destinations)
    await consumer.start()
    return consumer
