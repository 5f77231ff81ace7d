"""Reading settings from environment variables, with one clear error per bad setting.

Services build their settings once, in their entry point, from `os.environ`
passed in explicitly; nothing here reads the environment at import time.
A missing or malformed setting raises `SettingsError` whose message starts with
the setting's name, so the entry point can print exactly one line and exit.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from shared.errors import SettingsError

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/tracking.db"
DEFAULT_EXCHANGE = "tracking"
# Where each service listens unless its settings say otherwise; read here, not in the
# services' heavier modules, because the container healthcheck (shared/healthcheck.py)
# reads them too and runs every few seconds.
DEFAULT_REDIRECTOR_BIND = "127.0.0.1:8080"
DEFAULT_METRICS_BINDS: Mapping[str, str] = {
    "redirector": "127.0.0.1:9101",
    "logger": "127.0.0.1:9102",
    "verifier": "127.0.0.1:9103",
    "certifier": "127.0.0.1:9104",
}
_OFF = frozenset({"", "off", "none", "no", "false", "0"})
MIN_SECRET_LENGTH = 32
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class LinkKey:
    """One HMAC key for tracking links. The secret never appears in a repr."""

    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class BrokerSettings:
    url: str = field(repr=False)
    # Namespace for the exchange and every queue name, so several deployments
    # (or test runs) can share one broker without seeing each other's messages.
    exchange: str = DEFAULT_EXCHANGE

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(repr=False)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


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


def _check_port(name: str, url: str) -> None:
    """Refuse a port that is not a whole number 1-65535, naming the setting, never the
    password (the URL is shown redacted)."""
    host = _authority(url)
    port: str | None = None
    if host.startswith("["):
        closing = host.find("]")
        if closing == -1 or host[closing + 1:closing + 2] not in ("", ":"):
            raise SettingsError(f"{name} has an unreadable IPv6 address: {redact_url(url)!r}")
        port = host[closing + 2:]
    elif ":" in host:
        port = host.rpartition(":")[2]
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise SettingsError(f"{name} has a port that is not a number from 1 to 65535: "
                            f"{redact_url(url)!r}")


class Env:
    """Typed reads from an environment mapping; every failure names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: str, default: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise SettingsError(f"{name} is required but not set")
            return default
        return value

    # From here on, builtins.*: in this class `str` and `int` name the methods.
    def int(self, name: builtins.str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
        if number < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {number}")
        return number

    def float(self, name: builtins.str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise SettingsError(f"{name} must be a finite number, got {value!r}")
        if number < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {number}")
        return number

    def host_port(self, name: builtins.str,
                  default: builtins.str) -> tuple[builtins.str, builtins.int]:
        value = self.str(name, default)
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if (not sep or not host or not (port.isascii() and port.isdigit())
                or not 0 < int(port) < 65536):
            raise SettingsError(f"{name} must be host:port (e.g. 127.0.0.1:8080), got {value!r}")
        return host, int(port)

    def broker(self) -> BrokerSettings:
        url = self.str("AMQP_URL", DEFAULT_AMQP_URL)
        if url.partition("://")[0] not in ("amqp", "amqps"):
            raise SettingsError(
                f"AMQP_URL must start with amqp:// or amqps://, got {redact_url(url)!r}"
            )
        _check_port("AMQP_URL", url)
        if _secret_parameters(url):
            # aio-pika reads no password from the query, and prints the query in its own
            # reconnect warnings: refused rather than used and logged.
            raise SettingsError("AMQP_URL must give the password as amqp://user:password@host/, "
                                f"not as a query parameter: {redact_url(url)!r}")
        exchange = self.str("AMQP_EXCHANGE", DEFAULT_EXCHANGE)
        if not _NAME_RE.match(exchange):
            raise SettingsError(
                f"AMQP_EXCHANGE must be 1-100 letters, digits, '.', '_' or '-', got {exchange!r}"
            )
        return BrokerSettings(url=url, exchange=exchange)

    def database(self) -> DatabaseSettings:
        url = normalise_database_url(self.str("DATABASE_URL", DEFAULT_DATABASE_URL))
        _check_port("DATABASE_URL", url)
        return DatabaseSettings(url=url)

    def tracking_host(self) -> builtins.str:
        # Imported here: domains.py is pure, but keeping settings free of it at
        # import time avoids a cycle when domains grows DNS-aware helpers.
        from shared.domains import InvalidDomain, normalise_domain

        value = self.str("TRACKING_HOST")
        try:
            return normalise_domain(value, allow_single_label=True)
        except InvalidDomain as exc:
            raise SettingsError(f"TRACKING_HOST is not a valid host name: {exc}") from None

    def link_keys(self) -> tuple[LinkKey, ...]:
        return parse_link_keys(self.str("LINK_KEYS"))

    def networks(
        self, name: builtins.str,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        networks = []
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SettingsError(
                    f"{name} must be comma-separated IP addresses or CIDR ranges, got {item!r}"
                ) from None
        return tuple(networks)


def load_bind(environ: Mapping[str, str], service: str) -> tuple[str, int] | None:
    """`METRICS_BIND` (host:port) for `service`; None when set empty or to `off`."""
    value = environ.get("METRICS_BIND")
    if value is not None and value.strip().lower() in _OFF:
        return None
    try:
        return Env(environ).host_port("METRICS_BIND", DEFAULT_METRICS_BINDS[service])
    except SettingsError as exc:
        raise SettingsError(f"{exc} (or 'off' to serve no metrics)") from None


def parse_link_keys(value: str) -> tuple[LinkKey, ...]:
    """Parse `kid:secret,kid:secret`; the first key signs, all verify."""
    keys: list[LinkKey] = []
    # Nothing from an entry is ever echoed, not even its key id: an entry written
    # secret:kid holds the secret where the key id belongs.
    spelling = "entries are kid:secret, the key id first"
    for number, item in enumerate(value.split(","), start=1):
        kid, sep, secret = item.strip().partition(":")
        if not sep:
            raise SettingsError(f"LINK_KEYS entry {number} must be kid:secret (no ':' found)")
        if not _KID_RE.match(kid):
            raise SettingsError(
                f"LINK_KEYS entry {number}: the key id (before the first ':') must be 1-32 of "
                f"A-Z a-z 0-9 _ -, got {len(kid)} characters ({spelling})"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            # The length is safe to say; the secret is not.
            raise SettingsError(
                f"LINK_KEYS entry {number}: the secret (after the first ':') must be at "
                f"least {MIN_SECRET_LENGTH} characters, got {len(secret)} ({spelling})"
            )
        first = next((n for n, key in enumerate(keys, start=1) if key.kid == kid), None)
        if first is not None:
            raise SettingsError(f"LINK_KEYS entries {first} and {number}: the same key id "
                                "appears twice")
        keys.append(LinkKey(kid=kid, secret=secret.encode()))
    return tuple(keys)


def normalise_database_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: without "://" a password cannot be told apart to redact it.
        raise SettingsError("DATABASE_URL must be a URL such as postgresql://user@host/db "
                            "or sqlite:///var/tracking.db (no '://' found)")
    drivers = {
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
    }
    if scheme not in drivers:
        raise SettingsError(
            "DATABASE_URL must use postgresql:// or sqlite:///, "
            f"got {redact_url(url).split('://')[0]!r}"
        )
    return f"{drivers[scheme]}://{rest}"
