"""The edge's include and certificate files in a real nginx (what the certifier's own
include-and-reload did before the edge agent took nginx over): a certificate appears,
is replaced and goes without a reload; the include reloads only when it changed, and a
refused include is put back as it was while nginx keeps serving."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from demo.nginx import Nginx, certificate_directory, worker_group
from services.edge.nginx import CertificateFiles, NginxError, ensure_include
from shared.handshake import presented_serial
from tests.support.certificates import self_signed_pem


def install(files: CertificateFiles, name: str, serial: int) -> None:
    chain, key = self_signed_pem(name, serial=serial)
    files.write(name, chain.encode("ascii"), key)


async def test_certificates_change_without_a_reload_and_a_refused_include_is_put_back(
        tmp_path: Path) -> None:
    cert_dir = certificate_directory()
    try:
        with Nginx(tmp_path / "nginx", upstreams=["127.0.0.1:9"], cert_dir=cert_dir) as nginx:
            files = CertificateFiles(cert_dir, group=worker_group())
            files.prepare()
            text = nginx.include.read_text()
            # The include nginx started with is current: nothing written, no reload.
            assert await ensure_include(nginx.include, text, nginx.reload_command) is False
            port = nginx.https_port
            assert await presented_serial("127.0.0.1", port, "a.test") is None  # no file

            install(files, "a.test", 0xA1)
            assert await presented_serial("127.0.0.1", port, "a.test") == "a1"
            install(files, "a.test", 0xA2)  # a renewal: the next handshake has it
            install(files, "b.test", 0xB1)
            assert await presented_serial("127.0.0.1", port, "a.test") == "a2"
            assert await presented_serial("127.0.0.1", port, "b.test") == "b1"
            assert files.remove("b.test") is True
            assert await presented_serial("127.0.0.1", port, "b.test") is None

            # nginx refuses an include with an unknown directive: the old one stays, on
            # disk too, and nginx goes on serving with it.
            broken = text + "no_such_directive on;\n"
            with pytest.raises(NginxError, match="refused"):
                await ensure_include(nginx.include, broken, nginx.reload_command)
            assert nginx.include.read_text() == text
            assert await presented_serial("127.0.0.1", port, "a.test") == "a2"
            assert nginx.process is not None and nginx.process.poll() is None
    finally:
        shutil.rmtree(cert_dir.parent, ignore_errors=True)
