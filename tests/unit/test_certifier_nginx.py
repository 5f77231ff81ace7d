"""The generated nginx configuration (pure rendering; tests/e2e/test_https.py runs it)."""

from __future__ import annotations

import re
from pathlib import Path

from services.certifier.nginx import Site, render_main, render_sites

LIVE = Path("/var/lib/certbot/config/live")


def site(name: str, serial: str = "1a2b") -> Site:
    return Site(name=name, fullchain=LIVE / name / "fullchain.pem",
                privkey=LIVE / name / "privkey.pem", serial=serial)


def servers(text: str) -> list[str]:
    """Top-level `server { ... }` blocks."""
    blocks, depth, start = [], 0, None
    for match in re.finditer(r"server \{|\{|\}", text):
        token = match.group()
        if token == "server {" and depth == 0:
            start = match.start()
        if token.endswith("{"):
            depth += 1
        else:
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start:match.end()])
                start = None
    return blocks


def render(*sites: Site, https: str = "127.0.0.1:8443") -> str:
    return render_sites(list(sites), https_listen=https, http_listen="127.0.0.1:8080",
                        upstreams=["127.0.0.1:9001", "127.0.0.1:9002"])


def test_each_domain_gets_its_own_certificate_and_proxies_to_the_redirectors() -> None:
    text = render(site("track.customer-b.test", "ff"), site("track.customer-a.test", "0a"))
    blocks = servers(text)
    assert len(blocks) == 4  # plain HTTP, TLS default, two domains
    a = next(b for b in blocks if "server_name track.customer-a.test;" in b)
    assert "listen 127.0.0.1:8443 ssl http2;" in a
    assert f'ssl_certificate "{LIVE}/track.customer-a.test/fullchain.pem";' in a
    assert f'ssl_certificate_key "{LIVE}/track.customer-a.test/privkey.pem";' in a
    assert "proxy_pass http://tracking_redirectors;" in a
    assert "proxy_set_header Host $host;" in a
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in a
    assert "track.customer-b.test" not in a
    assert "# track.customer-a.test: serial 0a" in text
    assert "server 127.0.0.1:9001;\n    server 127.0.0.1:9002;" in text
    # Sorted, so the file (and whether it changed) does not depend on row order.
    assert text.index("customer-a") < text.index("customer-b")


def test_plain_http_redirects_to_https_except_the_acme_challenge() -> None:
    plain = servers(render())[0]
    assert "listen 127.0.0.1:8080 default_server;" in plain
    challenge = plain[plain.index("location ^~ /.well-known/acme-challenge/"):]
    assert "proxy_pass http://tracking_redirectors;" in challenge.split("}")[0]
    assert "return 301 https://$host:8443$request_uri;" in plain
    # On the standard port the redirect carries no port.
    assert "return 301 https://$host$request_uri;" in render(https="443")


def test_names_without_a_certificate_are_refused_at_the_handshake() -> None:
    default = servers(render())[1]
    assert "listen 127.0.0.1:8443 ssl http2 default_server;" in default
    assert "ssl_reject_handshake on;" in default


def test_unsafe_names_and_paths_are_left_out() -> None:
    evil = [Site(name="x.test; include /etc/passwd", fullchain=LIVE / "f", privkey=LIVE / "k",
                 serial="1"),
            Site(name="ok.test", fullchain=Path('/tmp/a"b/fullchain.pem'), privkey=LIVE / "k",
                 serial="1"),
            Site(name="ok2.test", fullchain=LIVE / "f", privkey=LIVE / "k", serial="not hex")]
    text = render(*evil, site("track.customer-a.test"))
    assert len(servers(text)) == 3
    assert "passwd" not in text and "ok.test" not in text and "ok2.test" not in text


def test_rendering_is_deterministic() -> None:
    assert render(site("a.test"), site("b.test")) == render(site("b.test"), site("a.test"))


def test_main_config_keeps_everything_under_the_prefix() -> None:
    text = render_main(Path("/srv/nginx"), Path("/srv/nginx/conf.d/tracking-domains.conf"))
    assert 'pid "/srv/nginx/nginx.pid";' in text
    assert 'include "/srv/nginx/conf.d/tracking-domains.conf";' in text
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f'{temp}_temp_path "/srv/nginx/temp/' in text
