"""Settings several programs read: the platform's host names, link keys and shared places."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.settings.declare import REQUIRED, Env, Invalid, Setting
from shared.settings.parsers import host_name, host_names, host_port, or_off, path

# Where each service listens unless its settings say otherwise; declared here, not in
# the services' heavier modules, because the container healthcheck (shared/healthcheck.py)
# reads them too and runs every few seconds.
DEFAULT_REDIRECTOR_BIND = "127.0.0.1:8080"
DEFAULT_METRICS_BINDS: Mapping[str, str] = {
    "redirector": "127.0.0.1:9101",
    "logger": "127.0.0.1:9102",
    "verifier": "127.0.0.1:9103",
    "certifier": "127.0.0.1:9104",
    "edge": "127.0.0.1:9105",
    "classifier": "127.0.0.1:9106",
}
MIN_SECRET_LENGTH = 32
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class LinkKey:
    """One HMAC key for tracking links. The secret never appears in a repr."""

    kid: str
    secret: bytes = field(repr=False)


def key_entries(value: str) -> tuple[tuple[str, str], ...]:
    """`kid:secret,kid:secret` as (kid, secret) pairs, in order: the rules LINK_KEYS and
    CERT_STORE_KEYS share. Entries are numbered in messages, so an empty one is refused
    rather than skipped."""
    entries: list[tuple[str, str]] = []
    # Nothing from an entry is ever echoed, not even its key id: an entry written
    # secret:kid holds the secret where the key id belongs.
    spelling = "entries are kid:secret, the key id first"
    for number, item in enumerate(value.split(","), start=1):
        kid, sep, secret = item.strip().partition(":")
        if not sep:
            raise Invalid(f"entry {number} must be kid:secret (no ':' found)")
        if not _KID_RE.match(kid):
            raise Invalid(
                f"entry {number}: the key id (before the first ':') must be 1-32 of "
                f"A-Z a-z 0-9 _ -, got {len(kid)} characters ({spelling})"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            # The length is safe to say; the secret is not.
            raise Invalid(
                f"entry {number}: the secret (after the first ':') must be at "
                f"least {MIN_SECRET_LENGTH} characters, got {len(secret)} ({spelling})"
            )
        first = next((n for n, (seen, _) in enumerate(entries, start=1) if seen == kid), None)
        if first is not None:
            raise Invalid(f"entries {first} and {number}: the same key id appears twice")
        entries.append((kid, secret))
    return tuple(entries)


def link_keys(value: str) -> tuple[LinkKey, ...]:
    """`kid:secret,kid:secret`; the first key signs, all verify."""
    return tuple(LinkKey(kid=kid, secret=secret.encode()) for kid, secret in key_entries(value))


@dataclass(frozen=True)
class StoreKey:
    """One key of the certificate store (shared/certificates/keyring.py). The secret never
    appears in a repr."""

    kid: str
    secret: bytes = field(repr=False)


def store_keys(value: str) -> tuple[StoreKey, ...]:
    """`kid:secret,kid:secret` as LINK_KEYS; the first key encrypts, all decrypt."""
    return tuple(StoreKey(kid=kid, secret=secret.encode()) for kid, secret in key_entries(value))


def parse_link_keys(value: str) -> tuple[LinkKey, ...]:
    """`LINK_KEYS` as the programs read it, or a `SettingsError` naming it."""
    return LINK_KEYS.parse(value)


def tracking_host_aliases(env: Env, tracking_host: str) -> tuple[str, ...]:
    """`TRACKING_HOST_ALIASES`: other names of the platform host.

    While the platform moves to a new `TRACKING_HOST`, the old name stays accepted as a
    CNAME target (verifier, `trackctl doctor`) and as the shared host of links
    (redirector). Each is read like `TRACKING_HOST`; a malformed one, a repeat, or
    `tracking_host` itself is a `SettingsError` naming the setting.
    """
    aliases = env[TRACKING_HOST_ALIASES]
    if tracking_host in aliases:
        raise TRACKING_HOST_ALIASES.invalid(
            f"names TRACKING_HOST ({tracking_host}) itself; list only the platform's other "
            "names (e.g. the host it is moving away from)")
    return aliases


TRACKING_HOST = Setting(
    "TRACKING_HOST", host_name, REQUIRED,
    "The platform's shared tracking host, and the CNAME target customers point at.")
TRACKING_HOST_ALIASES = Setting(
    "TRACKING_HOST_ALIASES", host_names, "",
    "Other names of the platform host, accepted like it while the platform host moves.")
LINK_KEYS = Setting(
    "LINK_KEYS", link_keys, REQUIRED,
    "kid:secret,kid:secret (secrets of 32 characters or more); the first key signs.",
    redact=lambda _value: "***")
CERT_STORE_KEYS = Setting(
    "CERT_STORE_KEYS", store_keys, REQUIRED,
    "kid:secret,kid:secret (secrets of 32 characters or more); the first key encrypts "
    "private keys in the certificate store, all decrypt.",
    redact=lambda _value: "***")
# Read by the redirector, and named by `trackctl up` when it starts one.
REDIRECTOR_BIND = Setting(
    "REDIRECTOR_BIND", host_port, DEFAULT_REDIRECTOR_BIND, "host:port the redirector listens on.")
# HTTP-01 answers are in the database (shared/certificates/challenges.py); this directory
# is a single-host option: the certifier also writes them there, the redirector also
# reads them there.
ACME_CHALLENGE_DIR = Setting(
    "ACME_CHALLENGE_DIR", path, "var/acme-challenge",
    "Single-host option: a directory of HTTP-01 answers beside the database's.")


def metrics_bind(service: str) -> Setting[tuple[str, int] | None]:
    """`METRICS_BIND` as `service` reads it: its own default port; empty or `off`: none."""
    return Setting(
        "METRICS_BIND", or_off(host_port, "serve no metrics"), DEFAULT_METRICS_BINDS[service],
        "host:port serving Prometheus /metrics (never the public port); empty or off: none.",
        blank_is_unset=False)
