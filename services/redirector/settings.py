"""Redirector settings, from the environment (see README's table)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.bot_verdict import BOT_WEAK_REASONS
from shared.logs import LOG_LEVEL
from shared.settings import (
    ACME_CHALLENGE_DIR,
    BROKER,
    DATABASE_URL,
    LINK_KEYS,
    REDIRECTOR_BIND,
    TRACKING_HOST,
    TRACKING_HOST_ALIASES,
    BrokerSettings,
    DatabaseSettings,
    Env,
    LinkKey,
    Program,
    Setting,
    metrics_bind,
    tracking_host_aliases,
)
from shared.settings.declare import optional
from shared.settings.parsers import flag, host_port, networks, number, or_off, path, whole

TRUSTED_PROXIES = Setting(
    "TRUSTED_PROXIES", networks, "",
    "Addresses or CIDR ranges whose X-Forwarded-For is believed, comma-separated.")
SPOOL_DIR = Setting(
    "SPOOL_DIR", path, "var/spool/redirector",
    "Where clicks wait until the broker confirms them (local disk).")
# Redirectors serve HTTP-01 answers only where a certifier writes them.
CHALLENGE_DIR = ACME_CHALLENGE_DIR.optional()
SPOOL_MAX_BYTES = Setting(
    "SPOOL_MAX_BYTES", whole(minimum=1 << 20), str(1 << 30),
    "Unsent clicks beyond this make /readyz answer 503.")
CLICK_BATCH_SIZE = Setting(
    "CLICK_BATCH_SIZE", whole(minimum=1), "500", "Most clicks per AMQP message.")
CLICK_LINGER_MS = Setting(
    "CLICK_LINGER_MS", number(), "50",
    "How long a small batch may wait to fill before it is published.")
DOMAIN_REFRESH_S = Setting(
    "DOMAIN_REFRESH_S", number(minimum=0.1), "5",
    "How often the active tracking domains are reloaded into memory.")
DRAIN_TIMEOUT_S = Setting(
    "DRAIN_TIMEOUT_S", number(), "20",
    "On SIGTERM, how long to keep publishing spooled clicks before exiting.")
REDIRECTOR_ACCESS_LOG = Setting(
    "REDIRECTOR_ACCESS_LOG", flag, "0", "1 logs one line per click (costs throughput).")
SCANNER_NETWORKS_FILE = Setting(
    "SCANNER_NETWORKS_FILE", optional(path), "",
    "File of networks mail scanners fetch from (`CIDR [label]` a line); read at start.")
BOT_SOON_AFTER_SEND_S = Setting(
    "BOT_SOON_AFTER_SEND_S", number(), "60",
    "A click this soon after its link's minting time `t` gets the weak reason soon-after-send.")
METRICS_BIND = metrics_bind("redirector")
CADDY_ASK_BIND = Setting(
    "CADDY_ASK_BIND", or_off(host_port, "serve no ask endpoint"), "",
    "host:port of Caddy's on-demand TLS `ask` endpoint (never the public port); "
    "empty or off: none.")

PROGRAM = Program("redirector", (
    REDIRECTOR_BIND, TRACKING_HOST, TRACKING_HOST_ALIASES, LINK_KEYS, TRUSTED_PROXIES,
    *BROKER, DATABASE_URL, SPOOL_DIR, CHALLENGE_DIR, SPOOL_MAX_BYTES, CLICK_BATCH_SIZE,
    CLICK_LINGER_MS, DOMAIN_REFRESH_S, DRAIN_TIMEOUT_S, LOG_LEVEL, REDIRECTOR_ACCESS_LOG,
    METRICS_BIND, CADDY_ASK_BIND, SCANNER_NETWORKS_FILE, BOT_SOON_AFTER_SEND_S,
    BOT_WEAK_REASONS,
))


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
    caddy_ask_bind: tuple[str, int] | None = None
    scanner_networks_file: Path | None = None
    soon_after_send_s: float = 60.0
    weak_reasons: frozenset[str] = frozenset({"soon-after-send"})


def load(environ: Mapping[str, str]) -> RedirectorSettings:
    env = Env(environ, PROGRAM)
    tracking_host = env[TRACKING_HOST]
    return RedirectorSettings(
        bind=env[REDIRECTOR_BIND],
        tracking_host=tracking_host,
        tracking_host_aliases=tracking_host_aliases(env, tracking_host),
        link_keys=env[LINK_KEYS],
        trusted_proxies=env[TRUSTED_PROXIES],
        broker=BrokerSettings.read(env),
        database=DatabaseSettings.read(env),
        spool_dir=env[SPOOL_DIR],
        challenge_dir=env[CHALLENGE_DIR],
        spool_max_bytes=env[SPOOL_MAX_BYTES],
        batch_size=env[CLICK_BATCH_SIZE],
        linger_ms=env[CLICK_LINGER_MS],
        domain_refresh_s=env[DOMAIN_REFRESH_S],
        drain_timeout_s=env[DRAIN_TIMEOUT_S],
        log_level=env[LOG_LEVEL],
        access_log=env[REDIRECTOR_ACCESS_LOG],
        metrics_bind=env[METRICS_BIND],
        caddy_ask_bind=env[CADDY_ASK_BIND],
        scanner_networks_file=env[SCANNER_NETWORKS_FILE],
        soon_after_send_s=env[BOT_SOON_AFTER_SEND_S],
        weak_reasons=env[BOT_WEAK_REASONS],
    )
