"""The rest of the edge's include (tests/unit/test_edge_nginx.py has its certificate
part), and the demo's main nginx.conf around it (pure rendering; tests/integration/
test_edge_nginx.py runs them in nginx)."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.nginx import render_main
from services.certifier import settings as certifier_settings
from services.edge import settings as edge_settings
from services.edge.nginx import render_include
from shared.errors import SettingsError

EDGE = {"EDGE_ID": "edge-a", "CERT_STORE_KEYS": "c1:" + "c" * 40}


def include(https: str = "127.0.0.1:8443") -> str:
    return render_include(cert_dir=Path("/srv/edge/certs"), https_listen=https,
                          http_listen="127.0.0.1:8080", upstreams=["127.0.0.1:9001"])


def test_plain_http_redirects_to_https_except_the_acme_challenge() -> None:
    text = include()
    plain = text[text.index("listen 127.0.0.1:8080 default_server;"):]
    plain = plain[:plain.index("\n}\n")]
    challenge = plain[plain.index("location ^~ /.well-known/acme-challenge/"):]
    assert "proxy_pass http://tracking_redirectors;" in challenge.split("}")[0]
    assert "return 301 https://$host:8443$request_uri;" in plain
    # On the standard port the redirect carries no port.
    assert "return 301 https://$host$request_uri;" in include(https="443")


def test_rendering_is_deterministic() -> None:
    assert include() == include()


def test_main_config_keeps_everything_under_the_prefix() -> None:
    text = render_main(Path("/srv/nginx"), Path("/srv/nginx/conf.d/tracking-domains.conf"))
    assert 'pid "/srv/nginx/nginx.pid";' in text
    assert 'include "/srv/nginx/conf.d/tracking-domains.conf";' in text
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f'{temp}_temp_path "/srv/nginx/temp/' in text


def test_the_edge_reads_the_nginx_settings_and_the_certifier_none() -> None:
    settings = edge_settings.load({
        **EDGE, "NGINX_RELOAD_COMMAND": "nginx -p '/srv/my nginx/' -s reload",
        "NGINX_HTTPS_LISTEN": "127.0.0.1:8443"})
    assert settings.reload_command == ("nginx", "-p", "/srv/my nginx/", "-s", "reload")
    assert settings.https_listen == "127.0.0.1:8443"
    assert edge_settings.load(EDGE).reload_command == ()
    for name, value in [("NGINX_HTTPS_LISTEN", "443; evil"), ("NGINX_UPSTREAMS", "nohostport")]:
        with pytest.raises(SettingsError, match=name):
            edge_settings.load({**EDGE, name: value})
    # The certifier writes no nginx configuration: it declares none of these.
    assert not [s.name for s in certifier_settings.PROGRAM.settings
                if s.name.startswith("NGINX_")]
