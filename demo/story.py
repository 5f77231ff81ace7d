"""The walk-through: one customer's tracking domain, from its DNS record to a logged click.

The seed's story (every customer gets its own tracking domain, a CNAME to the platform
host, served over HTTPS with a certificate from certbot, and every click becomes a row),
told by doing it in the local world (demo/world.py). Each step acts as the party that
would (the customer's DNS, the platform publishing `domain.created`, an operator with
`trackctl`, a recipient's browser), waits for the services to do their part, and prints
one line: PASS or FAIL, its time, and what it proved, with what it saw indented below.
After a failed step the rest are skipped (each needs the one before), so the demo's exit
status is 0 only if every step passed.

The operator's steps run the real `trackctl` in a child process with the world's
settings in its environment, so the demo teaches the commands an operator types.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from cryptography import x509

from demo.net import BROWSER_USER_AGENT, first_redirect
from demo.processes import ROOT
from demo.scratch import Scratch, fetch
from demo.world import PEBBLE_CAA_IDENTITY, World, local_world
from shared.domain_status import DomainStatus
from shared.events import Event, decode_message
from trackctl.doctor import fix_for, split_error

TRACKING_HOST = "click.platform.test"
CUSTOMER = "customer-a"
NAME = "track.customer-a.test"
ZONE = "customer-a.test"
CAMPAIGN = "spring-sale"
RECIPIENT = "r-42"
DESTINATION = "https://shop.example/spring?utm_source=mail"
OTHER_CUSTOMER = "customer-b"
OTHER_NAME = "track.customer-b.test"
OTHER_TARGET = "click.other-esp.test"
OTHER_TARGET_ADDRESS = "192.0.2.80"  # TEST-NET-1: never a real host
# Production waits 48 h (VERIFY_DEADLINE_S) for a customer to fix their DNS; the demo
# cannot, so its verifier gives up after a few seconds (rechecking every second).
VERIFY_DEADLINE_S = 4.0
INDENT = " " * 6


@dataclass(frozen=True)
class Options:
    """Where the demo runs and what the customer's DNS says."""

    amqp_url: str
    admin_database_url: str
    directory: Path  # the world's files (logs, certificates, nginx prefix)
    cname_target: str = TRACKING_HOST  # where customer A's CNAME points
    out: TextIO = sys.stdout


class StepFailed(Exception):
    """A step did not see what it waited for: `summary` says what, `details` show why."""

    def __init__(self, summary: str, details: Sequence[str] = ()) -> None:
        super().__init__(summary)
        self.summary = summary
        self.details = list(details)


@dataclass
class Proof:
    """What a passed step proved (one line) and what it saw (indented lines below)."""

    proved: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One step of the story: a short title and the action that proves something."""

    title: str
    action: Callable[[], Proof]


class Story:
    """The steps, and what they share: the world, the run's names, the operator's settings.

    `run(cleanup)` tells the story; everything it starts or creates is registered on
    `cleanup` (an ExitStack the caller closes), and each clean-up says what it removed in
    `cleaned`, for the last line of the demo.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.scratch = Scratch.new(options.amqp_url, options.admin_database_url)
        self.link_keys = f"demo:{secrets.token_urlsafe(32)}"  # a fresh signing key per run
        self.cleaned: list[str] = []
        self.cleanup_failures: list[str] = []
        self.current = "the start"  # the step under way, for a report of an interruption
        self.heard: list[Event[Any]] = []  # what the services announced to the platform
        self._world: World | None = None
        self._cleanup: ExitStack | None = None
        self._added_at = 0.0
        self._url = ""
        self._clicked_at = 0.0

    # --- telling it --------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        """The story, in order."""
        return [
            Step("world up", self.world_up),
            Step("dns record", self.dns_record),
            Step("domain add", self.domain_add),
            Step("verified", self.verified),
            Step("certificate", self.certificate),
            Step("https", self.https),
            Step("link", self.link),
            Step("click", self.click),
            Step("click row", self.click_row),
            Step("doctor", self.doctor),
            Step("wrong cname", self.wrong_cname),
        ]

    def run(self, cleanup: ExitStack) -> bool:
        """Tell the story; True if every step passed."""
        self._cleanup = cleanup
        steps = self.steps()
        self.say(f"tracking-domains demo: {CUSTOMER}'s tracking domain {NAME}, from its DNS "
                 "record to a logged click")
        self.say(f"(all on 127.0.0.1: exchange {self.scratch.exchange}, database "
                 f"{self.scratch.database_name}, files in {self.options.directory}; "
                 "removed at the end)\n")
        failed_at = 0
        for number, step in enumerate(steps, 1):
            self.current = f"step {number} ({step.title})"
            label = f"{number:>2}/{len(steps)}  {step.title:<12}"
            if failed_at:
                self.say(f"SKIP  {label}          not run: step {failed_at} failed")
                continue
            started = time.monotonic()
            try:
                proof = step.action()
            except StepFailed as exc:
                status, text, details = "FAIL", exc.summary, exc.details
            except Exception as exc:  # a broken piece of the world: say what, go on to clean up
                lines = str(exc).splitlines() or [type(exc).__name__]
                status, text, details = "FAIL", f"{type(exc).__name__}: {lines[0]}", lines[1:20]
            else:
                status, text, details = "PASS", proof.proved, proof.details
            if status == "FAIL":
                failed_at = number
            self.say(f"{status}  {label}  {time.monotonic() - started:5.2f} s  {text}")
            for line in details:
                self.say(f"{INDENT}{line}".rstrip())
        return not failed_at

    def say(self, line: str = "") -> None:
        print(line, file=self.options.out, flush=True)

    # --- what the steps use ----------------------------------------------------------------

    @property
    def world(self) -> World:
        assert self._world is not None, "the world is not up"
        return self._world

    def operator_env(self) -> dict[str, str]:
        """The settings an operator's shell would hold for this deployment."""
        return {
            "AMQP_URL": self.scratch.amqp_url, "AMQP_EXCHANGE": self.scratch.exchange,
            "DATABASE_URL": self.scratch.database.url, "TRACKING_HOST": TRACKING_HOST,
            "LINK_KEYS": self.link_keys, "LOG_LEVEL": "WARNING",
            **({"DNS_NAMESERVERS": self.world.dns.address, "DNS_TIMEOUT_S": "2",
                "ACME_CAA_IDENTITY": PEBBLE_CAA_IDENTITY} if self._world else {}),
        }

    def trackctl(self, *args: str) -> list[str]:
        """Run `trackctl ARGS` as an operator would: the real CLI, in a child process.

        Returns the lines to show: the command, then its output. A non-zero exit status
        fails the step, showing that output.
        """
        completed = subprocess.run(
            [sys.executable, "-m", "trackctl.main", *args], cwd=ROOT,
            env={**os.environ, **self.operator_env()}, capture_output=True, text=True,
            timeout=90)
        shown = [f"$ trackctl {shlex.join(args)}",
                 *(f"  {line}".rstrip()
                   for line in (completed.stdout + completed.stderr).splitlines())]
        if completed.returncode != 0:
            raise StepFailed(f"`trackctl {args[0]}` exited with status {completed.returncode}",
                             shown)
        return shown

    def rows(self, query: str, *args: object) -> list[dict[str, Any]]:
        """Rows of the run's database, as the services wrote them."""
        return [dict(row) for row in asyncio.run(fetch(self.scratch.database, query, *args))]

    def domain_row(self, name: str) -> dict[str, Any] | None:
        found = self.rows("SELECT * FROM tracking_domains WHERE name = $1", name)
        return found[0] if found else None

    def wait_domain(self, name: str, done: Callable[[dict[str, Any]], bool], *,
                    timeout_s: float, what: str,
                    hopeless: Callable[[dict[str, Any]], bool] = lambda _row: False,
                    ) -> dict[str, Any]:
        """Poll `name`'s row until `done` (returned), `hopeless` or the timeout (failed,
        saying the row's status and last error, with the fix for the verifier's reason)."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.domain_row(name)
            if row is not None and done(row):
                return row
            if (row is not None and hopeless(row)) or time.monotonic() > deadline:
                raise StepFailed(f"{name} was not {what}: " + (
                    f"it is {row['status']}" if row else "the verifier has not recorded it"),
                    self.why(row))
            time.sleep(0.05)

    def why(self, row: Mapping[str, Any] | None) -> list[str]:
        """The row's last error and, for a reason the verifier gives, its documented fix."""
        if row is None or not row["last_error"]:
            return ["see the service logs (run with --keep to keep them)"]
        code, _ = split_error(row["last_error"])
        lines = [f"last error: {row['last_error']}"]
        fix = fix_for(code, row["name"], TRACKING_HOST, PEBBLE_CAA_IDENTITY)
        if fix:
            lines.append(f"fix: {fix}")
        return lines

    def announced(self, name: str, event_type: str, timeout_s: float = 10.0) -> Event[Any]:
        """The `event_type` event about `name` that the services published to the platform
        (the demo plays the platform: it takes what `<exchange>.platform` holds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for body, content_type in self.scratch.take_platform_messages():
                self.heard.extend(event for event in decode_message(body, content_type)
                                  if isinstance(event, Event))
            for event in self.heard:
                if event.type == event_type and event.data.domain == name:
                    return event
            if time.monotonic() > deadline:
                raise StepFailed(f"the platform never heard {event_type} about {name}")
            time.sleep(0.1)

    # --- the steps -----------------------------------------------------------------------------

    def world_up(self) -> Proof:
        cleanup = self._cleanup
        assert cleanup is not None
        cleanup.callback(self._drop_database)  # IF EXISTS: safe even if creating fails
        self.scratch.create_database()
        migrated = self.trackctl("db", "upgrade")
        cleanup.callback(self._delete_namespace)  # the services declare it as they start
        self._world = cleanup.enter_context(self._started_world())
        world = self.world
        return Proof(
            "a DNS server, Pebble (the ACME CA), nginx with its edge agent and the four "
            "services run on 127.0.0.1, each answering", [
                f"DNS server  {world.dns.address}: the only resolver of the verifier, Pebble "
                "and trackctl doctor",
                f"Pebble      {world.pebble.directory_url} (a new root CA every start)",
                f"nginx       https://{world.nginx.https_listen} for clicks, "
                f"http://{world.nginx.http_listen} for HTTP-01 challenges",
                f"services    redirector http://{world.redirector_bind}, logger, verifier, "
                "certifier, edge agent",
                *migrated])

    @contextmanager
    def _started_world(self) -> Iterator[World]:
        env = {**self.operator_env(), "LOG_LEVEL": "INFO",
               "SPOOL_DIR": str(self.options.directory / "spool"),
               # Metrics ports are fixed by default and may be taken by `scripts/run`.
               "METRICS_BIND": "off"}
        started = False  # a world that fails to start stops its pieces on the spot
        try:
            with local_world(self.options.directory / "world", env=env,
                             tracking_host=TRACKING_HOST,
                             verifier_env={"VERIFY_DEADLINE_S": str(VERIFY_DEADLINE_S)},
                             redirector_env={"DRAIN_TIMEOUT_S": "5"}) as world:
                started = True
                try:
                    yield world
                finally:
                    self._stop_services(world)
        finally:
            if started:
                self.cleaned.append("stopped nginx, Pebble and the DNS server")

    def dns_record(self) -> Proof:
        dns = self.world.dns
        target = self.options.cname_target
        dns.cname(NAME, target)
        dns.caa(ZONE, f'issue "{PEBBLE_CAA_IDENTITY}"')
        answer = dns.dig(NAME, "A")
        caa = dns.dig(ZONE, "CAA")
        if not any(" CNAME " in line for line in answer):
            raise StepFailed(f"the DNS server does not answer the CNAME of {NAME}", answer)
        where = f"{target} ({', '.join(_addresses(answer)) or 'no address'})"
        return Proof(
            f"the customer's CNAME is live: resolvers follow {NAME} to {where}, and CAA "
            f"at {ZONE} allows {PEBBLE_CAA_IDENTITY}", [
                f"$ dig @127.0.0.1 -p {dns.port} {NAME} A", *(f"  {a}" for a in answer),
                f"$ dig @127.0.0.1 -p {dns.port} {ZONE} CAA", *(f"  {c}" for c in caa)])

    def domain_add(self) -> Proof:
        self._added_at = time.monotonic()
        shown = self.trackctl("domain", "add", NAME, "--customer", CUSTOMER)
        return Proof("domain.created is on the broker, published and confirmed exactly as "
                     "the upstream platform publishes it", shown)

    def verified(self) -> Proof:
        row = self.wait_domain(NAME, lambda r: r["verified"], what="verified",
                               timeout_s=VERIFY_DEADLINE_S + 15,
                               hopeless=lambda r: r["status"] == DomainStatus.REJECTED)
        verified_after = (row["verified_at"] - row["created_at"]).total_seconds()
        event = self.announced(NAME, "domain.verified")
        return Proof(
            f"the verifier followed the CNAME chain to the platform host and found CAA "
            f"allowing the CA: verified {verified_after:.2f} s after it first saw the domain", [
                f"tracking_domains: status {row['status']}, dns chain {row['dns_chain']} "
                f"(matched by {row['matched_by']})",
                f"the platform heard domain.verified (chain {' -> '.join(event.data.chain)}); "
                "so did the certifier"])

    def certificate(self) -> Proof:
        self.wait_domain(NAME, lambda r: r["status"] == DomainStatus.ACTIVE, what="active",
                         timeout_s=45, hopeless=lambda r: not DomainStatus(r["status"])
                         .can_become(DomainStatus.ACTIVE))
        shown = self.trackctl("domain", "show", NAME)
        pem = self.world.certbot_dir / "config" / "live" / NAME / "cert.pem"
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        issued = self.announced(NAME, "certificate.issued")
        installed = self.announced(NAME, "certificate.installed")
        validations = sum(1 for line in self.world.pebble_log().splitlines()
                          if "Attempting to validate w/ HTTP" in line and f"//{NAME}:" in line)
        return Proof(
            f"the certifier got a certificate from Pebble with certbot (HTTP-01, answered "
            f"through nginx and the redirector), stored it and marked the domain active; the "
            f"edge agent installed it in nginx {time.monotonic() - self._added_at:.1f} s after "
            f"`domain add`", [
                f"issuer: {cert.issuer.rfc4514_string()}",
                f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}, serial "
                f"{cert.serial_number:x}; Pebble fetched the challenge answer "
                f"{validations} time(s) over http://{NAME}:{self.world.nginx.http_port}/",
                f"the platform heard certificate.issued (serial {issued.data.serial}), then "
                f"certificate.installed from edge {installed.data.edge_id} (serial "
                f"{installed.data.serial})",
                *shown])

    def https(self) -> Proof:
        port = self.world.nginx.https_port
        peer, version = _handshake(port, NAME, self.world.trusted_context())
        try:
            _handshake(port, NAME, ssl.create_default_context())
            untrusted = "the system's CAs also accept it (unexpected for a test CA)"
        except ssl.SSLCertVerificationError as exc:
            untrusted = f"with the system's CAs only it fails, as it should: {exc.verify_message}"
        names = ", ".join(value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS")
        issuer = ", ".join(f"{k}={v}" for rdn in peer["issuer"] for k, v in rdn)
        return Proof(
            f"nginx presents {NAME}'s certificate, and the TLS handshake verifies it to "
            "this run's Pebble root, name included, as a browser trusting that root would", [
                f"TLS {version} to 127.0.0.1:{port} with SNI {NAME}: certificate for {names}, "
                f"issued by {issuer}, valid until {peer['notAfter']}",
                untrusted])

    def link(self) -> Proof:
        port = str(self.world.nginx.https_port)
        shown = self.trackctl("link", "--customer", CUSTOMER, "--campaign", CAMPAIGN,
                              "--recipient", RECIPIENT, "--port", port, DESTINATION)
        self._url = shown[-1].strip()
        host = urlsplit(self._url).hostname
        if host != NAME:
            raise StepFailed(f"the link is on {host}, not on the customer's domain {NAME}",
                             shown)
        return Proof(f"trackctl minted a signed link (HMAC-SHA256, LINK_KEYS) on {NAME}, the "
                     "customer's active domain, as the platform does for every mail", shown)

    def click(self) -> Proof:
        parts = urlsplit(self._url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        port = self.world.nginx.https_port
        status, headers, waited = first_redirect(port, NAME, path,
                                                 self.world.trusted_context(), 10)
        self._clicked_at = time.monotonic()
        curl = (f"curl -si --cacert {self.world.root} --resolve {NAME}:{port}:127.0.0.1 "
                f"-A {shlex.quote(BROWSER_USER_AGENT)} '{self._url}'")
        if status != 302 or headers.get("Location") != DESTINATION:
            raise StepFailed(f"the click got {status or 'no answer'}, not a 302 to the "
                             "destination", [f"as: {curl}", f"headers: {headers}"])
        return Proof(
            "a browser's click went through nginx (TLS) to the redirector, which checked the "
            "signature and that the domain serves this customer, spooled the click and "
            "answered 302", [
                f"GET {self._url}", f"  -> 302 Location: {headers['Location']}"
                + (f" (after {waited:.2f} s of waiting for the redirector to load the domain)"
                   if waited > 0.05 else ""),
                f"the same by hand: {curl}"])

    def click_row(self) -> Proof:
        query = ("SELECT * FROM tracking_logs WHERE customer_id = $1 AND campaign_id = $2 "
                 "AND recipient_id = $3")
        deadline = time.monotonic() + 15
        while not (clicks := self.rows(query, CUSTOMER, CAMPAIGN, RECIPIENT)):
            if time.monotonic() > deadline:
                raise StepFailed("the click never reached tracking_logs")
            time.sleep(0.05)
        after = time.monotonic() - self._clicked_at
        if len(clicks) != 1:
            raise StepFailed(f"{len(clicks)} rows for one click")
        row = clicks[0]
        shown = self.trackctl("clicks", "--campaign", CAMPAIGN, "--customer", CUSTOMER)
        return Proof(
            f"the logger stored the click as exactly one tracking_logs row, counted as a "
            f"person's (bot = {str(row['bot']).lower()}), {after:.2f} s after the 302", [
                f"tracking_logs: clicked_at {row['clicked_at'].isoformat(timespec='seconds')}, "
                f"domain {row['domain']}, customer {row['customer_id']}, campaign "
                f"{row['campaign_id']}, recipient {row['recipient_id']}, ip {row['ip']}, "
                f"url {row['url']}, event id {row['event_id']}",
                *shown])

    def doctor(self) -> Proof:
        shown = self.trackctl("doctor", NAME, "--https-port", str(self.world.nginx.https_port),
                              "--ca-bundle", str(self.world.root))
        return Proof("`trackctl doctor` runs the seed's troubleshooting list (DNS, TLS, the "
                     "database row, a real redirect and its click) and every check passes",
                     shown)

    def wrong_cname(self) -> Proof:
        self.world.dns.cname(OTHER_NAME, OTHER_TARGET)
        self.world.dns.a(OTHER_TARGET, OTHER_TARGET_ADDRESS)
        started = time.monotonic()
        shown = self.trackctl("domain", "add", OTHER_NAME, "--customer", OTHER_CUSTOMER)
        pending = self.wait_domain(
            OTHER_NAME, lambda r: (r["last_error"] or "").startswith("wrong_target: "),
            what="pending with a wrong_target reason", timeout_s=10)
        pending_after = time.monotonic() - started
        rejected = self.wait_domain(OTHER_NAME, lambda r: r["status"] == DomainStatus.REJECTED,
                                    what="rejected", timeout_s=VERIFY_DEADLINE_S + 15)
        told = self.announced(OTHER_NAME, "domain.rejected")
        orders = self.rows("SELECT count(*) AS n FROM acme_events WHERE name = $1", OTHER_NAME)
        if orders[0]["n"]:
            raise StepFailed(f"{orders[0]['n']} ACME requests for a domain never verified")
        return Proof(
            f"{OTHER_CUSTOMER}'s CNAME points at {OTHER_TARGET}: the domain stays pending "
            f"with a reason naming the wrong target, is rejected at its deadline, and no "
            "certificate is ever requested for it", [
                f"$ dig @127.0.0.1 -p {self.world.dns.port} {OTHER_NAME} A",
                *(f"  {line}" for line in self.world.dns.dig(OTHER_NAME, "A")),
                *shown,
                f"pending after {pending_after:.2f} s: {pending['last_error']}",
                f"rejected after {time.monotonic() - started:.2f} s (the demo's verifier "
                f"deadline is {VERIFY_DEADLINE_S:g} s; production's VERIFY_DEADLINE_S is 48 h)",
                f"the platform heard domain.rejected ({told.data.code}), to tell the customer: "
                f"{told.data.reason}",
                *self.why(rejected)[1:]])

    # --- clean-up ------------------------------------------------------------------------------

    def _stop_services(self, world: World) -> None:
        try:
            statuses = world.terminate(timeout_s=30)
        except subprocess.TimeoutExpired:
            self.cleanup_failures.append("a service did not stop within 30 s (killed)")
            return
        odd = [f"{name} {status}" for name, status in statuses.items() if status != 0]
        self.cleaned.append(f"stopped the {len(statuses)} services (exit status "
                            + (", ".join(odd) + ", the others 0)" if odd else "0)"))

    def _delete_namespace(self) -> None:
        try:
            queues = self.scratch.delete_namespace()
        except Exception as exc:
            self.cleanup_failures.append(f"could not delete the exchange "
                                         f"{self.scratch.exchange}: {exc!r}")
        else:
            self.cleaned.append(f"deleted exchange {self.scratch.exchange} and its {queues} "
                                "queues")

    def _drop_database(self) -> None:
        try:
            self.scratch.drop_database()
        except Exception as exc:
            self.cleanup_failures.append(f"could not drop database "
                                         f"{self.scratch.database_name}: {exc!r}")
        else:
            self.cleaned.append(f"dropped database {self.scratch.database_name}")


def _addresses(answer: Sequence[str]) -> list[str]:
    """The A-record addresses in `dig`-style answer lines."""
    return [line.split()[-1] for line in answer if line.split()[3:4] == ["A"]]


def _handshake(port: int, name: str, context: ssl.SSLContext) -> tuple[dict[str, Any], str]:
    """A TLS handshake with SNI `name` to 127.0.0.1:`port`: (peer certificate, TLS version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return dict(tls.getpeercert() or {}), tls.version() or "?"
