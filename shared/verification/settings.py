"""The settings DNS is judged by, read once for the verifier and for `trackctl doctor`.

Both programs call `load_dns_judgement`, so a value one of them refuses the other
refuses too, and both judge a name against the same host, aliases, CAA identity and
resolvers (README's settings table; docs/troubleshooting.md). Also when a certificate
counts as expiring soon, for the certifier and doctor alike.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shared.domains import parse_host_aliases
from shared.errors import SettingsError
from shared.settings import Env

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


def load_dns_judgement(env: Env) -> DnsJudgement:
    """TRACKING_HOST, TRACKING_HOST_ALIASES, ACME_CAA_IDENTITY, DNS_NAMESERVERS and
    DNS_TIMEOUT_S, validated; a bad value is a `SettingsError` naming its variable."""
    caa_identity = env.str("ACME_CAA_IDENTITY", DEFAULT_CAA_IDENTITY).lower().rstrip(".")
    if not caa_identity or any(ch.isspace() or ch in ";\"" for ch in caa_identity):
        raise SettingsError(
            f"ACME_CAA_IDENTITY must be the CA's CAA domain (e.g. letsencrypt.org), "
            f"got {caa_identity!r}")
    tracking_host = env.tracking_host()
    return DnsJudgement(
        tracking_host=tracking_host,
        tracking_host_aliases=parse_host_aliases(env.raw("TRACKING_HOST_ALIASES"),
                                                 tracking_host),
        caa_identity=caa_identity,
        nameservers=parse_nameservers(env.raw("DNS_NAMESERVERS")),
        dns_timeout_s=env.float("DNS_TIMEOUT_S", DEFAULT_DNS_TIMEOUT_S, minimum=0.01),
    )


def parse_nameservers(value: str | None) -> tuple[tuple[str, int], ...]:
    """`DNS_NAMESERVERS`: comma-separated `ip`, `ip:port`, `ipv6` or `[ipv6]:port`."""
    if value is None:
        return ()
    servers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            raise SettingsError(
                f"DNS_NAMESERVERS entries must be ip or ip:port (e.g. 127.0.0.1:5353), "
                f"got {item!r}") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"DNS_NAMESERVERS entry {item!r} has a bad port")
        servers.append((address, int(port)))
    return tuple(servers)
