"""The edge's nginx include and certificate files (no nginx here: tests/integration/
test_edge_agent.py and tests/e2e/test_edge_fleet.py run a real one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.edge.nginx import CertificateFiles, render_include
from shared.errors import PermanentError
from tests.support.certificates import self_signed_pem


def test_the_include_picks_the_certificate_by_server_name_and_never_lists_domains() -> None:
    text = render_include(cert_dir=Path("/srv/edge/certs"), https_listen="127.0.0.1:8443",
                          http_listen="127.0.0.1:8080", upstreams=["10.0.0.1:8080",
                                                                   "10.0.0.2:8080"])
    assert 'ssl_certificate "/srv/edge/certs/$ssl_server_name.pem";' in text
    assert 'ssl_certificate_key "/srv/edge/certs/$ssl_server_name.pem";' in text
    assert "listen 127.0.0.1:8443 ssl http2 default_server;" in text
    assert "server 10.0.0.1:8080;\n    server 10.0.0.2:8080;" in text
    assert "return 301 https://$host:8443$request_uri;" in text
    assert text.count("server_name _;") == 2  # nothing per domain: no reload per domain


def test_a_directory_nginx_cannot_quote_is_refused() -> None:
    with pytest.raises(PermanentError):
        render_include(cert_dir=Path('/srv/a "b"'), https_listen="443", http_listen="80",
                       upstreams=["127.0.0.1:8080"])


def test_files_hold_chain_and_key_are_not_world_readable_and_list_their_serials(
        tmp_path: Path) -> None:
    files = CertificateFiles(tmp_path / "certs")
    files.prepare()
    chain, key = self_signed_pem("track.a.test", serial=0xABC)
    files.write("track.a.test", chain.encode(), key)
    written = (tmp_path / "certs" / "track.a.test.pem")
    text = written.read_text()
    assert "BEGIN CERTIFICATE" in text and "PRIVATE KEY" in text
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o751
    (tmp_path / "certs" / "broken.test.pem").write_text("not a certificate")
    assert files.installed() == {"track.a.test": "abc", "broken.test": ""}
    assert files.remove("track.a.test") and not files.remove("track.a.test")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.test", "UPPER.test", ".hidden", ""])
def test_only_names_in_normal_form_become_paths(tmp_path: Path, name: str) -> None:
    files = CertificateFiles(tmp_path)
    with pytest.raises(PermanentError):
        files.path(name)


def test_the_group_may_be_a_gid(tmp_path: Path) -> None:
    gid = os.getgid()
    files = CertificateFiles(tmp_path / "certs", group=str(gid))
    files.prepare()
    chain, key = self_signed_pem("track.a.test")
    files.write("track.a.test", chain.encode(), key)
    assert (tmp_path / "certs" / "track.a.test.pem").stat().st_gid == gid
