"""Verifier settings, from the environment (see docs/troubleshooting.md and the README table)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.broker.names import RETRY_DELAYS_MS
from shared.errors import SettingsError
from shared.metrics import load_bind
from shared.settings import BrokerSettings, DatabaseSettings, Env
from shared.verification.settings import DEFAULT_CAA_IDENTITY, load_dns_judgement

DEFAULT_DEADLINE_S = 48 * 3600.0
DEFAULT_RECHECK_INTERVAL_S = 3600.0


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


def load(environ: Mapping[str, str]) -> VerifierSettings:
    env = Env(environ)
    retry_delays_ms = parse_delays(env.raw("VERIFIER_RETRY_DELAYS_MS"))
    deadline_s = env.float("VERIFY_DEADLINE_S", DEFAULT_DEADLINE_S, minimum=0.0)
    interval_s = env.float("RECHECK_INTERVAL_S", DEFAULT_RECHECK_INTERVAL_S, minimum=0.1)
    # The same loader as `trackctl doctor`'s, so both judge DNS alike.
    dns = load_dns_judgement(env)
    longest_s = max(retry_delays_ms) / 1000
    policy = VerifyPolicy(
        tracking_host=dns.tracking_host,
        caa_identity=dns.caa_identity,
        tracking_host_aliases=dns.tracking_host_aliases,
        deadline_s=deadline_s,
        recheck_interval_s=interval_s,
        recheck_jitter=env.float("RECHECK_JITTER", 0.1, minimum=0.0),
        min_recheck_delay_s=min(retry_delays_ms) / 1000,
        max_recheck_delay_s=longest_s,
        tombstone_s=2 * longest_s + 600,
    )
    return VerifierSettings(
        broker=env.broker(),
        database=env.database(),
        policy=policy,
        nameservers=dns.nameservers,
        dns_timeout_s=dns.dns_timeout_s,
        prefetch=env.int("VERIFIER_PREFETCH", 256, minimum=1),
        # The deadline, not this, ends rechecks; this only stops a runaway loop.
        max_attempts=env.int("VERIFIER_MAX_ATTEMPTS", 1000, minimum=2),
        retry_delays_ms=retry_delays_ms,
        schedule_poll_s=env.float("VERIFIER_SCHEDULE_POLL_S", 30.0, minimum=0.01),
        recheck_batch=env.int("VERIFIER_RECHECK_BATCH", 500, minimum=1),
        recheck_concurrency=env.int("VERIFIER_RECHECK_CONCURRENCY", 64, minimum=1),
        db_pool_size=env.int("VERIFIER_DB_POOL", 10, minimum=1),
        log_level=env.str("LOG_LEVEL", "INFO").upper(),
        metrics_bind=load_bind(environ, "verifier"),
    )


def parse_delays(value: str | None) -> tuple[int, ...]:
    """`VERIFIER_RETRY_DELAYS_MS`: comma-separated, increasing milliseconds."""
    if value is None:
        return RETRY_DELAYS_MS
    try:
        delays = tuple(int(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise SettingsError(
            f"VERIFIER_RETRY_DELAYS_MS must be comma-separated milliseconds, got {value!r}"
        ) from None
    if not delays or any(d <= 0 for d in delays) or list(delays) != sorted(set(delays)):
        raise SettingsError(
            f"VERIFIER_RETRY_DELAYS_MS must be increasing positive milliseconds, got {value!r}")
    return delays

