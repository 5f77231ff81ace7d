"""Loopback networking for the local world: free ports, and HTTPS requests made as a
browser would make them to a name that DNS would send to 127.0.0.1 (`curl --resolve`)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time

# A person's browser: the redirector flags scanners and scripts as bots
# (services/redirector/bots.py), and the demo's click is a person's.
BROWSER_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def https_get(port: int, host: str, path: str, context: ssl.SSLContext | None = None,
              timeout_s: float = 5.0, user_agent: str = BROWSER_USER_AGENT
              ) -> tuple[int, dict[str, str], bytes]:
    """GET `path` from 127.0.0.1:`port` as `host` (SNI and Host), like curl --resolve.

    With no `context` the request is plain HTTP. Redirects are not followed: the
    answer (status, headers, body) is the redirector's own.
    """
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
        connection.request("GET", path, headers={"User-Agent": user_agent})
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
    while True:
        try:
            status, headers, _ = https_get(port, host, path, context, timeout_s=2)
        except (OSError, ssl.SSLError):
            status, headers = 0, {}
        if status == 302 or time.monotonic() - started > timeout_s:
            return status, headers, time.monotonic() - started
        time.sleep(interval_s)
