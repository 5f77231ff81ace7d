"""Certifier settings, from the environment (see docs/certificates.md for the table)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.certifier.ratelimits import Limits
from shared.broker.names import retry_tiers
from shared.logs import LOG_LEVEL
from shared.settings import (
    ACME_CHALLENGE_DIR,
    BROKER,
    CERT_STORE_KEYS,
    DATABASE_URL,
    TRACKING_HOST,
    BrokerSettings,
    DatabaseSettings,
    Env,
    Invalid,
    Program,
    Setting,
    StoreKey,
    metrics_bind,
    optional,
)
from shared.settings.parsers import (
    matching,
    number,
    path,
    string,
    whole,
)
from shared.verification.settings import EXPIRY_WARNING_DAYS

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
def https_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.netloc:
        raise Invalid(f"must be an https:// URL, got {text!r}")
    return text


def pem_file(text: str) -> Path:
    if not Path(text).is_file():
        raise Invalid(f"must name a readable PEM file, got {text!r}")
    return Path(text)


def _default_certbot() -> str:
    """certbot next to this interpreter (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("certbot")
    if beside.exists():
        return str(beside)
    return shutil.which("certbot") or "certbot"


_LIMITS = Limits()

ACME_DIRECTORY_URL = Setting(
    "ACME_DIRECTORY_URL", https_url, LETS_ENCRYPT, "The CA's ACME directory.")
ACME_EMAIL = Setting(
    "ACME_EMAIL", optional(matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an email address")), "",
    "Account contact for expiry notices from the CA.")
ACME_CA_BUNDLE = Setting(
    "ACME_CA_BUNDLE", optional(pem_file), "",
    "PEM file to trust for the ACME server's own TLS.", shown="system trust")
ACME_PROFILE = Setting(
    "ACME_PROFILE", optional(matching(r"[A-Za-z0-9._-]{1,64}", "a profile name")), "",
    "Certificate profile to ask the CA for (e.g. shortlived); the CA's default if it has "
    "none of that name.", shown="(the CA's default)")
# The certifier writes HTTP-01 answers to the database; a directory only if asked.
CERTIFIER_CHALLENGE_DIR = ACME_CHALLENGE_DIR.optional()
CERTBOT_COMMAND = Setting(
    "CERTBOT_COMMAND", string, _default_certbot, "certbot executable.",
    shown="the virtualenv's `certbot`")
CERTBOT_DIR = Setting(
    "CERTBOT_DIR", path, "var/certbot", "certbot's config, work and log directories.")
CERTBOT_TIMEOUT_S = Setting(
    "CERTBOT_TIMEOUT_S", number(minimum=1.0), "300", "A certbot run taking longer is killed.")
# Only named in the reasons customers read.
CERTIFIER_TRACKING_HOST = TRACKING_HOST.optional()
ACME_LIMIT_ORDERS_PER_3H = Setting(
    "ACME_LIMIT_ORDERS_PER_3H", whole(minimum=1), str(_LIMITS.orders_per_account),
    "New orders per account in 3 hours.")
ACME_LIMIT_CERTIFICATES_PER_WEEK = Setting(
    "ACME_LIMIT_CERTIFICATES_PER_WEEK", whole(minimum=1), str(_LIMITS.certificates_per_domain),
    "Certificates per registered domain in a week.")
ACME_LIMIT_FAILED_VALIDATIONS_PER_HOUR = Setting(
    "ACME_LIMIT_FAILED_VALIDATIONS_PER_HOUR", whole(minimum=1),
    str(_LIMITS.failed_validations_per_name), "Failed validations per name in an hour.")
ACME_LIMIT_DUPLICATES_PER_WEEK = Setting(
    "ACME_LIMIT_DUPLICATES_PER_WEEK", whole(minimum=1), str(_LIMITS.duplicates_per_name),
    "Duplicate certificates (same name) in a week.")
CERTIFIER_VALIDATION_ATTEMPTS = Setting(
    "CERTIFIER_VALIDATION_ATTEMPTS", whole(minimum=1), "3",
    "Failed validations before certificate.failed.")
CERTIFIER_VALIDATION_RETRY_S = Setting(
    "CERTIFIER_VALIDATION_RETRY_S", number(), "60",
    "First retry delay after a failed validation (x4 each time).")
CERTIFIER_RENEW_CHECK_S = Setting(
    "CERTIFIER_RENEW_CHECK_S", number(minimum=0.1), "3600", "How often renewals are looked for.")
CERTIFIER_RENEW_RETRY_S = Setting(
    "CERTIFIER_RENEW_RETRY_S", number(minimum=1.0), f"{6 * 3600}",
    "Wait after a failed renewal.")
CERTIFIER_EXPIRY_WARNING_DAYS = Setting(
    "CERTIFIER_EXPIRY_WARNING_DAYS", number(), f"{EXPIRY_WARNING_DAYS:g}",
    "From then on a failed renewal publishes certificate.expiring.")
CERTIFIER_PREFETCH = Setting(
    "CERTIFIER_PREFETCH", whole(minimum=1), "8", "Messages held at once.")
CERTIFIER_MAX_ATTEMPTS = Setting(
    "CERTIFIER_MAX_ATTEMPTS", whole(minimum=1), "24",
    "Transient failures before a message is dead-lettered.")
CERTIFIER_RETRY_DELAYS_MS = retry_tiers("CERTIFIER_RETRY_DELAYS_MS")
CERTIFIER_DRAIN_TIMEOUT_S = Setting(
    "CERTIFIER_DRAIN_TIMEOUT_S", number(), "60",
    "On SIGTERM, how long the certbot run in progress may take to finish.")
METRICS_BIND = metrics_bind("certifier")

PROGRAM = Program("certifier", (
    ACME_DIRECTORY_URL, ACME_EMAIL, ACME_CA_BUNDLE, *BROKER,
    DATABASE_URL, CERT_STORE_KEYS, ACME_PROFILE, CERTBOT_COMMAND, CERTBOT_DIR,
    CERTBOT_TIMEOUT_S, CERTIFIER_CHALLENGE_DIR,
    CERTIFIER_TRACKING_HOST, ACME_LIMIT_ORDERS_PER_3H,
    ACME_LIMIT_CERTIFICATES_PER_WEEK, ACME_LIMIT_FAILED_VALIDATIONS_PER_HOUR,
    ACME_LIMIT_DUPLICATES_PER_WEEK, CERTIFIER_VALIDATION_ATTEMPTS,
    CERTIFIER_VALIDATION_RETRY_S, CERTIFIER_RENEW_CHECK_S, CERTIFIER_RENEW_RETRY_S,
    CERTIFIER_EXPIRY_WARNING_DAYS, CERTIFIER_PREFETCH, CERTIFIER_MAX_ATTEMPTS,
    CERTIFIER_RETRY_DELAYS_MS, LOG_LEVEL, METRICS_BIND, CERTIFIER_DRAIN_TIMEOUT_S,
))


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
    challenge_dir: Path | None
    tracking_host: str | None
    limits: Limits
    validation_attempts: int
    validation_retry_s: float
    renew_check_s: float
    renew_retry_s: float
    expiry_warning_days: float
    prefetch: int
    max_attempts: int
    retry_delays_ms: tuple[int, ...]
    log_level: str
    metrics_bind: tuple[str, int] | None = None
    store_keys: tuple[StoreKey, ...] = ()
    acme_profile: str | None = None
    # On SIGTERM: how long the certbot run in progress may take to finish before it is
    # abandoned (killed, its event left unacked for the broker to deliver again).
    drain_timeout_s: float = 60.0


def load(environ: Mapping[str, str]) -> CertifierSettings:
    env = Env(environ, PROGRAM)
    return CertifierSettings(
        broker=BrokerSettings.read(env),
        database=DatabaseSettings.read(env),
        acme_directory_url=env[ACME_DIRECTORY_URL],
        acme_email=env[ACME_EMAIL],
        acme_ca_bundle=env[ACME_CA_BUNDLE],
        certbot_command=env[CERTBOT_COMMAND],
        certbot_dir=env[CERTBOT_DIR],
        certbot_timeout_s=env[CERTBOT_TIMEOUT_S],
        challenge_dir=env[CERTIFIER_CHALLENGE_DIR],
        store_keys=env[CERT_STORE_KEYS],
        acme_profile=env[ACME_PROFILE],
        tracking_host=env[CERTIFIER_TRACKING_HOST],
        limits=Limits(
            orders_per_account=env[ACME_LIMIT_ORDERS_PER_3H],
            certificates_per_domain=env[ACME_LIMIT_CERTIFICATES_PER_WEEK],
            failed_validations_per_name=env[ACME_LIMIT_FAILED_VALIDATIONS_PER_HOUR],
            duplicates_per_name=env[ACME_LIMIT_DUPLICATES_PER_WEEK],
        ),
        validation_attempts=env[CERTIFIER_VALIDATION_ATTEMPTS],
        validation_retry_s=env[CERTIFIER_VALIDATION_RETRY_S],
        renew_check_s=env[CERTIFIER_RENEW_CHECK_S],
        renew_retry_s=env[CERTIFIER_RENEW_RETRY_S],
        expiry_warning_days=env[CERTIFIER_EXPIRY_WARNING_DAYS],
        prefetch=env[CERTIFIER_PREFETCH],
        max_attempts=env[CERTIFIER_MAX_ATTEMPTS],
        retry_delays_ms=env[CERTIFIER_RETRY_DELAYS_MS],
        log_level=env[LOG_LEVEL],
        metrics_bind=env[METRICS_BIND],
        drain_timeout_s=env[CERTIFIER_DRAIN_TIMEOUT_S],
    )
