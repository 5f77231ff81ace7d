"""Redirector settings, from the environment (see README's table)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.domains import parse_host_aliases
from shared.metrics import load_bind
from shared.settings import (
    DEFAULT_REDIRECTOR_BIND,
    BrokerSettings,
    DatabaseSettings,
    Env,
    LinkKey,
)


@dataclass(frozen=True)
class RedirectorSettings:
    bind: tuple[str, int]
    tracking_host: str
    link_keys: tuple[LinkKey, ...]
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    broker: BrokerSettings
    database: DatabaseSettings
    spool_dir: Path
    challenge_dir: Path | None
    spool_max_bytes: int
    batch_size: int
    linger_ms: float
    domain_refresh_s: float
    drain_timeout_s: float
    log_level: str
    access_log: bool
    metrics_bind: tuple[str, int] | None = None
    # Other names of the platform host (a move in progress): links are served on them too.
    tracking_host_aliases: tuple[str, ...] = ()


def load(environ: Mapping[str, str]) -> RedirectorSettings:
    env = Env(environ)
    tracking_host = env.tracking_host()
    return RedirectorSettings(
        bind=env.host_port("REDIRECTOR_BIND", DEFAULT_REDIRECTOR_BIND),
        tracking_host=tracking_host,
        tracking_host_aliases=parse_host_aliases(env.raw("TRACKING_HOST_ALIASES"),
                                                 tracking_host),
        link_keys=env.link_keys(),
        trusted_proxies=env.networks("TRUSTED_PROXIES"),
        broker=env.broker(),
        database=env.database(),
        spool_dir=Path(env.str("SPOOL_DIR", "var/spool/redirector")),
        challenge_dir=Path(value) if (value := env.raw("ACME_CHALLENGE_DIR")) else None,
        spool_max_bytes=env.int("SPOOL_MAX_BYTES", 1 << 30, minimum=1 << 20),
        batch_size=env.int("CLICK_BATCH_SIZE", 500, minimum=1),
        linger_ms=env.float("CLICK_LINGER_MS", 50.0),
        domain_refresh_s=env.float("DOMAIN_REFRESH_S", 5.0, minimum=0.1),
        drain_timeout_s=env.float("DRAIN_TIMEOUT_S", 20.0),
        log_level=env.str("LOG_LEVEL", "INFO").upper(),
        access_log=env.str("REDIRECTOR_ACCESS_LOG", "0") in ("1", "true", "yes"),
        metrics_bind=load_bind(environ, "redirector"),
    )
