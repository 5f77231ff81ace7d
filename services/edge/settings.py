"""Edge agent settings, from the environment (see docs/certificates.md, "Settings (edge agent)")."""

from __future__ import annotations

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
from shared.settings.declare import optional
from shared.settings.nginx import (
    NGINX_CONF_PATH,
    NGINX_HTTP_LISTEN,
    NGINX_HTTPS_LISTEN,
    NGINX_RELOAD_COMMAND,
    NGINX_UPSTREAMS,
    NGINX_VERIFY_TLS,
)
from shared.settings.parsers import matching, number, path, string

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
