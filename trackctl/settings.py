"""The settings trackctl reads: the services' own variables (docs/trackctl.md says which
command reads which), declared once in shared and read through `reader()`."""

from __future__ import annotations

from collections.abc import Mapping

from shared.settings import (
    BROKER,
    CERT_STORE_KEYS,
    DATABASE_URL,
    LINK_KEYS,
    REDIRECTOR_BIND,
    Env,
    Program,
)
from shared.verification.settings import DNS_JUDGEMENT

PROGRAM = Program("trackctl", (
    DATABASE_URL, *BROKER, *DNS_JUDGEMENT, LINK_KEYS, REDIRECTOR_BIND, CERT_STORE_KEYS,
))


def reader(environ: Mapping[str, str]) -> Env:
    """trackctl's view of `environ`: only the settings it declares can be read."""
    return Env(environ, PROGRAM)
