"""Reading settings from environment variables, each declared once, with one clear error
per bad setting.

Every variable is a `Setting` (declare.py): its name, its parser (parsers.py), its
default and what it is for. The ones several programs read are declared here
(connections.py, platform.py; LOG_LEVEL in shared.logs, the DNS judgement's in
shared.verification.settings); each service's
settings module declares its own and lists them all in its `PROGRAM`, as trackctl does.
Programs build their settings once, from `os.environ` passed in explicitly; nothing
reads the environment at import time. A missing or malformed setting raises
`SettingsError` whose message starts with the setting's name, so the entry point can
print exactly one line and exit; secrets are never part of it.
"""

from shared.errors import SettingsError
from shared.settings.connections import (
    AMQP_EXCHANGE,
    AMQP_URL,
    BROKER,
    DATABASE_URL,
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_EXCHANGE,
    BrokerSettings,
    DatabaseSettings,
    normalise_database_url,
    redact_url,
)
from shared.settings.declare import REQUIRED, Env, Invalid, Program, Setting, optional
from shared.settings.platform import (
    ACME_CHALLENGE_DIR,
    CERT_STORE_KEYS,
    DEFAULT_METRICS_BINDS,
    DEFAULT_REDIRECTOR_BIND,
    LINK_KEYS,
    MIN_SECRET_LENGTH,
    REDIRECTOR_BIND,
    TRACKING_HOST,
    TRACKING_HOST_ALIASES,
    LinkKey,
    StoreKey,
    metrics_bind,
    parse_link_keys,
    tracking_host_aliases,
)

__all__ = [
    "ACME_CHALLENGE_DIR",
    "AMQP_EXCHANGE",
    "AMQP_URL",
    "BROKER",
    "CERT_STORE_KEYS",
    "DATABASE_URL",
    "DEFAULT_AMQP_URL",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_EXCHANGE",
    "DEFAULT_METRICS_BINDS",
    "DEFAULT_REDIRECTOR_BIND",
    "LINK_KEYS",
    "MIN_SECRET_LENGTH",
    "REDIRECTOR_BIND",
    "REQUIRED",
    "TRACKING_HOST",
    "TRACKING_HOST_ALIASES",
    "BrokerSettings",
    "DatabaseSettings",
    "Env",
    "Invalid",
    "LinkKey",
    "Program",
    "Setting",
    "SettingsError",
    "StoreKey",
    "metrics_bind",
    "normalise_database_url",
    "optional",
    "parse_link_keys",
    "redact_url",
    "tracking_host_aliases",
]
