"""Certifier settings, from the environment (see docs/certificates.md for the table)."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.certifier.ratelimits import Limits
from shared.errors import SettingsError
from shared.metrics import load_bind
from shared.settings import BrokerSettings, DatabaseSettings, Env
from shared.verification.settings import EXPIRY_WARNING_DAYS

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
# nginx `listen` values we accept: a port, or address:port (IPv6 in brackets).
_LISTEN_RE = re.compile(
    r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class NginxSettings:
    conf_path: Path
    reload_command: tuple[str, ...]
    https_listen: str
    http_listen: str
    upstreams: tuple[str, ...]
    # Confirm by a TLS handshake that nginx serves a new certificate before reporting it.
    verify_tls: bool

    @property
    def https_port(self) -> int:
        return int(self.https_listen.rsplit(":", 1)[-1])


@dataclass(frozen=True)
class CertifierSettings:
    broker: BrokerSettings
    database: DatabaseSettings
    acme_directory_url: str
    acme_email: str | None
    acme_ca_bundle: Path | None
    certbot_command: str
    certbot_dir: Path
    certbot_timeout_s: float
    challenge_dir: Path
    tracking_host: str | None
    nginx: NginxSettings
    limits: Limits
    validation_attempts: int
    validation_retry_s: float
    renew_check_s: float
    renew_retry_s: float
    expiry_warning_days: float
    prefetch: int
    max_attempts: int
    retry_delays_ms: tuple[int, ...] | None
    log_level: str
    metrics_bind: tuple[str, int] | None = None
    # On SIGTERM: how long the certbot run in progress may take to finish before it is
    # abandoned (killed, its event left unacked for the broker to deliver again).
    drain_timeout_s: float = 60.0


def _default_certbot() -> str:
    """certbot next to this interpreter (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("certbot")
    if beside.exists():
        return str(beside)
    return shutil.which("certbot") or "certbot"


def _command(env: Env, name: str) -> tuple[str, ...]:
    value = env.raw(name)
    if value is None:
        return ()
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid command line: {exc}") from None


def _listen(env: Env, name: str, default: str) -> str:
    value = env.str(name, default)
    if not _LISTEN_RE.match(value) or not 0 < int(value.rsplit(":", 1)[-1]) < 65536:
        raise SettingsError(f"{name} must be a port or address:port (e.g. 443 or "
                            f"127.0.0.1:8443), got {value!r}")
    return value


def _upstreams(env: Env) -> tuple[str, ...]:
    value = env.str("NGINX_UPSTREAMS", "127.0.0.1:8080")
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    for item in items:
        if not _LISTEN_RE.match(item) or ":" not in item:
            raise SettingsError(
                f"NGINX_UPSTREAMS must be comma-separated host:port, got {item!r}")
    if not items:
        raise SettingsError("NGINX_UPSTREAMS names no redirector")
    return items


def _delays(env: Env) -> tuple[int, ...] | None:
    value = env.raw("CERTIFIER_RETRY_DELAYS_MS")
    if value is None:
        return None
    try:
        delays = tuple(int(item) for item in value.split(","))
    except ValueError:
        raise SettingsError(
            f"CERTIFIER_RETRY_DELAYS_MS must be comma-separated milliseconds, got {value!r}"
        ) from None
    if not delays or any(d <= 0 for d in delays) or list(delays) != sorted(delays):
        raise SettingsError("CERTIFIER_RETRY_DELAYS_MS must be positive and increasing")
    return delays


def load(environ: Mapping[str, str]) -> CertifierSettings:
    env = Env(environ)
    url = env.str("ACME_DIRECTORY_URL", LETS_ENCRYPT)
    if urlsplit(url).scheme != "https" or not urlsplit(url).netloc:
        raise SettingsError(f"ACME_DIRECTORY_URL must be an https:// URL, got {url!r}")
    email = env.raw("ACME_EMAIL")
    if email is not None and not _EMAIL_RE.match(email):
        raise SettingsError(f"ACME_EMAIL must be an email address, got {email!r}")
    bundle = env.raw("ACME_CA_BUNDLE")
    if bundle is not None and not Path(bundle).is_file():
        raise SettingsError(f"ACME_CA_BUNDLE must name a readable PEM file, got {bundle!r}")
    reload_command = _command(env, "NGINX_RELOAD_COMMAND")
    return CertifierSettings(
        broker=env.broker(),
        database=env.database(),
        acme_directory_url=url,
        acme_email=email,
        acme_ca_bundle=Path(bundle) if bundle else None,
        certbot_command=env.str("CERTBOT_COMMAND", _default_certbot()),
        certbot_dir=Path(env.str("CERTBOT_DIR", "var/certbot")),
        certbot_timeout_s=env.float("CERTBOT_TIMEOUT_S", 300.0, minimum=1.0),
        challenge_dir=Path(env.str("ACME_CHALLENGE_DIR", "var/acme-challenge")),
        # Only named in the reasons customers read; optional here.
        tracking_host=env.tracking_host() if env.raw("TRACKING_HOST") else None,
        nginx=NginxSettings(
            conf_path=Path(env.str("NGINX_CONF_PATH", "var/nginx/tracking-domains.conf")),
            reload_command=reload_command,
            https_listen=_listen(env, "NGINX_HTTPS_LISTEN", "443"),
            http_listen=_listen(env, "NGINX_HTTP_LISTEN", "80"),
            upstreams=_upstreams(env),
            verify_tls=env.str("NGINX_VERIFY_TLS", "1") in ("1", "true", "yes"),
        ),
        limits=Limits(
            orders_per_account=env.int("ACME_LIMIT_ORDERS_PER_3H", 300, minimum=1),
            certificates_per_domain=env.int("ACME_LIMIT_CERTIFICATES_PER_WEEK", 50, minimum=1),
            failed_validations_per_name=env.int("ACME_LIMIT_FAILED_VALIDATIONS_PER_HOUR", 5,
                                                minimum=1),
            duplicates_per_name=env.int("ACME_LIMIT_DUPLICATES_PER_WEEK", 5, minimum=1),
        ),
        validation_attempts=env.int("CERTIFIER_VALIDATION_ATTEMPTS", 3, minimum=1),
        validation_retry_s=env.float("CERTIFIER_VALIDATION_RETRY_S", 60.0, minimum=0.0),
        renew_check_s=env.float("CERTIFIER_RENEW_CHECK_S", 3600.0, minimum=0.1),
        renew_retry_s=env.float("CERTIFIER_RENEW_RETRY_S", 6 * 3600.0, minimum=1.0),
        expiry_warning_days=env.float("CERTIFIER_EXPIRY_WARNING_DAYS", EXPIRY_WARNING_DAYS),
        prefetch=env.int("CERTIFIER_PREFETCH", 8, minimum=1),
        max_attempts=env.int("CERTIFIER_MAX_ATTEMPTS", 24, minimum=1),
        retry_delays_ms=_delays(env),
        log_level=env.str("LOG_LEVEL", "INFO").upper(),
        metrics_bind=load_bind(environ, "certifier"),
        drain_timeout_s=env.float("CERTIFIER_DRAIN_TIMEOUT_S", 60.0, minimum=0.0),
    )
