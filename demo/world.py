"""The local world: a DNS server, Pebble, nginx and its edge agent, and the four services,
on 127.0.0.1.

Everything the whole domain lifecycle needs, started and ready, for the guided demo,
the end-to-end tests and bench/lifecycle.py. One DNS server (demo/dns.py) answers
everybody: the verifier (`DNS_NAMESERVERS`) and Pebble (`-dnsserver`), so the CA
resolves a customer's name through the same CNAME the verifier judged. The platform
host has A 127.0.0.1, Pebble validates HTTP-01 on nginx's plain-HTTP port, nginx
proxies the challenge path to the redirector, which reads the answer the certifier's
hook wrote in the shared `ACME_CHALLENGE_DIR`. The certifier stores the certificate; the
edge agent beside nginx (`python -m services.edge`) installs it for nginx to pick per
handshake, as on every production edge. The services run as real processes:

    with local_world(directory, env=common_env, tracking_host=HOST) as world:
        world.dns.cname("track.customer-a.test", HOST)
        ... publish domain.created, then https_get(world.nginx.https_port, name, path,
        world.trusted_context()) ...

Pebble 2.4 (Debian's) checks no CAA records at all; newer Pebble releases check them
against `pebble.letsencrypt.org`, the identity the verifier is given here. That Pebble
would issue in spite of a CAA set forbidding it is exactly why the verifier must catch
it before any order is placed.
"""

from __future__ import annotations

import secrets
import ssl
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from demo.blocklists import ListZones
from demo.dns import DnsServer
from demo.net import free_port
from demo.nginx import Nginx
from demo.pebble import Pebble
from demo.processes import ServiceProcess

PEBBLE_CAA_IDENTITY = "pebble.letsencrypt.org"


@dataclass
class World:
    """The started pieces, and where their files are."""

    directory: Path
    dns: DnsServer
    lists: ListZones
    pebble: Pebble
    nginx: Nginx
    challenges: Path
    certbot_dir: Path
    root: Path  # Pebble's root of this run: what a browser would trust
    verifier: ServiceProcess
    certifier: ServiceProcess
    redirector: ServiceProcess
    logger: ServiceProcess
    edge: ServiceProcess  # the edge agent beside nginx
    redirector_bind: str = ""
    services: list[ServiceProcess] = field(default_factory=list)

    def trusted_context(self) -> ssl.SSLContext:
        """A client TLS context trusting Pebble's root only, as a browser that knew it."""
        return ssl.create_default_context(cafile=str(self.root))

    def logs(self, lines: int = 60) -> str:
        """The tail of every log (services, nginx, Pebble), for a failure report."""
        parts = [f"----- {p.name} -----\n" + "\n".join(p.log_text().splitlines()[-lines:])
                 for p in self.services]
        parts.append(f"----- nginx -----\n{self.nginx.log_text()[-2000:]}")
        parts.append(self.pebble.logs())
        return "\n".join(parts)

    def pebble_log(self) -> str:
        """Pebble's own log (orders, validations, issued certificates)."""
        return (self.pebble.directory / "pebble.log").read_text(errors="replace")

    def terminate(self, timeout_s: float = 40.0) -> dict[str, int]:
        """SIGTERM every service (the graceful path); their exit statuses by name."""
        return {process.name: process.terminate(timeout_s) for process in self.services}


@contextmanager
def local_world(directory: Path, *, env: Mapping[str, str], tracking_host: str,
                verifier_env: Mapping[str, str] | None = None,
                certifier_env: Mapping[str, str] | None = None,
                redirector_env: Mapping[str, str] | None = None) -> Iterator[World]:
    """DNS server, Pebble, nginx, its edge agent and the four services, all started and
    ready; all
    stopped on leaving (services still running are killed: call `terminate` first for
    the graceful path).

    `env` is what every service gets (broker, database, TRACKING_HOST, LINK_KEYS, ...);
    the per-service mappings override the defaults below. If anything fails inside, the
    tail of every log goes to stderr first.
    """
    directory.mkdir(parents=True, exist_ok=True)
    challenges = directory / "challenges"
    certbot_dir = directory / "certbot"
    upstream = f"127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        dns = stack.enter_context(DnsServer())
        dns.a(tracking_host, "127.0.0.1")
        # The blocklists too: the reputation watch asks zones the world controls.
        lists = ListZones(dns)
        nginx = Nginx(directory / "nginx", upstreams=[upstream])
        # Pebble validates HTTP-01 through nginx's plain-HTTP port, as the CA would on
        # port 80, resolving names through the same DNS server as the verifier.
        pebble = stack.enter_context(Pebble(directory / "pebble", http_port=nginx.http_port,
                                            dns_server=dns.address))
        stack.enter_context(nginx)
        root = directory / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        # A throwaway world's store key, unless the caller gave one.
        common = {"CERT_STORE_KEYS": f"world:{secrets.token_urlsafe(32)}", **env,
                  "ACME_CHALLENGE_DIR": str(challenges)}
        verifier = ServiceProcess("verifier", {
            **common, "DNS_NAMESERVERS": dns.address, "DNS_TIMEOUT_S": "2",
            "ACME_CAA_IDENTITY": PEBBLE_CAA_IDENTITY, "REPUTATION_LISTS": lists.setting,
            "REPUTATION_NAMESERVERS": dns.address, "REPUTATION_POLL_S": "1",
            **(verifier_env or {})}, directory)
        certifier = ServiceProcess("certifier", {
            **common, "ACME_DIRECTORY_URL": pebble.directory_url,
            "ACME_CA_BUNDLE": str(pebble.listener_ca), "ACME_EMAIL": "certs@platform.test",
            "CERTBOT_DIR": str(certbot_dir), **(certifier_env or {})}, directory)
        redirector = ServiceProcess("redirector", {
            **common, "REDIRECTOR_BIND": upstream, "TRUSTED_PROXIES": "127.0.0.1",
            "DOMAIN_REFRESH_S": "0.2", **(redirector_env or {})}, directory)
        logger = ServiceProcess("logger", common, directory)
        edge = ServiceProcess("edge", {**common, **nginx.edge_env("local")}, directory)
        services = [verifier, certifier, redirector, logger, edge]
        for process in services:  # all start at once; then wait for each
            stack.enter_context(process)
        world = World(directory=directory, dns=dns, lists=lists, pebble=pebble, nginx=nginx,
                      challenges=challenges, certbot_dir=certbot_dir, root=root,
                      verifier=verifier, certifier=certifier, redirector=redirector,
                      logger=logger, edge=edge, redirector_bind=upstream, services=services)
        try:
            redirector.wait_http(f"http://{upstream}/healthz", 30)
            verifier.wait_for_log("verifier.started", 30)
            certifier.wait_for_log("certifier.started", 30)
            logger.wait_for_log("logger.started", 30)
            edge.wait_for_log("edge.started", 30)
            yield world
        except KeyboardInterrupt:
            raise
        except BaseException:
            print(world.logs(), file=sys.stderr)
            raise
