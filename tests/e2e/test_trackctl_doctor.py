"""`trackctl doctor` as an operator runs it: the real console script against a loopback world.

A DNS server the test controls (demo/dns.py), real redirector and
logger processes, nginx serving HTTPS for one domain with a certificate from a CA
made here (what the certifier would have put in place; Pebble is not needed to
test the doctor), the real broker and a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.databases import execute, fetch
from demo.dns import DnsServer
from demo.net import free_port
from demo.nginx import Nginx, worker_group
from demo.processes import ROOT, ServiceProcess
from services.edge.nginx import CertificateFiles
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST, service_env

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
GOOD = "track.customer-a.test"  # right DNS, active, HTTPS through nginx
WRONG = "track.customer-b.test"  # CNAME to someone else, pending
NO_CERT = "track.customer-c.test"  # right DNS, active, but nginx has no certificate


def trackctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TRACKCTL), *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def make_certificates(directory: Path, name: str) -> tuple[Path, Path, Path, str]:
    """(CA pem, fullchain pem, key pem, leaf serial in hex) for `name`, valid 90 days."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trackctl doctor test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, chain = directory / "ca.pem", directory / "fullchain.pem"
    key_pem = directory / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                      + ca.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, chain, key_pem, format(leaf.serial_number, "x")


def serve_site(nginx: Nginx, name: str, chain: Path, key: Path, ca_pem: Path) -> None:
    """What the edge agent does after an issuance: write the domain's file, which nginx
    reads at the next handshake (no reload), and wait until it presents it."""
    files = CertificateFiles(nginx.cert_dir, group=worker_group())
    files.prepare()
    files.write(name, chain.read_bytes(), key.read_bytes())
    context = ssl.create_default_context(cafile=str(ca_pem))
    deadline = time.monotonic() + 10
    while True:
        try:
            with context.wrap_socket(socket.create_connection(
                    ("127.0.0.1", nginx.https_port), timeout=2), server_hostname=name):
                return
        except (OSError, ssl.SSLError):
            assert time.monotonic() < deadline, nginx.log_text()
            time.sleep(0.05)


def checks_of(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """trackctl doctor --json's checks by name (parsed JSON: values of any JSON type)."""
    document = json.loads(result.stdout)
    return {check["name"]: check for check in document["checks"]}


def test_doctor_passes_a_working_domain_and_explains_broken_ones(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    ca_pem, chain, key, serial = make_certificates(tmp_path / "pki", GOOD)
    expires = datetime.now(UTC) + timedelta(days=90)
    asyncio.run(execute(
        database, "INSERT INTO tracking_domains (name, customer_id, status, verified, "
        "matched_by, dns_chain, certificate_serial, certificate_expires_at, last_error) VALUES "
        "($1, 'cust-a', 'active', true, 'cname', $2, $3, $4, NULL), "
        "($5, 'cust-b', 'pending', false, NULL, NULL, NULL, NULL, $6), "
        "($7, 'cust-c', 'active', true, 'cname', NULL, NULL, NULL, NULL)",
        GOOD, f"{GOOD} -> {TRACKING_HOST}", serial, expires,
        WRONG, f"wrong_target: {WRONG} points to click.other-esp.test",
        NO_CERT))
    redirector_port = free_port()
    upstream = f"127.0.0.1:{redirector_port}"
    with DnsServer() as dns, Nginx(tmp_path / "nginx", upstreams=[upstream]) as nginx:
        dns.a(TRACKING_HOST, "127.0.0.1")
        dns.cname(GOOD, TRACKING_HOST)
        dns.cname(NO_CERT, TRACKING_HOST)
        dns.cname(WRONG, "click.other-esp.test")
        dns.a("click.other-esp.test", "192.0.2.7")
        env = service_env(broker, database, tmp_path, DNS_NAMESERVERS=dns.address,
                          DNS_TIMEOUT_S="2", ACME_CAA_IDENTITY="pebble.test")
        with ServiceProcess("logger", env, tmp_path) as logger, \
                ServiceProcess("redirector", {**env, "REDIRECTOR_BIND": upstream,
                                              "TRUSTED_PROXIES": "127.0.0.1"},
                               tmp_path) as redirector:
            serve_site(nginx, GOOD, chain, key, ca_pem)
            redirector.wait_http(f"http://{upstream}/readyz")
            logger.wait_for_log("logger.started")
            https = ["--https-port", str(nginx.https_port), "--ca-bundle", str(ca_pem)]

            # A working domain: every check passes, over real HTTPS, the address from DNS.
            ok = trackctl(env, "doctor", GOOD, *https)
            assert ok.returncode == 0, ok.stdout + ok.stderr + redirector.log_text()[-2000:]
            for name in ("dns", "tls", "database", "redirect", "click"):
                assert f"PASS  {name}" in ok.stdout, ok.stdout
            assert f"{GOOD} -> {TRACKING_HOST} (matched by cname)" in ok.stdout
            assert f"127.0.0.1:{dns.port} (DNS_NAMESERVERS)" in ok.stdout
            assert f"serial {serial}" in ok.stdout
            # The reputation watch is off in these processes (REPUTATION_LISTS empty).
            assert "SKIP  blocklist  skipped: not looked up" in ok.stdout
            assert "6 passed, 1 skipped: track.customer-a.test works" in ok.stdout

            as_json = trackctl(env, "doctor", GOOD, *https, "--json")
            assert as_json.returncode == 0, as_json.stderr
            checks = checks_of(as_json)
            assert {n: c["status"] for n, c in checks.items() if c["status"] != "pass"} == {
                "blocklist": "skipped"}
            assert checks["dns"]["chain"] == [GOOD, TRACKING_HOST]
            assert checks["tls"]["certificate"]["serial"] == serial
            assert checks["redirect"]["status_code"] == 302
            recipient = checks["click"]["recipient_id"]
            rows = asyncio.run(fetch(database, "SELECT * FROM tracking_logs WHERE "
                                               "recipient_id = $1", recipient))
            assert len(rows) == 1
            assert rows[0]["campaign_id"] == "trackctl-doctor"
            assert rows[0]["domain"] == GOOD and rows[0]["customer_id"] == "cust-a"
            assert rows[0]["bot"] is True  # never counted as a person's click

            # Wrong DNS: the fix, and what could not be checked because of it.
            wrong = trackctl(env, "doctor", WRONG, "--json")
            assert wrong.returncode == 1, wrong.stderr
            checks = checks_of(wrong)
            assert checks["dns"]["status"] == "fail"
            assert checks["dns"]["code"] == "wrong_target"
            assert f"change the CNAME target of {WRONG} to {TRACKING_HOST}" in checks["dns"]["fix"]
            assert checks["tls"]["status"] == "skipped"
            assert checks["tls"]["summary"].startswith("skipped: DNS does not lead")
            assert checks["database"]["status"] == "fail"
            assert checks["database"]["summary"].startswith("pending: ")
            assert checks["redirect"]["status"] == "skipped"
            assert checks["click"]["status"] == "skipped"
            text = trackctl(env, "doctor", WRONG)
            assert text.returncode == 1
            assert "FAIL  dns" in text.stdout and "fix: change the CNAME target" in text.stdout
            assert "SKIP  tls        skipped: DNS does not lead" in text.stdout

            # No certificate at the edge: nginx refuses the handshake; the redirector and
            # logger can still be tested directly.
            no_cert = trackctl(env, "doctor", NO_CERT, *https, "--redirector",
                               f"http://{upstream}", "--json")
            assert no_cert.returncode == 1, no_cert.stderr
            checks = checks_of(no_cert)
            assert checks["dns"]["status"] == "pass"
            assert checks["tls"]["status"] == "fail" and checks["tls"]["code"] == "rejected"
            assert "no certificate" in checks["tls"]["summary"]
            assert checks["redirect"]["status"] == "pass"
            assert checks["click"]["status"] == "pass"
            skipped = checks_of(trackctl(env, "doctor", NO_CERT, *https, "--json"))
            assert skipped["redirect"]["summary"].startswith("skipped: HTTPS does not work")

            # Nothing listens on the HTTPS port: a clear failure, not a traceback.
            closed = trackctl(env, "doctor", GOOD, "--connect", "127.0.0.1",
                              "--https-port", str(free_port()), "--timeout", "2")
            assert closed.returncode == 1
            assert "FAIL  tls" in closed.stdout
            assert "nothing listens on 127.0.0.1:" in closed.stdout
            assert "fix: start nginx" in closed.stdout
            assert "Traceback" not in closed.stderr

    # Usage and configuration errors are status 2.
    assert trackctl(env, "doctor", "not a name").returncode == 2
    assert trackctl(env, "doctor", TRACKING_HOST).returncode == 2
    no_host = trackctl({**env, "TRACKING_HOST": ""}, "doctor", GOOD)
    assert no_host.returncode == 2 and "TRACKING_HOST" in no_host.stderr
