"""The settings DNS is judged by, read once for the verifier and for `trackctl doctor`.

Both programs call `load_dns_judgement`, so a value one of them refuses the other
refuses too, and both judge a name against the same host, aliases, CAA identity and
resolvers (README's settings table; docs/troubleshooting.md). Also when a certificate
counts as expiring soon, for the certifier and doctor alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import (
    TRACKING_HOST,
    TRACKING_HOST_ALIASES,
    Env,
    Invalid,
    Setting,
    tracking_host_aliases,
)
from shared.settings.parsers import nameservers, number

DEFAULT_CAA_IDENTITY = "letsencrypt.org"
DEFAULT_DNS_TIMEOUT_S = 5.0
# A certificate this close to expiry means renewal is failing: the default of the
# certifier's CERTIFIER_EXPIRY_WARNING_DAYS, and where `trackctl doctor` warns.
EXPIRY_WARNING_DAYS = 14.0


@dataclass(frozen=True)
class DnsJudgement:
    """What a name's DNS is judged against, and which resolvers are asked."""

    tracking_host: str
    tracking_host_aliases: tuple[str, ...]  # accepted like it while the platform host moves
    caa_identity: str
    # Empty: the system's resolvers (/etc/resolv.conf).
    nameservers: tuple[tuple[str, int], ...]
    dns_timeout_s: float


def caa_identity(text: str) -> str:
    """A CA's CAA identity: a domain, compared in lower case without its final dot."""
    identity = text.lower().rstrip(".")
    if not identity or any(ch.isspace() or ch in ";\"" for ch in identity):
        raise Invalid(f"must be the CA's CAA domain (e.g. letsencrypt.org), got {identity!r}")
    return identity


ACME_CAA_IDENTITY = Setting(
    "ACME_CAA_IDENTITY", caa_identity, DEFAULT_CAA_IDENTITY,
    "The CA's CAA identity: a CAA record naming another CA forbids issuance.")
DNS_NAMESERVERS = Setting(
    "DNS_NAMESERVERS", nameservers, "",
    "Resolvers asked: ip, ip:port, [ipv6]:port, comma-separated.", shown="the system's")
DNS_TIMEOUT_S = Setting(
    "DNS_TIMEOUT_S", number(minimum=0.01), f"{DEFAULT_DNS_TIMEOUT_S:g}",
    "Time allowed for one DNS question (all servers, retries included).")
# What `load_dns_judgement` reads: part of every program that judges DNS.
DNS_JUDGEMENT = (TRACKING_HOST, TRACKING_HOST_ALIASES, ACME_CAA_IDENTITY, DNS_NAMESERVERS,
                 DNS_TIMEOUT_S)


def load_dns_judgement(env: Env) -> DnsJudgement:
    """The settings of `DNS_JUDGEMENT`, validated; a bad value is a `SettingsError`
    naming its variable."""
    caa = env[ACME_CAA_IDENTITY]
    tracking_host = env[TRACKING_HOST]
    return DnsJudgement(
        tracking_host=tracking_host,
        tracking_host_aliases=tracking_host_aliases(env, tracking_host),
        caa_identity=caa,
        nameservers=env[DNS_NAMESERVERS],
        dns_timeout_s=env[DNS_TIMEOUT_S],
    )
