"""Prometheus metrics: every metric the services export, defined here and nowhere else.

Nothing is created at import time. A service's entry point makes a registry
(`new_registry()`), builds its metrics object on it (`RedirectorMetrics(registry)`,
…) and passes that object to what it instruments; code built without one (tests,
tools) gets a private registry nobody scrapes. `MetricsServer` answers `GET /metrics`
on its own port (`METRICS_BIND`), never on the redirector's public port.

The server is an aiohttp app on the service's own event loop, not prometheus_client's
`start_http_server` thread: gauges read at scrape time (spool backlog, rows waiting
for a commit) then read the service's state on the thread that changes it, with no
locks and no torn reads; there is no extra thread; it starts and stops with the
service. A scrape (about a millisecond) runs between requests like any other task.

Hot paths use label children bound once (`.labels(...)` at start), never per call.
Names and meanings are listed in docs/observability.md; deploy/grafana and
deploy/prometheus use them, and a test checks that every name they use is defined here.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from shared.events import CertificateExpiring, CertificateFailed, CertificateIssued
from shared.internal_http import serve_route
from shared.outcomes import Outcome

log = structlog.get_logger(__name__)


# The redirector's work is tens of microseconds; the buckets resolve that and reach
# the 5 ms target (and ten times it) so the p99 panel and alert have edges to use.
REDIRECT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
CONFIRM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0)
ROWS_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# One message's handling: a click batch (milliseconds) up to a certbot run (minutes).
HANDLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                  30.0, 60.0, 120.0, 300.0)

# Label values that come from outside (a CA's error type, a handler's outcome text) are
# limited to this many distinct values per label; later newcomers become "other".
MAX_LABEL_VALUES = 50
OTHER = "other"


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A registry for one service process, with the process's CPU, memory and GC figures."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    return registry


class _Bounded:
    """Maps outside label values to themselves until `limit` distinct ones were seen."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


# --- consuming (logger, verifier, certifier): instrumented once in shared/broker/consumer ---

class ConsumerMetrics:
    EVENT_OUTCOMES = ("ok", "retry", "dead-lettered", "malformed", "requeued")
    DEAD_REASONS = ("malformed", "rejected", "exhausted")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "tracking_events_consumed", "Events taken from a service queue, by queue, event "
            "type and outcome (ok, retry, dead-lettered, malformed, requeued). Malformed "
            "events have type '-'.", ["queue", "type", "outcome"], registry=registry)
        self.retried = Counter(
            "tracking_messages_retried", "Messages sent to a delayed-retry tier after a "
            "transient failure.", ["queue"], registry=registry)
        self.dead_lettered = Counter(
            "tracking_messages_dead_lettered", "Messages put in a dead-letter queue, by reason "
            "(malformed, rejected: a permanent error, exhausted: out of attempts).",
            ["queue", "reason"], registry=registry)
        self.handle_seconds = Histogram(
            "tracking_message_handle_seconds", "Time from delivery to ack of one message "
            "(decode, handler, any retry or dead-letter publish).", ["queue"],
            buckets=HANDLE_BUCKETS, registry=registry)

    def for_queue(self, queue: str, types: Iterable[str] = ()) -> QueueMetrics:
        return QueueMetrics(self, queue, types)


class QueueMetrics:
    """One queue's children, bound at start (so every series exists from zero)."""

    def __init__(self, metrics: ConsumerMetrics, queue: str, types: Iterable[str]) -> None:
        self._events = metrics.events
        self._queue = queue
        self._children: dict[tuple[str, str], Any] = {}
        self.retried = metrics.retried.labels(queue)
        self.dead_lettered = {reason: metrics.dead_lettered.labels(queue, reason)
                              for reason in ConsumerMetrics.DEAD_REASONS}
        self.handle_seconds = metrics.handle_seconds.labels(queue)
        self._child("-", "malformed")
        for event_type in types:
            for outcome in ConsumerMetrics.EVENT_OUTCOMES:
                if outcome != "malformed":
                    self._child(event_type, outcome)

    def _child(self, event_type: str, outcome: str) -> Any:
        key = (event_type, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._events.labels(self._queue, event_type, outcome)
        return child

    def consumed(self, types: Iterable[str], outcome: str) -> None:
        """Count events by type (the types a queue accepts: a small, fixed set)."""
        counts: dict[str, int] = {}
        for event_type in types:
            counts[event_type] = counts.get(event_type, 0) + 1
        for event_type, count in counts.items():
            self._child(event_type, outcome).inc(count)

    def malformed(self, count: int = 1) -> None:
        self._child("-", "malformed").inc(count)


# --- the redirector ---------------------------------------------------------------------------

class Tally:
    """A count bumped on the event loop's thread only: `inc()` is an int add, no lock.

    prometheus_client's children take a lock on every `inc()`/`observe()`, a measurable
    share of the redirector's click path (docs/performance.md). Read at scrape time by
    `_ClickCollector`, on the same thread (see the module docstring), so no lock is
    needed and no count is torn.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Timings:
    """A histogram observed on the event loop's thread only (see `Tally`)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


class _ClickCollector:
    """Exposes the redirector's hot-path `Tally`s and `Timings` as Prometheus families."""

    def __init__(self, tallies: Mapping[tuple[str, str], Tally], timings: Timings) -> None:
        self._tallies = tallies
        self._timings = timings
        self._created = time.time()

    def describe(self) -> list[Metric]:
        return self._families(empty=True)

    def collect(self) -> list[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> list[Metric]:
        served = CounterMetricFamily(
            "tracking_clicks_served", "Requests for /t/<token>, by outcome: redirect (a "
            "person), bot (redirected, flagged automated; reason says why), refused (404; "
            "reason is the class of fault) or unavailable (503: the click could not be "
            "spooled).", labels=["outcome", "reason"])
        timings = HistogramMetricFamily(
            "tracking_redirect_duration_seconds", "Time the redirector's handler spends on "
            "one click it redirects (verify, spool, build the 302); excludes HTTP parsing and "
            "queueing.")
        if not empty:
            for (outcome, reason), tally in list(self._tallies.items()):
                served.add_metric([outcome, reason], tally.value, created=self._created)
            cumulative, buckets = 0, []
            bounds = [*map(floatToGoString, self._timings.bounds), "+Inf"]
            for bound, count in zip(bounds, self._timings.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            timings.add_metric([], buckets, self._timings.total)
            # add_metric takes no `created` for histograms; the client's own ones carry it.
            timings.samples.append(Sample(f"{timings.name}_created", {}, self._created))
        return [served, timings]


class RedirectorMetrics:
    # Why a click was refused (a 404): what the link or the host was.
    REFUSALS = ("malformed", "unknown-key", "bad-signature", "bad-payload", "wrong-host")
    BOT_REASONS = ("head-request", "no-user-agent", "user-agent")

    def __init__(self, registry: CollectorRegistry) -> None:
        # The request path only touches these (lock-free, see Tally).
        self.served_redirect = Tally()
        self.served_bot = {reason: Tally() for reason in self.BOT_REASONS}
        self.refused = {reason: Tally() for reason in self.REFUSALS}
        self.unavailable = Tally()  # 503: the spool could not be written
        self.redirect_seconds = Timings(REDIRECT_BUCKETS)
        self._tallies: dict[tuple[str, str], Tally] = {
            ("redirect", ""): self.served_redirect,
            **{("bot", reason): t for reason, t in self.served_bot.items()},
            **{("refused", reason): t for reason, t in self.refused.items()},
            ("unavailable", "spool"): self.unavailable,
        }
        registry.register(_ClickCollector(self._tallies, self.redirect_seconds))
        self.published = Counter(
            "tracking_clicks_published", "Clicks the broker confirmed (they left the spool).",
            registry=registry)
        self.publish_failures = Counter(
            "tracking_click_publish_failures", "Click batches whose publish failed (they stay "
            "spooled and are retried).", registry=registry)
        self.confirm_seconds = Histogram(
            "tracking_click_publish_confirm_seconds", "From publishing a batch of clicks to "
            "the broker's confirm.", buckets=CONFIRM_BUCKETS, registry=registry)
        self.batch_clicks = Histogram(
            "tracking_click_publish_batch_clicks", "Clicks per published message.",
            buckets=ROWS_BUCKETS, registry=registry)
        self.spool_backlog_bytes = Gauge(
            "tracking_spool_backlog_bytes", "Bytes of spooled clicks not yet handed to the "
            "broker (readiness fails above SPOOL_MAX_BYTES).", registry=registry)
        self.spool_clicks = Gauge(
            "tracking_spool_clicks", "Clicks in the spool the broker has not confirmed yet "
            "(queued plus in flight).", registry=registry)
        self.broker_connected = Gauge(
            "tracking_broker_connected", "1 while the forwarder has a broker connection.",
            registry=registry)

    def bot(self, bot_reason: str) -> Tally:
        """The tally for a bot click; `bot_reason` as services.redirector.bots gives it
        ("user-agent:curl" counts under "user-agent": agent names stay out of labels)."""
        reason = bot_reason.partition(":")[0]
        tally = self.served_bot.get(reason)
        if tally is None:  # a class bots.py gained since: still a small, fixed set
            tally = self.served_bot[reason] = self._tallies[("bot", reason)] = Tally()
        return tally

    def watch(self, *, backlog_bytes: Callable[[], float], spool_clicks: Callable[[], float],
              connected: Callable[[], float]) -> None:
        """Gauges read at scrape time (on the event loop: see the module docstring)."""
        self.spool_backlog_bytes.set_function(backlog_bytes)
        self.spool_clicks.set_function(spool_clicks)
        self.broker_connected.set_function(connected)


# --- the logger -------------------------------------------------------------------------------

class LoggerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer = ConsumerMetrics(registry)
        self.batch_rows = Histogram(
            "tracking_logger_batch_rows", "Rows per database commit.", buckets=ROWS_BUCKETS,
            registry=registry)
        self.insert_seconds = Histogram(
            "tracking_logger_insert_seconds", "Time of one successful commit of a batch of "
            "rows.", buckets=INSERT_BUCKETS, registry=registry)
        self.rows_inserted = Counter(
            "tracking_logger_rows_inserted", "Rows added to tracking_logs.", registry=registry)
        self.rows_duplicate = Counter(
            "tracking_logger_rows_duplicate", "Rows whose event id was already stored "
            "(a redelivery; skipped).", registry=registry)
        self.write_failures = Counter(
            "tracking_logger_write_failures", "Failed commits retried (database unreachable).",
            registry=registry)
        self.rows_refused = Counter(
            "tracking_logger_rows_refused", "Rows the database refused (their messages are "
            "dead-lettered).", registry=registry)
        self.pending_rows = Gauge(
            "tracking_logger_pending_rows", "Rows received and waiting for a commit.",
            registry=registry)

    def watch(self, *, pending_rows: Callable[[], float]) -> None:
        self.pending_rows.set_function(pending_rows)


# --- the classifier ---------------------------------------------------------------------------

class ClassifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer = ConsumerMetrics(registry)
        self.clicks = Counter(
            "tracking_classifier_clicks", "Clicks the classifier looked at.", registry=registry)
        self.reclassified = Counter(
            "tracking_classifier_reclassified", "click.classified published: a click whose "
            "verdict changed, or whose reasons grew (once, as it settled), by its verdict.",
            ["bot"],
            registry=registry)
        self.held = Gauge(
            "tracking_classifier_clicks_held", "Clicks in the classifier's windows (memory).",
            registry=registry)

    def watch(self, *, held: Callable[[], float]) -> None:
        self.held.set_function(held)


# --- the verifier -----------------------------------------------------------------------------

class ReputationMetrics:
    """The reputation watch (docs/reputation.md): what the blocklists say, and whether
    they can be asked at all. Labels are list kinds (dbl, surbl, uribl), never zones (a
    Spamhaus DQS zone holds a key)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.listed = Gauge(
            "tracking_reputation_listed", "Customers' tracking domains listed now, by list "
            "and category (a domain on two categories counts in both).",
            ["list", "category"], registry=registry)
        self.platform_host_listed = Gauge(
            "tracking_reputation_platform_host_listed", "1 while the platform host "
            "(TRACKING_HOST or an alias) is listed on the list, else 0.", ["list"],
            registry=registry)
        self.list_unusable = Gauge(
            "tracking_reputation_list_unusable", "1 while the list failed its controls in "
            "the last round (refused or misanswered from this resolver; its results are "
            "discarded), else 0.", ["list"], registry=registry)
        self._lookups = Counter(
            "tracking_reputation_lookups", "Names looked up, by list and result (listed, "
            "not_listed, refused, error, budget-spent, discarded: the list failed its "
            "controls).",
            ["list", "result"], registry=registry)
        self.queries = Counter(
            "tracking_reputation_queries", "DNS questions sent to the list's zone (retries "
            "and controls included; what the daily budget counts).", ["list"],
            registry=registry)
        self.budget_left = Gauge(
            "tracking_reputation_budget_remaining", "Questions the list may still be asked "
            "today (REPUTATION_DAILY_BUDGET, UTC days) by this replica.", ["list"],
            registry=registry)
        self.round_timestamp = Gauge(
            "tracking_reputation_round_timestamp_seconds", "When the watch last finished a "
            "pass over the due names.", registry=registry)
        self._known: set[tuple[str, str]] = set()

    def lookup(self, blocklist: str, result: str, count: int = 1) -> None:
        self._lookups.labels(blocklist, result).inc(count)

    def set_listed(self, counts: dict[tuple[str, str], int]) -> None:
        """Replace the per list and category counts (a category no longer seen goes to 0)."""
        for key in self._known | set(counts):
            self.listed.labels(*key).set(counts.get(key, 0))
        self._known |= set(counts)


class DestinationMetrics:
    """The verifier's destination watch (services/verifier/destinations.py)."""

    OUTCOMES = ("listed", "not_listed", "refused", "error", "unusable", "budget")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.clicks = Counter(
            "tracking_destination_clicks", "Clicks the destination watch has handled from "
            "its queue (compare with tracking_clicks_served_total: the queue drops its oldest "
            "batches when the watch falls far behind).", registry=registry)
        checked = Counter(
            "tracking_destination_checks", "Destinations (registered domains) asked of the "
            "DBL, by outcome: listed, not_listed, refused or error (no verdict; asked again "
            "on a later click), unusable (the list failed its controls: not asked), budget "
            "(not asked: half the list's daily budget stays for the tracking domains).",
            ["outcome"], registry=registry)
        self.checked = {outcome: checked.labels(outcome) for outcome in self.OUTCOMES}
        self._listings = Counter(
            "tracking_destination_listings", "destination.listed events published: a "
            "customer's links first led to a listed destination, by list and category.",
            ["list", "category"], registry=registry)
        self._category = _Bounded()

    def listed(self, blocklist: str, categories: Iterable[str]) -> None:
        for category in tuple(categories) or ("",):
            self._listings.labels(blocklist, self._category(category)).inc()


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer = ConsumerMetrics(registry)
        self.reputation = ReputationMetrics(registry)
        self._verifications = Counter(
            "tracking_verifications", "DNS verification results, by check (created: a "
            "domain.created event; recheck: the periodic re-verification), outcome and "
            "reason code (docs/troubleshooting.md; empty when none).",
            ["check", "outcome", "code"], registry=registry)
        self.domains = Gauge(
            "tracking_domains", "Tracking domains by status, counted in tracking_domains "
            "(deleted domains' tombstones excluded). Owned by the verifier.", ["status"],
            registry=registry)
        self.census_timestamp = Gauge(
            "tracking_domains_counted_timestamp_seconds", "When tracking_domains was last "
            "counted.", registry=registry)
        self._outcome = _Bounded()
        self._code = _Bounded()
        self.destinations = DestinationMetrics(registry)

    def verification(self, check: str, outcome: Outcome) -> None:
        self._verifications.labels(check, self._outcome(outcome.name),
                                   self._code(outcome.code)).inc()


# --- the certifier ----------------------------------------------------------------------------

class CertifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer = ConsumerMetrics(registry)
        self.issued = Counter(
            "tracking_certificates_issued", "certificate.issued events published (new "
            "certificates and renewals).", registry=registry)
        self._failed = Counter(
            "tracking_certificates_failed", "certificate.failed events published, by code "
            "(the ACME error, e.g. caa, unauthorized, connection).", ["code"],
            registry=registry)
        self.expiring_notices = Counter(
            "tracking_certificate_expiring_notices", "certificate.expiring events published "
            "(a renewal failed within the warning window).", registry=registry)
        self._renewals = Counter(
            "tracking_certificate_renewals", "Renewal attempts by outcome (renewed, failed, "
            "held-back, error, already-renewed, recorded-existing, ari-not-yet).", ["outcome"],
            registry=registry)
        self.expiring = Gauge(
            "tracking_certificates_expiring", "Active domains whose certificate expires within "
            "CERTIFIER_EXPIRY_WARNING_DAYS (14): renewal has not worked. Updated by the "
            "renewal loop.", registry=registry)
        self.earliest_expiry = Gauge(
            "tracking_certificate_earliest_expiry_timestamp_seconds", "The soonest expiry of an "
            "active domain's certificate (0: none).", registry=registry)
        self._code = _Bounded()
        self._outcome = _Bounded()

    def failed(self, code: str) -> None:
        self._failed.labels(self._code(code)).inc()

    def renewal(self, outcome: Outcome) -> None:
        self._renewals.labels(self._outcome(outcome.name)).inc()

    def published(self, data: Any) -> None:
        """Publisher hook: count the certificate events the platform is told about."""
        if isinstance(data, CertificateIssued):
            self.issued.inc()
        elif isinstance(data, CertificateFailed):
            self.failed(data.code)
        elif isinstance(data, CertificateExpiring):
            self.expiring_notices.inc()


class EdgeMetrics:
    """One edge agent's: what its nginx serves against what the certificate store says."""

    def __init__(self, registry: CollectorRegistry, edge_id: str = "") -> None:
        self.consumer = ConsumerMetrics(registry)
        self.behind = Gauge(
            "tracking_edge_certificates_behind", "Certificates the store says this edge should "
            "serve (or stop serving) that its nginx does not yet: new serials not installed, "
            "removals not done. Updated after each event and each reconciliation.", ["edge"],
            registry=registry).labels(edge_id)
        self.served = Gauge(
            "tracking_edge_certificates_served", "Certificate files this edge's nginx serves.",
            ["edge"], registry=registry).labels(edge_id)
        self._changes = Counter(
            "tracking_edge_certificate_changes", "Certificates installed or removed on this "
            "edge, by how it learnt of the change (event, reconcile: what events missed).",
            ["edge", "change", "via"], registry=registry)
        self._failures = Counter(
            "tracking_edge_certificate_failures", "Certificates this edge could not install "
            "or announce, by reason (seal: its key does not open with CERT_STORE_KEYS; "
            "chain: chain or key unusable; write: the file; confirm: nginx did not present "
            "it; announce: certificate.installed not published). Each is retried.",
            ["edge", "reason"], registry=registry)
        self.reconciled = Gauge(
            "tracking_edge_last_reconcile_timestamp_seconds", "When this edge last finished a "
            "full comparison with the certificate store.", ["edge"],
            registry=registry).labels(edge_id)
        self._edge = edge_id

    def changed(self, change: str, via: str) -> None:
        self._changes.labels(self._edge, change, via).inc()

    def failed(self, reason: str, count: int = 1) -> None:
        self._failures.labels(self._edge, reason).inc(count)


SERVICE_METRICS: Mapping[str, Callable[[CollectorRegistry], object]] = {
    "redirector": RedirectorMetrics,
    "logger": LoggerMetrics,
    "verifier": VerifierMetrics,
    "certifier": CertifierMetrics,
    "classifier": ClassifierMetrics,
    "edge": EdgeMetrics,
}


def metric_families() -> dict[str, str]:
    """Every metric the services define: name as documented (counters with `_total`,
    histograms without their `_bucket`/`_sum`/`_count` suffixes) → type."""
    families: dict[str, str] = {}
    for build in SERVICE_METRICS.values():
        registry = CollectorRegistry()
        build(registry)
        for family in registry.collect():
            name = f"{family.name}_total" if family.type == "counter" else family.name
            families[name] = family.type
    return families


def metric_names() -> set[str]:
    """Every series name the services can export (with _total, _bucket, … suffixes)."""
    names: set[str] = set()
    for name, kind in metric_families().items():
        names.update(_series(name.removesuffix("_total") if kind == "counter" else name, kind))
    return names


def _series(name: str, kind: str) -> tuple[str, ...]:
    if kind == "counter":
        return (f"{name}_total", f"{name}_created")
    if kind == "histogram":
        return tuple(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created"))
    return (name,)


# --- serving /metrics -------------------------------------------------------------------------

class MetricsServer:
    """`GET /metrics` for one registry on `bind`, on the running event loop."""

    def __init__(self, registry: CollectorRegistry, bind: tuple[str, int] | None) -> None:
        self._registry = registry
        self._bind = bind
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str | None:
        if self._bind is None or self._runner is None:
            return None
        host, port = self._bind
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    async def start(self) -> bool:
        """Listen; False (said in an error line) if the port cannot be had. Metrics are
        never worth refusing to serve clicks for, so the service carries on without."""
        if self._bind is None:
            log.info("metrics.disabled")
            return False
        host, port = self._bind
        try:
            runner = await serve_route(self._bind, "/metrics", self._metrics)
        except OSError as exc:
            log.error("metrics.unavailable", bind=f"{host}:{port}", error=str(exc),
                      hint="give each process on a host its own METRICS_BIND")
            return False
        self._runner = runner
        log.info("metrics.listening", url=self.url)
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry),
                            headers={"Content-Type": content_type, "Cache-Control": "no-store"})
