"""The whole domain lifecycle on loopback, for end-to-end tests and bench/lifecycle.py.

One DNS server the test controls (tests/support/dns_server.py) answers everybody: the
verifier (`DNS_NAMESERVERS`) and Pebble (`-dnsserver`), so the CA resolves a customer's
name through the same CNAME the verifier judged. The platform host has A 127.0.0.1,
Pebble validates HTTP-01 on nginx's plain-HTTP port, nginx proxies the challenge path
to the redirector, which reads the answer the certifier's hook wrote in the shared
`ACME_CHALLENGE_DIR`. The four services run as real processes:

    with lifecycle_stack(directory, env=common_env, tracking_host=HOST) as stack:
        stack.dns.cname("track.customer-a.test", HOST)
        ... publish domain.created, then https_get(stack.nginx.https_port, name, path,
        stack.trusted_context()) ...

Pebble 2.4 (Debian's) checks no CAA records at all; newer Pebble releases check them
against `pebble.letsencrypt.org`, the identity the verifier is given here. That Pebble
would issue in spite of a CAA set forbidding it is exactly why the verifier must catch
it before any order is placed.
"""

from __future__ import annotations

import http.client
import shlex
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.dns_server import DnsServer
from tests.support.nginx import Nginx
from tests.support.pebble import Pebble
from tests.support.processes import ServiceProcess
from tests.support.proxy import free_port

PEBBLE_CAA_IDENTITY = "pebble.letsencrypt.org"


@dataclass
class Lifecycle:
    directory: Path
    dns: DnsServer
    pebble: Pebble
    nginx: Nginx
    challenges: Path
    certbot_dir: Path
    root: Path  # Pebble's root of this run: what a browser would trust
    verifier: ServiceProcess
    certifier: ServiceProcess
    redirector: ServiceProcess
    logger: ServiceProcess
    services: list[ServiceProcess] = field(default_factory=list)

    def trusted_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root))

    def logs(self, lines: int = 60) -> str:
        parts = [f"----- {p.name} -----\n" + "\n".join(p.log_text().splitlines()[-lines:])
                 for p in self.services]
        parts.append(f"----- nginx -----\n{self.nginx.log_text()[-2000:]}")
        parts.append(self.pebble.logs())
        return "\n".join(parts)

    def pebble_log(self) -> str:
        return (self.pebble.directory / "pebble.log").read_text(errors="replace")

    def terminate(self) -> dict[str, int]:
        """SIGTERM every service (the graceful path); their exit statuses by name."""
        return {process.name: process.terminate() for process in self.services}


@contextmanager
def lifecycle_stack(directory: Path, *, env: Mapping[str, str], tracking_host: str,
                    verifier_env: Mapping[str, str] | None = None,
                    certifier_env: Mapping[str, str] | None = None,
                    redirector_env: Mapping[str, str] | None = None) -> Iterator[Lifecycle]:
    """DNS server, Pebble, nginx and the four services, all started and ready.

    `env` is what every service gets (broker, database, TRACKING_HOST, LINK_KEYS, ...);
    the per-service mappings override the defaults below.
    """
    directory.mkdir(parents=True, exist_ok=True)
    challenges = directory / "challenges"
    certbot_dir = directory / "certbot"
    redirector_port = free_port()
    upstream = f"127.0.0.1:{redirector_port}"
    with ExitStack() as stack:
        dns = stack.enter_context(DnsServer())
        dns.a(tracking_host, "127.0.0.1")
        nginx = Nginx(directory / "nginx", upstreams=[upstream])
        # Pebble validates HTTP-01 through nginx's plain-HTTP port, as the CA would on
        # port 80, resolving names through the same DNS server as the verifier.
        pebble = stack.enter_context(Pebble(directory / "pebble", http_port=nginx.http_port,
                                            dns_server=dns.address))
        stack.enter_context(nginx)
        root = directory / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        common = {**env, "ACME_CHALLENGE_DIR": str(challenges)}
        verifier = ServiceProcess("verifier", {
            **common, "DNS_NAMESERVERS": dns.address, "DNS_TIMEOUT_S": "2",
            "ACME_CAA_IDENTITY": PEBBLE_CAA_IDENTITY, **(verifier_env or {})}, directory)
        certifier = ServiceProcess("certifier", {
            **common, "ACME_DIRECTORY_URL": pebble.directory_url,
            "ACME_CA_BUNDLE": str(pebble.listener_ca), "ACME_EMAIL": "certs@platform.test",
            "CERTBOT_DIR": str(certbot_dir), "NGINX_CONF_PATH": str(nginx.include),
            "NGINX_RELOAD_COMMAND": shlex.join(nginx.reload_command),
            "NGINX_HTTPS_LISTEN": nginx.https_listen, "NGINX_HTTP_LISTEN": nginx.http_listen,
            "NGINX_UPSTREAMS": upstream, **(certifier_env or {})}, directory)
        redirector = ServiceProcess("redirector", {
            **common, "REDIRECTOR_BIND": upstream, "TRUSTED_PROXIES": "127.0.0.1",
            "DOMAIN_REFRESH_S": "0.2", **(redirector_env or {})}, directory)
        logger = ServiceProcess("logger", common, directory)
        services = [verifier, certifier, redirector, logger]
        for process in services:  # all four start at once; then wait for each
            stack.enter_context(process)
        lifecycle = Lifecycle(directory=directory, dns=dns, pebble=pebble, nginx=nginx,
                              challenges=challenges, certbot_dir=certbot_dir, root=root,
                              verifier=verifier, certifier=certifier, redirector=redirector,
                              logger=logger, services=services)
        try:
            redirector.wait_http(f"http://{upstream}/healthz", 30)
            verifier.wait_for_log("verifier.started", 30)
            certifier.wait_for_log("certifier.started", 30)
            logger.wait_for_log("logger.started", 30)
            yield lifecycle
        except BaseException:
            print(lifecycle.logs())
            raise


def https_get(port: int, host: str, path: str, context: ssl.SSLContext | None = None,
              timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """GET `path` from 127.0.0.1:`port` as `host` (SNI and Host), like curl --resolve."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        connection.sock = raw
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout_s,
                                                 context=context)
        try:
            connection.sock = context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
    try:
        connection.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (e2e)"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def first_redirect(port: int, host: str, path: str, context: ssl.SSLContext,
                   timeout_s: float, interval_s: float = 0.02
                   ) -> tuple[int, dict[str, str], float]:
    """Poll until HTTPS answers 302 (before that: handshake refused, or 404 while the
    redirector has not loaded the domain yet); (status, headers, seconds waited)."""
    started = time.monotonic()
    status, headers = 0, {}
    while True:
        try:
            status, headers, _ = https_get(port, host, path, context, timeout_s=2)
        except (OSError, ssl.SSLError):
            status, headers = 0, {}
        if status == 302 or time.monotonic() - started > timeout_s:
            return status, headers, time.monotonic() - started
        time.sleep(interval_s)


def count_lines(text: str, *needles: str) -> int:
    """Log lines holding every needle (service logs are JSON, one event a line)."""
    return sum(1 for line in text.splitlines() if all(n in line for n in needles))


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.05) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)
    return time.monotonic() - started
