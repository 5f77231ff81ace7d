"""Routing keys and queue names: the one place they are spelled.

Routing keys equal the CloudEvents `type` of the message. Queue names are
relative: `Topology` prefixes them with the deployment's exchange name, so a
test run (or a second deployment) on the same broker never meets ours.
"""

from __future__ import annotations

from shared.events import (
    CertificateExpiring,
    CertificateFailed,
    CertificateInstalled,
    CertificateIssued,
    ClickClassified,
    ClickTracked,
    DestinationListed,
    DomainCreated,
    DomainDeleted,
    DomainDelisted,
    DomainLapsed,
    DomainListed,
    DomainRejected,
    DomainVerified,
)
from shared.settings.declare import Setting
from shared.settings.parsers import delays_ms

# Routing keys (== event types).
DOMAIN_CREATED = DomainCreated.TYPE
DOMAIN_DELETED = DomainDeleted.TYPE
DOMAIN_VERIFIED = DomainVerified.TYPE
DOMAIN_REJECTED = DomainRejected.TYPE
DOMAIN_LAPSED = DomainLapsed.TYPE
CERTIFICATE_ISSUED = CertificateIssued.TYPE
CERTIFICATE_FAILED = CertificateFailed.TYPE
CERTIFICATE_EXPIRING = CertificateExpiring.TYPE
DOMAIN_LISTED = DomainListed.TYPE
DOMAIN_DELISTED = DomainDelisted.TYPE
CERTIFICATE_INSTALLED = CertificateInstalled.TYPE
CLICK_TRACKED = ClickTracked.TYPE
DESTINATION_LISTED = DestinationListed.TYPE
CLICK_CLASSIFIED = ClickClassified.TYPE

# One queue per consuming service; replicas of a service compete on it.
LOGGER_QUEUE = "logger"
VERIFIER_QUEUE = "verifier"
CERTIFIER_QUEUE = "certifier"
# The verifier's destination watch reads its own copy of the clicks, so neither the
# redirector nor the logger ever waits for it (services/verifier/destinations.py).
DESTINATIONS_QUEUE = "verifier.destinations"
CLASSIFIER_QUEUE = "classifier"

# What each service's queue receives.
BINDINGS: dict[str, tuple[str, ...]] = {
    LOGGER_QUEUE: (CLICK_TRACKED, CLICK_CLASSIFIED),
    VERIFIER_QUEUE: (DOMAIN_CREATED, DOMAIN_DELETED),
    CERTIFIER_QUEUE: (DOMAIN_VERIFIED, DOMAIN_DELETED, DOMAIN_LAPSED),
    DESTINATIONS_QUEUE: (CLICK_TRACKED,),
    CLASSIFIER_QUEUE: (CLICK_TRACKED,),
}

# Extra queue arguments. The destination watch's copy of the clicks is bounded: past the
# bound RabbitMQ drops the oldest message (a batch of up to CLICK_BATCH_SIZE clicks), so a
# stopped or slow watch never holds clicks back or fills the broker's disk; it only misses
# the checks of clicks it had no room for (their destinations come again with later clicks).
# A constant, not a setting: every service declares the queue, and RabbitMQ refuses a
# declaration whose arguments differ from the queue's.
# The classifier keeps its windows in memory, so one replica consumes at a time (the
# others wait as hot standbys), and clicks it could no longer relate to any other
# (far older than BOT_SETTLE_S) expire instead of piling up while no classifier runs.
DESTINATIONS_QUEUE_MAX_BYTES = 256 * 1024 * 1024
CLASSIFIER_BACKLOG_MS = 3_600_000
QUEUE_ARGUMENTS: dict[str, dict[str, bool | int | str]] = {
    DESTINATIONS_QUEUE: {"x-max-length-bytes": DESTINATIONS_QUEUE_MAX_BYTES,
                         "x-overflow": "drop-head"},
    CLASSIFIER_QUEUE: {"x-single-active-consumer": True,
                       "x-message-ttl": CLASSIFIER_BACKLOG_MS},
}

# One queue per edge (its agent, services/edge): every edge must see every event, so
# edges do not compete; an edge that is down finds its events waiting. A queue nobody
# consumes for EDGE_QUEUE_EXPIRES_MS is deleted by the broker (an edge retired for
# good); an edge that comes back after that catches up by its full reconciliation.
EDGE_QUEUE_PREFIX = "edge."
EDGE_BINDINGS: tuple[str, ...] = (CERTIFICATE_ISSUED, DOMAIN_DELETED, DOMAIN_LAPSED)
EDGE_QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000


def edge_queue(edge_id: str) -> str:
    """The queue of the edge `edge_id` (relative, like every queue name here)."""
    return f"{EDGE_QUEUE_PREFIX}{edge_id}"


def bindings_of(queue: str) -> tuple[str, ...]:
    """The routing keys a (relative) queue receives."""
    if queue.startswith(EDGE_QUEUE_PREFIX):
        return EDGE_BINDINGS
    return BINDINGS.get(queue, ())


# The upstream platform's inbox: every outcome it must hear about. Declared with the
# rest of the topology so these events are never unroutable (and never lost) before
# the platform first connects; the platform consumes it, our services never do.
PLATFORM_QUEUE = "platform"
PLATFORM_BINDINGS: tuple[str, ...] = (
    DOMAIN_VERIFIED, DOMAIN_REJECTED, DOMAIN_LAPSED,
    CERTIFICATE_ISSUED, CERTIFICATE_FAILED, CERTIFICATE_EXPIRING, CERTIFICATE_INSTALLED,
    DOMAIN_LISTED, DOMAIN_DELISTED,
    DESTINATION_LISTED, CLICK_CLASSIFIED,
)

# Delayed-retry tiers in milliseconds. A message waits in the tier's queue until
# its TTL expires, then RabbitMQ dead-letters it back to the service's queue.
# Fixed tiers (not per-message TTLs) because a queue only expires its head: one
# long delay would hold every shorter one behind it.
RETRY_DELAYS_MS: tuple[int, ...] = (1_000, 10_000, 60_000, 600_000, 3_600_000)


def retry_tiers(name: str) -> Setting[tuple[int, ...]]:
    """A service's `<SERVICE>_RETRY_DELAYS_MS` setting: its retry tiers, these by default."""
    return Setting(name, delays_ms, ",".join(str(delay) for delay in RETRY_DELAYS_MS),
                   "Retry tiers: increasing milliseconds, comma-separated.")

RETRY_SUFFIX = "retry"
DEAD_SUFFIX = "dead"
