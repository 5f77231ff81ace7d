"""Edge agent settings, from the environment (see docs/certificates.md, "Settings (edge agent)")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.logs import LOG_LEVEL
from shared.settings import (
    BROKER,
    CERT_STORE_KEYS,
    DATABASE_URL,
    REQUIRED,
    BrokerSettings,
    DatabaseSettings,
    Env,
    Program,
    Setting,
    StoreKey,
    metrics_bind,
)
from shared.settings.declare import Invalid, optional
from shared.settings.parsers import command, flag, items, matching, number, path, string

# nginx: only the agent writes nginx's configuration (the certifier touches no nginx).
# `listen` values we accept: a port, or address:port (IPv6 in brackets).
_LISTEN_RE = re.compile(
    r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5}$")


def listen(text: str) -> str:
    """An nginx `listen` value: a port or address:port."""
    if not _LISTEN_RE.match(text) or not 0 < int(text.rsplit(":", 1)[-1]) < 65536:
        raise Invalid("must be a port or address:port (e.g. 443 or 127.0.0.1:8443), "
                      f"got {text!r}")
    return text


def upstreams(text: str) -> tuple[str, ...]:
    found = tuple(items(text))
    for item in found:
        if not _LISTEN_RE.match(item) or ":" not in item:
            raise Invalid(f"must be comma-separated host:port, got {item!r}")
    if not found:
        raise Invalid("names no redirector")
    return found


NGINX_CONF_PATH = Setting(
    "NGINX_CONF_PATH", path, "var/nginx/tracking-domains.conf", "The generated nginx include.")
NGINX_RELOAD_COMMAND = Setting(
    "NGINX_RELOAD_COMMAND", command, "", "Run after the include changed.",
    shown="(none: write only)")
NGINX_HTTPS_LISTEN = Setting(
    "NGINX_HTTPS_LISTEN", listen, "443", "nginx `listen` value for HTTPS.")
NGINX_HTTP_LISTEN = Setting(
    "NGINX_HTTP_LISTEN", listen, "80", "nginx `listen` value for HTTP.")
NGINX_UPSTREAMS = Setting(
    "NGINX_UPSTREAMS", upstreams, "127.0.0.1:8080", "Redirector addresses, comma-separated.")
NGINX_VERIFY_TLS = Setting(
    "NGINX_VERIFY_TLS", flag, "1", "Confirm by a handshake that a new certificate is served.")


EDGE_ID = Setting(
    "EDGE_ID", matching(r"[a-z0-9][a-z0-9-]{0,62}", "lower-case letters, digits and -"),
    REQUIRED, "This edge's name: its queue, its rows in edge_certificates, its metric label.")
EDGE_CERT_DIR = Setting(
    "EDGE_CERT_DIR", path, "var/edge/certs",
    "Where the agent writes one file per domain (chain and key) for nginx to read.")
EDGE_CERT_GROUP = Setting(
    "EDGE_CERT_GROUP", optional(string), "",
    "Group (name or gid) given the certificate files (0640): that of nginx's workers.",
    shown="(the agent's own)")
EDGE_RECONCILE_S = Setting(
    "EDGE_RECONCILE_S", number(minimum=1.0), "300",
    "How often everything served is compared with the certificate store and repaired.")
METRICS_BIND = metrics_bind("edge")

PROGRAM = Program("edge", (
    EDGE_ID, *BROKER, DATABASE_URL, CERT_STORE_KEYS, EDGE_CERT_DIR, EDGE_CERT_GROUP,
    EDGE_RECONCILE_S,
    NGINX_CONF_PATH, NGINX_RELOAD_COMMAND, NGINX_HTTPS_LISTEN, NGINX_HTTP_LISTEN,
    NGINX_UPSTREAMS, NGINX_VERIFY_TLS, LOG_LEVEL, METRICS_BIND,
))


@dataclass(frozen=True)
class EdgeSettings:
    edge_id: str
    broker: BrokerSettings
    database: DatabaseSettings
    store_keys: tuple[StoreKey, ...]
    cert_dir: Path
    cert_group: str | None
    reconcile_s: float
    conf_path: Path
    reload_command: tuple[str, ...]
    https_listen: str
    http_listen: str
    upstreams: tuple[str, ...]
    verify_tls: bool
    log_level: str
    metrics_bind: tuple[str, int] | None = None


def load(environ: Mapping[str, str]) -> EdgeSettings:
    env = Env(environ, PROGRAM)
    return EdgeSettings(
        edge_id=env[EDGE_ID],
        broker=BrokerSettings.read(env),
        database=DatabaseSettings.read(env),
        store_keys=env[CERT_STORE_KEYS],
        cert_dir=env[EDGE_CERT_DIR],
        cert_group=env[EDGE_CERT_GROUP],
        reconcile_s=env[EDGE_RECONCILE_S],
        conf_path=env[NGINX_CONF_PATH],
        reload_command=env[NGINX_RELOAD_COMMAND],
        https_listen=env[NGINX_HTTPS_LISTEN],
        http_listen=env[NGINX_HTTP_LISTEN],
        upstreams=env[NGINX_UPSTREAMS],
        verify_tls=env[NGINX_VERIFY_TLS],
        log_level=env[LOG_LEVEL],
        metrics_bind=env[METRICS_BIND],
    )
