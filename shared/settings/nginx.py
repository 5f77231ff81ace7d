"""The nginx settings of the edge agent, which writes nginx's configuration for the
tracking domains (the certifier touches no nginx)."""

from __future__ import annotations

import re

from shared.settings.declare import Invalid, Setting
from shared.settings.parsers import command, flag, items, path

# nginx `listen` values we accept: a port, or address:port (IPv6 in brackets).
_LISTEN_RE = re.compile(
    r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5}$")


def listen(text: str) -> str:
    """An nginx `listen` value: a port or address:port."""
    if not _LISTEN_RE.match(text) or not 0 < int(text.rsplit(":", 1)[-1]) < 65536:
        raise Invalid("must be a port or address:port (e.g. 443 or 127.0.0.1:8443), "
                      f"got {text!r}")
    return text


def upstreams(text: str) -> tuple[str, ...]:
    found = tuple(items(text))
    for item in found:
        if not _LISTEN_RE.match(item) or ":" not in item:
            raise Invalid(f"must be comma-separated host:port, got {item!r}")
    if not found:
        raise Invalid("names no redirector")
    return found


NGINX_CONF_PATH = Setting(
    "NGINX_CONF_PATH", path, "var/nginx/tracking-domains.conf", "The generated nginx include.")
NGINX_RELOAD_COMMAND = Setting(
    "NGINX_RELOAD_COMMAND", command, "", "Run after the include changed.",
    shown="(none: write only)")
NGINX_HTTPS_LISTEN = Setting(
    "NGINX_HTTPS_LISTEN", listen, "443", "nginx `listen` value for HTTPS.")
NGINX_HTTP_LISTEN = Setting(
    "NGINX_HTTP_LISTEN", listen, "80", "nginx `listen` value for HTTP.")
NGINX_UPSTREAMS = Setting(
    "NGINX_UPSTREAMS", upstreams, "127.0.0.1:8080", "Redirector addresses, comma-separated.")
NGINX_VERIFY_TLS = Setting(
    "NGINX_VERIFY_TLS", flag, "1", "Confirm by a handshake that a new certificate is served.")
