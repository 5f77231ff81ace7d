"""`trackctl doctor NAME`: "why doesn't this tracking domain work?", answered check by check.

The seed article's troubleshooting list, automated, in the order a click travels:

1. dns: does NAME lead to TRACKING_HOST (or one of TRACKING_HOST_ALIASES, named when it
   is the one reached), through which CNAME chain, from which resolver? The verifier's
   own code answers (shared/verification: DnsResolver + DomainChecker + judge), with its
   settings read by its loader (DNS_NAMESERVERS, DNS_TIMEOUT_S, ACME_CAA_IDENTITY), so
   doctor and verifier cannot disagree.
2. tls: does HTTPS answer on NAME with a certificate valid for NAME, and until when?
   It connects to the address DNS gave (or `--connect`), port `--https-port`, with SNI
   NAME, trusting the system CAs or `--ca-bundle`.
3. database: is the `tracking_domains` row verified and active?
4. redirect: does a freshly minted link on NAME (LINK_KEYS, campaign `trackctl-doctor`,
   recipient `doctor-<uuid>`) answer 302 to its destination, through the same address
   and port (or straight from a redirector with `--redirector http://HOST:PORT`)?
5. click: does that click reach `tracking_logs` within `--click-timeout` seconds?
6. isolation: is NAME's registered domain (Public Suffix List) its customer's alone? The
   verifier stores a warning when another customer's tracking domain or the platform host
   shares it: SURBL and URIBL list registered domains, so they share one fate.
7. blocklist: is NAME on a DNS blocklist (DBL, SURBL, URIBL), as the verifier's
   reputation watch last found (`domain_reputation`)? Listed fails, with the list's
   categories and its removal link.

Each check passes, fails (with the fix, worded as in docs/troubleshooting.md, whose
section names are the codes), warns, or is skipped with the reason (a check that
cannot run because an earlier one failed). Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy import select

from shared.db.engine import create_engine
from shared.db.models import TrackingLog
from shared.domain_status import DomainStatus
from shared.domains import registered_domain
from shared.errors import SettingsError
from shared.links import LinkError, LinkSigner
from shared.settings import LINK_KEYS, DatabaseSettings
from shared.verification.checks import DomainChecker
from shared.verification.dns import DnsResolver
from shared.verification.judge import (
    CAA_FORBIDS,
    DNS_ERROR,
    DNS_SERVFAIL,
    DNS_TIMEOUT,
    DnsTrouble,
    Rejection,
    Verified,
    arrow,
    judge,
    listing,
    validate_name,
)
from shared.verification.settings import EXPIRY_WARNING_DAYS, load_dns_judgement
from trackctl.clicks import DOCTOR_CAMPAIGN
from trackctl.connections import database_problem
from trackctl.domain_commands import fetch_domain, is_tombstone
from trackctl.output import (
    FAILED,
    OK,
    USAGE,
    CliError,
    emit_json,
    fmt_relative,
    jsonable,
    utc_now,
)
from trackctl.reputation import describe, fetch_reputation
from trackctl.settings import reader

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skipped"
LABELS = {PASS: "PASS", FAIL: "FAIL", WARN: "WARN", SKIP: "SKIP"}
DOCS = "docs/troubleshooting.md"
USER_AGENT = "trackctl-doctor/1 (tracking-domains health check bot)"
DEFAULT_DESTINATION = "https://example.com/?trackctl-doctor"
MAX_HEAD = 64 * 1024


@dataclass
class Check:
    name: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None
    code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "details": self.details, "fix": self.fix, "code": self.code, **self.data}


def skipped(name: str, why: str) -> Check:
    return Check(name, SKIP, f"skipped: {why}")


# --- fixes, worded as docs/troubleshooting.md --------------------------------------------------

def fix_for(code: str | None, name: str, host: str, ca_identity: str) -> str:
    """The fix for a verifier reason code (the codes are section names in the docs)."""
    fixes = {
        "nxdomain": f"create the record at the customer's DNS provider: {name}. CNAME {host}. "
                    "New records can take minutes to appear.",
        "no_cname": f"replace the records at {name} with `{name}. CNAME {host}.` (a CNAME "
                    "cannot coexist with other records); with CNAME flattening at an apex, "
                    f"flatten to {host} so both A and AAAA are copied.",
        "wrong_target": f"change the CNAME target of {name} to {host}. Chains through a CDN "
                        f"are fine as long as they reach {host}.",
        "cname_loop": f"break the loop: {name} should CNAME to {host}.",
        "chain_too_long": f"point {name} at {host} directly, or with fewer hops.",
        "caa_forbids": f'add `0 issue "{ca_identity}"` to the CAA records the reason names '
                       "(keeping the customer's other CAs), or remove the CAA records there.",
        "dns_servfail": f"`dig +dnssec {name}` and `dig @<customer's NS> {name}` show which: the "
                        "customer fixes their DNS hosting or DNSSEC. If every domain fails, "
                        "check DNS_NAMESERVERS.",
        "dns_timeout": "the customer's name servers (or the resolvers in DNS_NAMESERVERS) do "
                       "not answer within DNS_TIMEOUT_S; if many domains time out, look at "
                       "the resolvers and the network first.",
        "dns_error": "the reason carries dnspython's message; look at the name's DNS with dig.",
        "invalid_name": "add the domain again with the exact host name, e.g. track.customer.com.",
        "platform_host": "use a name under the customer's own domain, with a CNAME to "
                         f"{host}.",
        "owned_by_other_customer": "if the name is really this customer's, the other account "
                                   "must delete it first; then add it again.",
    }
    text = fixes.get(code or "")
    if text is None:
        return f"see {DOCS} and docs/certificates.md for `{code}`." if code else ""
    return f"{text} ({DOCS}: `{code}`)"


def split_error(last_error: str | None) -> tuple[str | None, str]:
    """`last_error` is `<code>: <reason>` (verifier and certifier alike)."""
    code, sep, reason = (last_error or "").partition(": ")
    if not sep or " " in code or not code:
        return None, last_error or ""
    return code, reason


# --- dns -------------------------------------------------------------------------------------

@dataclass
class DnsFacts:
    check: Check
    leads_here: bool
    addresses: list[str]


async def check_dns(name: str, *, host: str, ca_identity: str,
                    nameservers: tuple[tuple[str, int], ...], timeout_s: float,
                    aliases: tuple[str, ...] = ()) -> DnsFacts:
    resolver = DnsResolver(nameservers, timeout_s=timeout_s)
    where = (", ".join(f"{h}:{p}" for h, p in nameservers) + " (DNS_NAMESERVERS)"
             if nameservers else f"{resolver.description} (system resolvers)")
    checker = DomainChecker(resolver, target=host, aliases=aliases, ca_identity=ca_identity)
    observation = await checker.observe(name)
    verdict = judge(observation, target=host, ca_identity=ca_identity, aliases=aliases)
    # Where HTTPS is tried: only asked when the name leads here (a CNAME chain reaching
    # the host was not resolved to addresses by `observe`).
    leads = isinstance(verdict, Verified) or verdict.code == CAA_FORBIDS
    addresses: list[str] = sorted(observation.addresses, key=_ipv4_first)
    address_error = None
    if leads:
        try:
            addresses = sorted(await resolver.addresses(name), key=_ipv4_first)
        except DnsTrouble as trouble:
            address_error = trouble.reason
    data: dict[str, Any] = {"resolver": where, "chain": list(observation.chain),
                            "addresses": addresses}
    details = [f"resolver: {where}"]
    if leads or addresses:
        details.append(f"addresses of {observation.chain[-1] if not leads else name}: "
                       f"{', '.join(addresses) or address_error or 'none'}")
    if isinstance(verdict, Verified):
        data["matched_by"] = verdict.matched_by
        data["matched_host"] = verdict.alias or host
        summary = f"{verdict.description} (matched by {verdict.matched_by})"
        if verdict.alias is not None:
            summary = (f"{arrow(verdict.chain)} (matched by {verdict.matched_by}, through "
                       f"{verdict.alias}, an alias of {host} in TRACKING_HOST_ALIASES)")
            details.append(f"{verdict.alias} is accepted while it is in TRACKING_HOST_ALIASES; "
                           f"after that, {name} must reach {host} (directly, or because "
                           f"{verdict.alias} is a CNAME to it)")
        check = Check("dns", PASS, summary, [*details, f"CAA: {verdict.caa_note}"], data=data)
        return DnsFacts(check, True, addresses)
    if len(observation.chain) > 1:
        details.insert(1, f"chain: {arrow(observation.chain)}")
    if observation.target_addresses:
        details.append(f"addresses of {host}: {listing(observation.target_addresses)}")
    check = Check("dns", FAIL, f"{verdict.code}: {verdict.reason}", details,
                  fix_for(verdict.code, name, host, ca_identity), verdict.code, data)
    return DnsFacts(check, leads, addresses)


def _ipv4_first(address: str) -> tuple[int, str]:
    return (1 if ":" in address else 0, address)


# --- tls -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertFacts:
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    names: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial,
                "not_before": self.not_before, "not_after": self.not_after,
                "names": list(self.names)}


def cert_facts(der: bytes) -> CertFacts:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertFacts(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                     serial=format(cert.serial_number, "x"), not_before=cert.not_valid_before_utc,
                     not_after=cert.not_valid_after_utc, names=names)


@dataclass(frozen=True)
class TlsAnswer:
    problem: str | None  # None: a verified handshake; else refused/timeout/unreachable/...
    message: str
    certificate: CertFacts | None = None


def client_context(ca_bundle: Path | None, *, verify: bool = True) -> ssl.SSLContext:
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


async def _handshake(address: str, port: int, name: str, context: ssl.SSLContext,
                     timeout_s: float) -> bytes | None:
    async with asyncio.timeout(timeout_s):
        _reader, writer = await asyncio.open_connection(
            address, port, ssl=context, server_hostname=name, ssl_handshake_timeout=timeout_s)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(1):
                await writer.wait_closed()


async def tls_probe(address: str, port: int, name: str, *, ca_bundle: Path | None,
                    timeout_s: float) -> TlsAnswer:
    where = f"{_hostport(address, port)}"
    try:
        der = await _handshake(address, port, name, client_context(ca_bundle), timeout_s)
    except ssl.SSLCertVerificationError as exc:
        facts = None
        try:
            der = await _handshake(address, port, name, client_context(None, verify=False),
                                   timeout_s)
            facts = cert_facts(der) if der else None
        except (OSError, TimeoutError, ssl.SSLError, ValueError):
            pass
        return TlsAnswer("untrusted", f"the certificate {where} presents for {name} does not "
                                      f"verify: {exc.verify_message or exc}", facts)
    except ssl.SSLError as exc:
        text = str(exc)
        # An edge agent's nginx with no file for the name fails the handshake with an
        # internal-error alert (and logs `cannot load certificate`); `ssl_reject_handshake`
        # answers unrecognized_name.
        if any(sign in text.upper() for sign in (
                "UNRECOGNIZED_NAME", "UNRECOGNIZED NAME", "ALERT_INTERNAL_ERROR")):
            return TlsAnswer("rejected", f"{where} refused the TLS handshake for {name}: it "
                                         "holds no certificate for that name")
        return TlsAnswer("tls-error", f"TLS with {where} failed: {text}")
    except ConnectionRefusedError:
        return TlsAnswer("refused", f"nothing listens on {where} (connection refused)")
    except TimeoutError:
        return TlsAnswer("timeout", f"no TLS answer from {where} within {timeout_s:g} s")
    except OSError as exc:
        return TlsAnswer("unreachable", f"cannot connect to {where}: "
                                        f"{exc.strerror or exc}")
    return TlsAnswer(None, "verified", cert_facts(der) if der else None)


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def tls_check(answer: TlsAnswer, *, name: str, where: str, row: Mapping[str, Any] | None,
              ca_bundle: Path | None, now: datetime) -> Check:
    """The verdict on one probe (pure)."""
    facts = answer.certificate
    data: dict[str, Any] = {"connect": where,
                            "certificate": facts.document() if facts else None}
    details = [f"TLS to {where} with SNI {name}"
               + (f", trusting {ca_bundle}" if ca_bundle else "")]
    if facts is not None:
        details.append(f"certificate: serial {facts.serial}, issuer {facts.issuer}, names "
                       f"{', '.join(facts.names) or '-'}, valid "
                       f"{facts.not_before:%Y-%m-%d} to {facts.not_after:%Y-%m-%d}")
    if answer.problem is None and facts is not None:
        left = facts.not_after - now
        summary = (f"HTTPS answers with a valid certificate for {name}, expiring "
                   f"{fmt_relative(facts.not_after, now)}")
        recorded = row.get("certificate_serial") if row else None
        if recorded and recorded != facts.serial:
            return Check("tls", WARN, summary, [*details, (
                f"the database records serial {recorded}, the edge serves {facts.serial}")],
                "an edge whose agent has not installed the renewal yet: `trackctl domain show "
                f"{name}` lists the serial each edge serves; check that edge's agent "
                "(its log, tracking_edge_certificates_behind; docs/certificates.md).",
                "serial_mismatch", data)
        if left.days < EXPIRY_WARNING_DAYS:
            return Check("tls", WARN, summary, details, (
                "renewal starts a third of the lifetime before expiry, so it is failing: see "
                f"`trackctl domain show {name}` (last_error) and `trackctl dlq list "
                "certifier` (docs/certificates.md: Renewal)."), "expiring_soon", data)
        return Check("tls", PASS, summary, details, data=data)
    fixes = {
        "refused": "start nginx on the edge (or fix NGINX_HTTPS_LISTEN); every edge DNS "
                   "sends clients to must serve HTTPS on port 443.",
        "timeout": "a firewall or a dead edge: check that port 443 is open on the edge DNS "
                   "points at.",
        "unreachable": "check the address (DNS or --connect) and the network to the edge.",
        "rejected": "this edge has no certificate for it yet: the certifier issues one "
                    "when the row is verified and the edge agent installs it from the store "
                    "(is it running on this edge?); see the database check, `trackctl domain show "
                    f"{name}` (last_error; certificate.failed reasons in "
                    "docs/certificates.md: Failures), then `trackctl domain recheck "
                    f"{name}`.",
        "untrusted": "an expired, self-signed or wrong certificate: check that the certifier "
                     "renewed it and this edge's agent installed it (docs/certificates.md). "
                     "For a private CA (staging, Pebble) pass --ca-bundle.",
        "tls-error": "look at nginx's error log on the edge.",
    }
    return Check("tls", FAIL, answer.message, details, fixes.get(answer.problem or ""),
                 answer.problem, data)


# --- database --------------------------------------------------------------------------------

def database_check(row: Mapping[str, Any] | None, *, name: str, host: str, ca_identity: str,
                   now: datetime) -> Check:
    """Is the row verified and active? (pure)"""
    if row is None:
        return Check("database", FAIL, f"no row for {name} in tracking_domains", fix=(
            f"the platform has not added it: `trackctl domain add {name} --customer C` "
            "publishes domain.created as the platform does."), code="missing")
    status = DomainStatus(row["status"])
    code, reason = split_error(row.get("last_error"))
    data = {"row_status": status, "customer_id": row["customer_id"], "verified": row["verified"],
            "last_error": row.get("last_error")}
    details = [f"customer {row['customer_id']}, status {status}, verified "
               f"{'yes' if row['verified'] else 'no'}, updated "
               f"{fmt_relative(row.get('updated_at'), now)}"]
    if row.get("last_error"):
        details.append(f"last error: {row['last_error']}")
    recheck = f"`trackctl domain recheck {name}`"
    if status == DomainStatus.ACTIVE and row["verified"]:
        expires = row.get("certificate_expires_at")
        certificate = (f"certificate {row.get('certificate_serial') or '-'} expires "
                       f"{fmt_relative(expires, now)}" if expires is not None
                       else "no certificate recorded")
        summary = (f"active and verified (matched by {row.get('matched_by') or '-'}), "
                   f"{certificate}")
        if row.get("last_error"):
            return Check("database", WARN, summary, details, (
                fix_for(code, name, host, ca_identity) if code == CAA_FORBIDS else
                "the last periodic check or renewal reported a problem: fix it before the "
                "certificate expires (docs/certificates.md: Renewal)."), code, data)
        return Check("database", PASS, summary, details, data=data)
    if status == DomainStatus.PENDING:
        fix = fix_for(code, name, host, ca_identity) or "wait for the verifier's first check"
        return Check("database", FAIL, f"pending: {reason or 'not checked yet'}", details,
                     f"{fix} The verifier keeps rechecking; {recheck} checks now.", code, data)
    if status == DomainStatus.VERIFIED:
        return Check("database", FAIL, "verified, but no certificate in service yet"
                     + (f": {row['last_error']}" if row.get("last_error") else ""), details, (
                         "the certifier issues one for every verified domain: see its "
                         "last_error above (docs/certificates.md: Failures) and `trackctl dlq "
                         f"list certifier`; {recheck} asks the certifier again."), code, data)
    if is_tombstone(row):
        return Check("database", FAIL, "deleted by the customer (a tombstone until its "
                     "rechecks drain)", details, (
                         f"`trackctl domain add {name} --customer {row['customer_id']}` adds "
                         "it again."), "deleted", data)
    if status == DomainStatus.REJECTED:
        fix = fix_for(code, name, host, ca_identity)
        return Check("database", FAIL, f"rejected: {row.get('last_error') or '-'}", details,
                     f"{fix + ' ' if fix else ''}Then {recheck} (publishes domain.created "
                     "again: verification restarts with a new deadline).", code, data)
    fix = fix_for(code, name, host, ca_identity)
    return Check("database", FAIL, f"{status}: DNS no longer leads to {host}: "
                 f"{row.get('last_error') or '-'}", details,
                 f"{fix + ' ' if fix else ''}The verifier brings it back at its next periodic "
                 f"check; {recheck} does it now.", code, data)


async def load_row(environ: Mapping[str, str], name: str
                   ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """NAME's tracking_domains row, its domain_reputation rows, or what kept them."""
    settings = DatabaseSettings.read(reader(environ))
    engine = create_engine(settings, pool_size=1)
    try:
        return await fetch_domain(engine, name), await fetch_reputation(engine, name), None
    except Exception as exc:  # any database trouble is this check's finding, not a crash
        return None, [], database_problem(settings, exc)
    finally:
        await engine.dispose()


def isolation_check(row: Mapping[str, Any] | None, *, name: str) -> Check:
    """Does NAME share its registered domain with another customer or the platform host?
    (pure: the verifier's finding, stored at verification)"""
    if row is None:
        return skipped("isolation", f"{name} has no row (see database)")
    registered = row.get("registered_domain") or registered_domain(name)
    data = {"registered_domain": registered}
    warning = row.get("isolation_warning")
    if warning is None:
        return Check("isolation", PASS, f"registered domain {registered} is not shared with "
                     "another customer's tracking domain or the platform host (as of "
                     "verification)", data=data)
    return Check("isolation", WARN, f"registered domain {registered} is shared", [
        warning,
        "consequence: SURBL and URIBL list registered domains, not host names; when one "
        f"name under {registered} gets listed (abuse by any customer under it), every "
        "name under it is listed with it, and mail with links to any of them is marked "
        "as spam. This domain is not isolated from the others."],
        f"give the customer a tracking domain under a registered domain of their own (e.g. "
        f"track.<their-domain>); the platform host must be under a registered domain no "
        f"customer's tracking domain uses ({DOCS}: `shared_registered_domain`).",
        "shared_registered_domain", data)


def blocklist_check(row: Mapping[str, Any] | None, reputation: Sequence[Mapping[str, Any]],
                     *, name: str, now: datetime) -> Check:
    """Is NAME on a DNS blocklist, as the verifier's reputation watch last found? (pure)"""
    if row is None:
        return skipped("blocklist", f"{name} has no row (see database)")
    if not reputation:
        return skipped("blocklist", "not looked up: the verifier watches verified and active "
                                     "domains while REPUTATION_LISTS names lists")
    details = [describe(entry, now) for entry in reputation]
    data = {"reputation": [jsonable(entry) for entry in reputation]}
    listed = [entry for entry in reputation if entry["status"] == "listed"]
    if not listed:
        looked = [entry["blocklist"] for entry in reputation if entry["last_checked_at"]]
        if not looked:
            return skipped("blocklist", "not looked up yet (the watch looks within "
                                         "REPUTATION_POLL_S of verification)")
        return Check("blocklist", PASS, f"not listed on {', '.join(looked)}", details,
                     data=data)
    where = ", ".join(f"{entry['blocklist']} ({', '.join(entry['categories']) or '?'})"
                      for entry in listed)
    return Check("blocklist", FAIL, f"listed on {where}", details, (
        "mail with links on this domain is marked as spam. Find and stop the abuse first "
        "(the customer's recent campaigns and their destinations), then ask each list for "
        "removal at its link above; the watch sees the delisting at its next lookup "
        "(docs/reputation.md). SURBL and URIBL list the registered domain: see isolation."),
        "blocklisted", data)


# --- redirect and click ----------------------------------------------------------------------

@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    elapsed_ms: float


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased) of an HTTP/1.x response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def http_get(address: str, port: int, *, path: str, host_header: str,
                   context: ssl.SSLContext | None, server_name: str | None,
                   timeout_s: float) -> HttpAnswer:
    started = time.perf_counter()

    async def _exchange() -> tuple[int, dict[str, str]]:
        reader, writer = await asyncio.open_connection(
            address, port, ssl=context, server_hostname=server_name if context else None,
            limit=MAX_HEAD)
        try:
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n"
                          f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
                          "Connection: close\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            return parse_head(head)
        finally:
            writer.close()

    async with asyncio.timeout(timeout_s):
        status, headers = await _exchange()
    return HttpAnswer(status, headers, (time.perf_counter() - started) * 1000)


def location_of(headers: Mapping[str, str]) -> str | None:
    value = headers.get("location")
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


@dataclass(frozen=True)
class Route:
    """How the link is requested: over HTTPS at the edge, or plain HTTP at a redirector."""

    address: str
    port: int
    tls: bool
    host_header: str
    context: ssl.SSLContext | None
    label: str


def parse_redirector(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "http" or not parts.hostname or port == -1:
        raise CliError(f"--redirector must be http://HOST:PORT (a redirector's own address), "
                       f"got {url!r}", USAGE)
    return parts.hostname, port or 80


def redirect_check(answer: HttpAnswer | None, error: str | None, *, name: str,
                   destination: str, route: Route, recipient: str) -> Check:
    data: dict[str, Any] = {"via": route.label, "recipient_id": recipient,
                            "campaign_id": DOCTOR_CAMPAIGN}
    details = [f"requested a link minted for campaign {DOCTOR_CAMPAIGN}, recipient "
               f"{recipient}, via {route.label}"]
    if answer is None:
        return Check("redirect", FAIL, f"no HTTP answer via {route.label}: {error}", details,
                     "is the redirector running (and nginx proxying to it: NGINX_UPSTREAMS)? "
                     "Its /healthz should answer.", "no_answer", data)
    data["status_code"] = answer.status
    location = location_of(answer.headers)
    data["location"] = location
    if answer.status == 302 and location == destination:
        return Check("redirect", PASS, f"302 to {destination} in {answer.elapsed_ms:.0f} ms",
                     details, data=data)
    if answer.status == 302:
        return Check("redirect", FAIL, f"302, but to {location!r} instead of {destination}",
                     details, "something between the client and the redirector rewrites "
                              "Location (nginx proxy_redirect?).", "wrong_location", data)
    fixes = {
        404: ("the redirector refused the link: either it does not know the domain is active "
              "yet (it reloads active domains every DOMAIN_REFRESH_S) or its LINK_KEYS differ "
              "from the ones here (the first key signs; the redirectors must hold it)."),
        502: "nginx cannot reach the redirectors: check NGINX_UPSTREAMS and that they run.",
        503: "the redirector is not ready (database or spool trouble): see its /readyz "
             "and log.",
        504: "the redirectors do not answer nginx in time: see their logs.",
    }
    return Check("redirect", FAIL, f"answered {answer.status} instead of 302", details,
                 fixes.get(answer.status, "see the redirector's log for this request."),
                 f"http_{answer.status}", data)


async def wait_click(environ: Mapping[str, str], recipient: str, timeout_s: float
                     ) -> tuple[dict[str, Any] | None, float, str | None]:
    settings = DatabaseSettings.read(reader(environ))
    engine = create_engine(settings, pool_size=1)
    c = TrackingLog.__table__.c
    query = (select(c.event_id, c.domain, c.bot, c.bot_reason, c.clicked_at, c.logged_at)
             .where(c.campaign_id == DOCTOR_CAMPAIGN, c.recipient_id == recipient))
    started = time.monotonic()
    try:
        while True:
            async with engine.connect() as connection:
                row = (await connection.execute(query)).first()
            waited = time.monotonic() - started
            if row is not None:
                return dict(row._mapping), waited, None
            if waited >= timeout_s:
                return None, waited, None
            await asyncio.sleep(0.2)
    except Exception as exc:  # the database went away meanwhile: report, do not crash
        return None, time.monotonic() - started, database_problem(settings, exc)
    finally:
        await engine.dispose()


def click_check(row: Mapping[str, Any] | None, waited_s: float, error: str | None, *,
                recipient: str, timeout_s: float) -> Check:
    if error is not None:
        return Check("click", FAIL, error, fix="check DATABASE_URL and PostgreSQL.",
                     code="database")
    if row is None:
        return Check("click", FAIL, f"the click (recipient {recipient}) did not reach "
                     f"tracking_logs within {timeout_s:g} s", fix=(
                         "the redirector spools each click and publishes it; the logger "
                         "stores it. Check that the logger runs, `trackctl dlq list logger`, "
                         "the depth of the <exchange>.logger queue, and the redirector's "
                         "spool (SPOOL_DIR)."), code="click_missing",
                     data={"recipient_id": recipient})
    bot = f"bot ({row['bot_reason']})" if row["bot"] else "human"
    return Check("click", PASS, f"stored in tracking_logs after {waited_s:.1f} s as a {bot} "
                 f"click (event id {row['event_id']})",
                 data={"recipient_id": recipient, "event_id": row["event_id"],
                       "bot": row["bot"], "bot_reason": row["bot_reason"]})


# --- running it all --------------------------------------------------------------------------

@dataclass
class Options:
    name: str
    host: str
    ca_identity: str
    nameservers: tuple[tuple[str, int], ...]
    dns_timeout_s: float
    connect: str | None
    https_port: int
    ca_bundle: Path | None
    redirector: tuple[str, int] | None
    destination: str
    timeout_s: float
    click_timeout_s: float
    aliases: tuple[str, ...] = ()


def options(args: argparse.Namespace, environ: Mapping[str, str]) -> Options:
    # The verifier's own loader: the same settings, validated the same way.
    dns = load_dns_judgement(reader(environ))
    host, aliases = dns.tracking_host, dns.tracking_host_aliases
    checked = validate_name(args.name, host, aliases)
    if isinstance(checked, Rejection):
        raise CliError(f"{args.name!r}: {checked.reason}", USAGE)
    ca_bundle = Path(args.ca_bundle) if args.ca_bundle else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise CliError(f"--ca-bundle {ca_bundle} is not a file", USAGE)
    if not 0 < args.https_port < 65536:
        raise CliError("--https-port must be 1-65535", USAGE)
    for flag, value in (("--timeout", args.timeout), ("--click-timeout", args.click_timeout)):
        if value <= 0:
            raise CliError(f"{flag} must be positive", USAGE)
    return Options(
        name=checked, host=host, ca_identity=dns.caa_identity,
        nameservers=dns.nameservers, dns_timeout_s=dns.dns_timeout_s,
        connect=args.connect, https_port=args.https_port, ca_bundle=ca_bundle,
        redirector=parse_redirector(args.redirector) if args.redirector else None,
        destination=args.destination, timeout_s=args.timeout,
        click_timeout_s=args.click_timeout, aliases=aliases)


async def diagnose(opts: Options, environ: Mapping[str, str]) -> list[Check]:
    name, now = opts.name, utc_now()
    dns_task = asyncio.ensure_future(check_dns(
        name, host=opts.host, ca_identity=opts.ca_identity, nameservers=opts.nameservers,
        timeout_s=opts.dns_timeout_s, aliases=opts.aliases))
    row, reputation, db_error = await load_row(environ, name)
    dns = await dns_task
    checks = [dns.check]

    # tls
    address = opts.connect or (dns.addresses[0] if dns.addresses else None)
    tls: Check
    if not dns.leads_here and opts.connect is None:
        tls = skipped("tls", f"DNS does not lead {name} to {opts.host} (see dns); pass "
                             "--connect ADDRESS to test an edge anyway")
        if dns.check.code in (DNS_SERVFAIL, DNS_TIMEOUT, DNS_ERROR):
            tls = skipped("tls", "DNS could not be asked (see dns); pass --connect ADDRESS "
                                 "to test an edge anyway")
    elif address is None:
        tls = skipped("tls", f"DNS gave no address for {name}; pass --connect ADDRESS")
    else:
        where = _hostport(address, opts.https_port)
        answer = await tls_probe(address, opts.https_port, name, ca_bundle=opts.ca_bundle,
                                 timeout_s=opts.timeout_s)
        tls = tls_check(answer, name=name, where=where, row=row, ca_bundle=opts.ca_bundle,
                        now=now)
    checks.append(tls)

    # database
    if db_error is not None:
        database = Check("database", FAIL, db_error, fix=(
            "check DATABASE_URL and that PostgreSQL is up (`trackctl db current`)."),
            code="database")
    else:
        database = database_check(row, name=name, host=opts.host,
                                  ca_identity=opts.ca_identity, now=now)
    checks.append(database)
    if db_error is None:
        checks.append(isolation_check(row, name=name))
        checks.append(blocklist_check(row, reputation, name=name, now=now))

    # redirect and click
    route: Route | None = None
    why_not = ""
    if row is None:
        why_not = ("the database is unreachable" if db_error else
                   f"{name} has no row, so no customer to mint a link for")
    elif row["status"] != DomainStatus.ACTIVE:
        why_not = f"{name} is {row['status']}, and redirectors only serve active domains"
    elif opts.redirector is not None:
        r_host, r_port = opts.redirector
        route = Route(r_host, r_port, False, name, None,
                      f"the redirector at http://{_hostport(r_host, r_port)}")
    elif tls.status in (PASS, WARN) and address is not None:
        host_header = name if opts.https_port == 443 else f"{name}:{opts.https_port}"
        route = Route(address, opts.https_port, True, host_header,
                      client_context(opts.ca_bundle),
                      f"https://{name}:{opts.https_port} at {address}")
    else:
        why_not = ("HTTPS does not work (see tls); pass --redirector http://HOST:PORT to test "
                   "a redirector directly")
    if route is None:
        checks.append(skipped("redirect", why_not))
        checks.append(skipped("click", "no link was requested"))
        return checks
    assert row is not None
    redirect, recipient = await request_link(opts, environ, route, row["customer_id"])
    checks.append(redirect)
    if redirect.status != PASS:
        checks.append(skipped("click", "the link was not redirected (see redirect)"))
        return checks
    click_row, waited, error = await wait_click(environ, recipient, opts.click_timeout_s)
    checks.append(click_check(click_row, waited, error, recipient=recipient,
                              timeout_s=opts.click_timeout_s))
    return checks


async def request_link(opts: Options, environ: Mapping[str, str], route: Route,
                       customer: str) -> tuple[Check, str]:
    recipient = f"doctor-{uuid.uuid4()}"
    try:
        signer = LinkSigner(reader(environ)[LINK_KEYS])
        token = signer.mint_token(customer_id=customer, campaign_id=DOCTOR_CAMPAIGN,
                                  recipient_id=recipient, url=opts.destination)
    except (SettingsError, LinkError) as exc:
        return Check("redirect", FAIL, f"cannot mint a link: {exc}", fix=(
            "set LINK_KEYS as on the redirectors (the first key signs)."),
            code="link_keys"), recipient
    answer, error = None, None
    try:
        answer = await http_get(route.address, route.port, path=f"/t/{token}",
                                host_header=route.host_header, context=route.context,
                                server_name=opts.name, timeout_s=opts.timeout_s)
    except TimeoutError:
        error = f"no answer within {opts.timeout_s:g} s"
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as exc:
        error = str(exc) or type(exc).__name__
    return redirect_check(answer, error, name=opts.name, destination=opts.destination,
                          route=route, recipient=recipient), recipient


def render(name: str, host: str, checks: Sequence[Check],
           aliases: Sequence[str] = ()) -> str:
    also = f", aliases {', '.join(aliases)}" if aliases else ""
    lines = [f"doctor {name} (platform host {host}{also})", ""]
    width = max(len(c.name) for c in checks)
    pad = " " * (6 + width + 2)
    for check in checks:
        lines.append(f"{LABELS[check.status]:<4}  {check.name:<{width}}  {check.summary}")
        lines.extend(pad + detail for detail in check.details)
        if check.fix and check.status in (FAIL, WARN):
            lines.append(f"{pad}fix: {check.fix}")
    counts = {status: sum(1 for c in checks if c.status == status)
              for status in (PASS, WARN, FAIL, SKIP)}
    verdict = (f"{name} works" if not counts[FAIL] else f"{name} does not work yet")
    words = {PASS: "passed", WARN: "warned", FAIL: "failed", SKIP: "skipped"}
    summary = ", ".join(f"{n} {words[s]}" for s, n in counts.items() if n)
    lines.extend(["", f"{summary}: {verdict}"])
    return "\n".join(lines)


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    opts = options(args, environ)
    checks = await diagnose(opts, environ)
    ok = not any(check.status == FAIL for check in checks)
    if args.json:
        emit_json({"domain": opts.name, "tracking_host": opts.host,
                   "tracking_host_aliases": list(opts.aliases), "ok": ok,
                   "checks": [check.document() for check in checks]})
    else:
        print(render(opts.name, opts.host, checks, opts.aliases))
    return OK if ok else FAILED
