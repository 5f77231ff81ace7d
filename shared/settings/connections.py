"""The broker and the database: their settings, and URLs shown without their secrets.

Every program reads AMQP_URL, AMQP_EXCHANGE and DATABASE_URL alike. A URL may hold a
password: it never appears in a repr, a log line or an error message (`redact_url`
masks it), and a URL hiding one where it would be logged is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from shared.settings.declare import Env, Invalid, Setting
from shared.settings.parsers import matching

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/tracking.db"
DEFAULT_EXCHANGE = "tracking"
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


@dataclass(frozen=True)
class BrokerSettings:
    url: str = field(repr=False)
    # Namespace for the exchange and every queue name, so several deployments
    # (or test runs) can share one broker without seeing each other's messages.
    exchange: str = DEFAULT_EXCHANGE

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @classmethod
    def read(cls, env: Env) -> BrokerSettings:
        return cls(url=env[AMQP_URL], exchange=env[AMQP_EXCHANGE])


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(repr=False)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    @classmethod
    def read(cls, env: Env) -> DatabaseSettings:
        return cls(url=env[DATABASE_URL])


def amqp_url(url: str) -> str:
    """An `amqp://` or `amqps://` URL with a readable port and no password in its query."""
    if url.partition("://")[0] not in ("amqp", "amqps"):
        raise Invalid(f"must start with amqp:// or amqps://, got {redact_url(url)!r}")
    _check_port(url)
    if _secret_parameters(url):
        # aio-pika reads no password from the query, and prints the query in its own
        # reconnect warnings: refused rather than used and logged.
        raise Invalid("must give the password as amqp://user:password@host/, not as a "
                      f"query parameter: {redact_url(url)!r}")
    return url


def database_url(url: str) -> str:
    """Plain `postgresql://` and `sqlite:///` URLs accepted, with the async driver picked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: without "://" a password cannot be told apart to redact it.
        raise Invalid("must be a URL such as postgresql://user@host/db "
                      "or sqlite:///var/tracking.db (no '://' found)")
    if scheme not in _DRIVERS:
        raise Invalid("must use postgresql:// or sqlite:///, "
                      f"got {redact_url(url).split('://')[0]!r}")
    normalised = f"{_DRIVERS[scheme]}://{rest}"
    _check_port(normalised)
    return normalised


def normalise_database_url(url: str) -> str:
    """`DATABASE_URL` as the programs read it (the async driver picked), or a
    `SettingsError` naming it."""
    return DATABASE_URL.parse(url)


def redact_url(url: str) -> str:
    """The URL with any password replaced by '***', for logs: the one in the userinfo,
    and the value of any query parameter whose name speaks of a secret (`?password=`,
    `sslpassword`, `secret`, `token`, `key`; any letter case, percent-escapes decoded).

    Parsed by hand, not with urlsplit: a password holding an unescaped '/', '?' or '#'
    would end urlsplit's netloc early and leave the password in plain sight. Erring
    the other way (redacting a little too much of an odd URL) is harmless.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at != -1:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***@{rest[at + 1:]}"
    return f"{scheme}://{_SECRET_PARAMETER.sub(_redact_parameter, rest)}"


# A query parameter (its name, '=') and its value, up to the next '&', ';' or '#'.
_SECRET_PARAMETER = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth", re.IGNORECASE)


def _redact_parameter(match: re.Match[str]) -> str:
    if _SECRET_NAME.search(unquote(match.group(2))):
        return f"{match.group(1)}{match.group(2)}=***"
    return match.group(0)


def _secret_parameters(url: str) -> bool:
    """Whether the URL (after its userinfo) has a query parameter `redact_url` hides."""
    rest = url.partition("://")[2]
    return any(_SECRET_NAME.search(unquote(match.group(2)))
               for match in _SECRET_PARAMETER.finditer(rest[rest.rfind("@") + 1:]))


def _authority(url: str) -> str:
    """`host[:port]` of a URL: after the last '@' of the part before the path, so a
    password holding '/', '?', '#' or '@' is never taken for the host or the port."""
    rest = url.partition("://")[2]
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, rest.rfind("@") + 1)
        if found != -1:
            end = min(end, found)
    return rest[:end].rpartition("@")[2]


def _check_port(url: str) -> None:
    """Refuse a port that is not a whole number 1-65535, never showing the password
    (the URL is shown redacted)."""
    host = _authority(url)
    port: str | None = None
    if host.startswith("["):
        closing = host.find("]")
        if closing == -1 or host[closing + 1:closing + 2] not in ("", ":"):
            raise Invalid(f"has an unreadable IPv6 address: {redact_url(url)!r}")
        port = host[closing + 2:]
    elif ":" in host:
        port = host.rpartition(":")[2]
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise Invalid(f"has a port that is not a number from 1 to 65535: {redact_url(url)!r}")


AMQP_URL = Setting("AMQP_URL", amqp_url, DEFAULT_AMQP_URL, "RabbitMQ.", redact=redact_url)
AMQP_EXCHANGE = Setting(
    "AMQP_EXCHANGE", matching(r"[A-Za-z0-9_.-]{1,100}", "1-100 letters, digits, '.', '_' or '-'"),
    DEFAULT_EXCHANGE, "Topic exchange name; also the prefix of every queue's name.")
DATABASE_URL = Setting(
    "DATABASE_URL", database_url, DEFAULT_DATABASE_URL,
    "postgresql://... in production, sqlite:///... for trying it out.", redact=redact_url)
BROKER = (AMQP_URL, AMQP_EXCHANGE)

