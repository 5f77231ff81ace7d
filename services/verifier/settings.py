"""Verifier settings, from the environment (see docs/troubleshooting.md and the README table)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.verifier.reputation.blocklists import DEFAULT_LISTS, BlockList, parse_lists
from shared.broker.names import retry_tiers
from shared.logs import LOG_LEVEL
from shared.settings import (
    BROKER,
    DATABASE_URL,
    BrokerSettings,
    DatabaseSettings,
    Env,
    Program,
    Setting,
    metrics_bind,
)
from shared.settings.parsers import flag, nameservers, number, whole
from shared.verification.settings import (
    DEFAULT_CAA_IDENTITY,
    DNS_JUDGEMENT,
    load_dns_judgement,
)

DEFAULT_DEADLINE_S = 48 * 3600.0
DEFAULT_RECHECK_INTERVAL_S = 3600.0

VERIFY_DEADLINE_S = Setting(
    "VERIFY_DEADLINE_S", number(), f"{DEFAULT_DEADLINE_S:g}",
    "How long a domain may stay wrong before it is rejected.")
RECHECK_INTERVAL_S = Setting(
    "RECHECK_INTERVAL_S", number(minimum=0.1), f"{DEFAULT_RECHECK_INTERVAL_S:g}",
    "Period of re-verification of verified, active and lapsed domains.")
RECHECK_JITTER = Setting(
    "RECHECK_JITTER", number(), "0.1", "± fraction of the interval, so checks spread out.")
VERIFIER_PREFETCH = Setting(
    "VERIFIER_PREFETCH", whole(minimum=1), "256", "Domains checked at once.")
# The deadline, not this, ends rechecks; this only stops a runaway loop.
VERIFIER_MAX_ATTEMPTS = Setting(
    "VERIFIER_MAX_ATTEMPTS", whole(minimum=2), "1000", "Safety stop for one message's retries.")
# Also the pacing of rechecks: between the shortest and the longest tier.
VERIFIER_RETRY_DELAYS_MS = retry_tiers("VERIFIER_RETRY_DELAYS_MS")
VERIFIER_SCHEDULE_POLL_S = Setting(
    "VERIFIER_SCHEDULE_POLL_S", number(minimum=0.01), "30",
    "How often a replica looks for due re-checks.")
VERIFIER_RECHECK_BATCH = Setting(
    "VERIFIER_RECHECK_BATCH", whole(minimum=1), "500", "Domains claimed per look.")
VERIFIER_RECHECK_CONCURRENCY = Setting(
    "VERIFIER_RECHECK_CONCURRENCY", whole(minimum=1), "64", "Scheduled checks run at once.")
VERIFIER_DB_POOL = Setting(
    "VERIFIER_DB_POOL", whole(minimum=1), "10", "Database connections.")
METRICS_BIND = metrics_bind("verifier")
# The destination watch (services/verifier/destinations.py).
DESTINATION_WATCH = Setting(
    "DESTINATION_WATCH", flag, "1",
    "Check clicked destinations against the DBL (when REPUTATION_LISTS has one).")
DESTINATION_RECHECK_S = Setting(
    "DESTINATION_RECHECK_S", number(minimum=60), "86400",
    "How long a destination's verdict is trusted before a click has it asked again.")
DESTINATION_MEMORY = Setting(
    "DESTINATION_MEMORY", whole(minimum=100), "100000",
    "Destinations (and customer-destination pairs) kept in memory.")
DESTINATION_PREFETCH = Setting(
    "DESTINATION_PREFETCH", whole(minimum=1), "4", "Click messages handled at once.")
DESTINATIONS = (DESTINATION_WATCH, DESTINATION_RECHECK_S, DESTINATION_MEMORY,
                DESTINATION_PREFETCH)

# The reputation watch (docs/reputation.md).
REPUTATION_LISTS = Setting(
    "REPUTATION_LISTS", parse_lists, DEFAULT_LISTS,
    "Blocklists asked: comma-separated kind=zone (kind dbl, surbl or uribl); empty turns "
    "the watch off.", blank_is_unset=False)
REPUTATION_NAMESERVERS = Setting(
    "REPUTATION_NAMESERVERS", nameservers, "",
    "Resolvers the lists are asked through: ip, ip:port, comma-separated. Never a public "
    "resolver: the lists refuse those.", shown="the system's")
REPUTATION_INTERVAL_S = Setting(
    "REPUTATION_INTERVAL_S", number(minimum=1), "1800",
    "How often each watched name is looked up on each list (± REPUTATION_JITTER).")
REPUTATION_JITTER = Setting(
    "REPUTATION_JITTER", number(), "0.1", "± fraction of the interval, so lookups spread out.")
REPUTATION_DAILY_BUDGET = Setting(
    "REPUTATION_DAILY_BUDGET", whole(), "100000",
    "Most questions one replica asks each list per UTC day; the schedule stretches to fit.")
REPUTATION_CONCURRENCY = Setting(
    "REPUTATION_CONCURRENCY", whole(minimum=1), "32", "Blocklist questions in flight at once.")
REPUTATION_TIMEOUT_S = Setting(
    "REPUTATION_TIMEOUT_S", number(minimum=0.01), "2",
    "Wait for one answer; a timeout is retried (3 attempts), never a verdict.")
REPUTATION_POLL_S = Setting(
    "REPUTATION_POLL_S", number(minimum=0.01), "60",
    "How often a replica looks for names due a lookup (and runs the lists' controls).")
REPUTATION = (REPUTATION_LISTS, REPUTATION_NAMESERVERS, REPUTATION_INTERVAL_S,
              REPUTATION_JITTER, REPUTATION_DAILY_BUDGET, REPUTATION_CONCURRENCY,
              REPUTATION_TIMEOUT_S, REPUTATION_POLL_S)

PROGRAM = Program("verifier", (
    VERIFIER_RETRY_DELAYS_MS, VERIFY_DEADLINE_S, RECHECK_INTERVAL_S, *DNS_JUDGEMENT,
    RECHECK_JITTER, *BROKER, DATABASE_URL, VERIFIER_PREFETCH, VERIFIER_MAX_ATTEMPTS,
    VERIFIER_SCHEDULE_POLL_S, VERIFIER_RECHECK_BATCH, VERIFIER_RECHECK_CONCURRENCY,
    VERIFIER_DB_POOL, LOG_LEVEL, METRICS_BIND, *REPUTATION, *DESTINATIONS,
))


@dataclass(frozen=True)
class VerifyPolicy:
    """How verification is judged and paced; shared by the handler and the scheduler."""

    tracking_host: str
    caa_identity: str = DEFAULT_CAA_IDENTITY
    # Other names of the platform host that CNAMEs may still point at (a move of the
    # platform host: docs/operations.md). Never names a customer may register.
    tracking_host_aliases: tuple[str, ...] = ()
    # A domain not right within this long after it was first seen is rejected.
    deadline_s: float = DEFAULT_DEADLINE_S
    # Verified, active and lapsed domains are looked at again this often (± jitter).
    recheck_interval_s: float = DEFAULT_RECHECK_INTERVAL_S
    recheck_jitter: float = 0.1
    # Rechecks of a pending domain wait about a quarter of its age, within these bounds.
    min_recheck_delay_s: float = 1.0
    max_recheck_delay_s: float = 3600.0
    # A deleted pending domain is kept this long as a tombstone, so a recheck still
    # in a retry tier cannot bring it back (longer than the longest tier).
    tombstone_s: float = 7200.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def recheck_delay_s(self, age_s: float) -> float:
        """Growing delay for a pending domain that is `age_s` old: frequent at first."""
        return min(self.max_recheck_delay_s, max(self.min_recheck_delay_s, age_s / 4))

    def next_periodic_check(self, now: datetime, *, fraction: float = 1.0) -> datetime:
        """When a verified/active/lapsed domain is next due, jittered so checks spread out."""
        spread = 1 + self.recheck_jitter * (2 * self.rng.random() - 1)
        return now + timedelta(seconds=self.recheck_interval_s * fraction * spread)


@dataclass(frozen=True)
class ReputationPolicy:
    """What the reputation watch asks, through which resolvers, how often, within what."""

    lists: tuple[BlockList, ...]
    nameservers: tuple[tuple[str, int], ...] = ()  # empty: the system's
    interval_s: float = 1800.0
    jitter: float = 0.1
    daily_budget: int = 100_000
    concurrency: int = 32
    timeout_s: float = 2.0
    poll_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def spread(self, interval_s: float) -> float:
        """`interval_s` ± jitter, so lookups do not come back in waves."""
        return interval_s * (1 + self.jitter * (2 * self.rng.random() - 1))


@dataclass(frozen=True)
class DestinationSettings:
    """The destination watch: on or off, and how long verdicts and memory last."""

    enabled: bool = True
    recheck_s: float = 86400.0
    memory: int = 100_000
    prefetch: int = 4

    @classmethod
    def read(cls, env: Env) -> DestinationSettings:
        return cls(enabled=env[DESTINATION_WATCH], recheck_s=env[DESTINATION_RECHECK_S],
                   memory=env[DESTINATION_MEMORY], prefetch=env[DESTINATION_PREFETCH])


@dataclass(frozen=True)
class VerifierSettings:
    broker: BrokerSettings
    database: DatabaseSettings
    policy: VerifyPolicy
    # Empty: the system's resolvers (/etc/resolv.conf).
    nameservers: tuple[tuple[str, int], ...]
    dns_timeout_s: float
    prefetch: int
    max_attempts: int
    retry_delays_ms: tuple[int, ...]
    schedule_poll_s: float
    recheck_batch: int
    recheck_concurrency: int
    db_pool_size: int
    log_level: str
    metrics_bind: tuple[str, int] | None = None
    reputation: ReputationPolicy | None = None  # None: the watch is off (no lists)
    destinations: DestinationSettings = field(default_factory=DestinationSettings)


def load(environ: Mapping[str, str]) -> VerifierSettings:
    env = Env(environ, PROGRAM)
    retry_delays_ms = env[VERIFIER_RETRY_DELAYS_MS]
    deadline_s = env[VERIFY_DEADLINE_S]
    interval_s = env[RECHECK_INTERVAL_S]
    # The same loader as `trackctl doctor`'s, so both judge DNS alike.
    dns = load_dns_judgement(env)
    longest_s = max(retry_delays_ms) / 1000
    policy = VerifyPolicy(
        tracking_host=dns.tracking_host,
        caa_identity=dns.caa_identity,
        tracking_host_aliases=dns.tracking_host_aliases,
        deadline_s=deadline_s,
        recheck_interval_s=interval_s,
        recheck_jitter=env[RECHECK_JITTER],
        min_recheck_delay_s=min(retry_delays_ms) / 1000,
        max_recheck_delay_s=longest_s,
        tombstone_s=2 * longest_s + 600,
    )
    return VerifierSettings(
        broker=BrokerSettings.read(env),
        database=DatabaseSettings.read(env),
        policy=policy,
        nameservers=dns.nameservers,
        dns_timeout_s=dns.dns_timeout_s,
        prefetch=env[VERIFIER_PREFETCH],
        max_attempts=env[VERIFIER_MAX_ATTEMPTS],
        retry_delays_ms=retry_delays_ms,
        schedule_poll_s=env[VERIFIER_SCHEDULE_POLL_S],
        recheck_batch=env[VERIFIER_RECHECK_BATCH],
        recheck_concurrency=env[VERIFIER_RECHECK_CONCURRENCY],
        db_pool_size=env[VERIFIER_DB_POOL],
        log_level=env[LOG_LEVEL],
        metrics_bind=env[METRICS_BIND],
        reputation=load_reputation(env),
        destinations=DestinationSettings.read(env),
    )


def load_reputation(env: Env) -> ReputationPolicy | None:
    lists = env[REPUTATION_LISTS]
    if not lists:
        return None
    return ReputationPolicy(
        lists=lists, nameservers=env[REPUTATION_NAMESERVERS],
        interval_s=env[REPUTATION_INTERVAL_S], jitter=env[REPUTATION_JITTER],
        daily_budget=env[REPUTATION_DAILY_BUDGET], concurrency=env[REPUTATION_CONCURRENCY],
        timeout_s=env[REPUTATION_TIMEOUT_S], poll_s=env[REPUTATION_POLL_S])
