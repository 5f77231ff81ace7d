"""The generated configuration in a real nginx: served certificates, reloads, a refused reload."""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.nginx import Nginx
from services.certifier.nginx import NginxError, NginxSites, Site


def self_signed(directory: Path, name: str, serial: int) -> Site:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return Site(name=name, fullchain=directory / "fullchain.pem",
                privkey=directory / "privkey.pem", serial=format(serial, "x"))


def served_serial(port: int, name: str) -> str | None:
    """The serial nginx presents for SNI `name`, or None if it refuses the handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, ConnectionError):
        return None
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


async def test_sync_writes_reloads_only_on_change_and_keeps_the_old_config_when_refused(
        tmp_path: Path) -> None:
    current: list[Site] = []

    async def sites() -> list[Site]:
        return list(current)

    with Nginx(tmp_path / "nginx", upstreams=["127.0.0.1:9"]) as nginx:
        manager = NginxSites(conf_path=nginx.include, reload_command=nginx.reload_command,
                             sites=sites, https_listen=nginx.https_listen,
                             http_listen=nginx.http_listen, upstreams=nginx.upstreams,
                             verify_address=("127.0.0.1", nginx.https_port))
        assert await manager.sync() is False  # same as what nginx started with
        assert served_serial(nginx.https_port, "a.test") is None  # refused: no certificate

        current.append(self_signed(tmp_path / "certs" / "a.test", "a.test", 0xA1))
        assert await manager.sync() is True and manager.reloads == 1
        # sync() returns once nginx presents the new certificate, not merely once signalled.
        assert served_serial(nginx.https_port, "a.test") == "a1"
        assert await manager.sync() is False and manager.reloads == 1

        # A renewal: same paths, new serial; the file changes, nginx reloads.
        current[0] = self_signed(tmp_path / "certs" / "a.test", "a.test", 0xA2)
        current.append(self_signed(tmp_path / "certs" / "b.test", "b.test", 0xB1))
        results = await asyncio.gather(*(manager.sync() for _ in range(5)))
        assert results.count(True) == 1 and manager.reloads == 2  # a burst, one reload
        assert served_serial(nginx.https_port, "a.test") == "a2"
        assert served_serial(nginx.https_port, "b.test") == "b1"

        # nginx refuses a configuration naming a missing file: the old one stays, on disk too.
        before = nginx.include.read_text()
        current.append(Site(name="c.test", fullchain=tmp_path / "missing.pem",
                            privkey=tmp_path / "missing.key", serial="c1"))
        with pytest.raises(NginxError, match=r"missing\.pem"):
            await manager.sync()
        assert nginx.include.read_text() == before
        assert served_serial(nginx.https_port, "a.test") == "a2"
        assert nginx.process is not None and nginx.process.poll() is None
