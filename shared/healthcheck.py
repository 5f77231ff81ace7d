"""`python -m shared.healthcheck SERVICE`: a container's healthcheck (compose.yaml).

It asks the address the service itself listens on, taken from the same settings the
service reads: the redirector's `/healthz` on `REDIRECTOR_BIND`, the other services'
`/metrics` on `METRICS_BIND` (each with the service's own default). A fixed port would
be wrong wherever containers share the host's network: it would report whichever
process holds that port. A wildcard bind (`0.0.0.0`, `::`) is asked on loopback.

Exit status 0 when the service answers 200, 1 otherwise, with one line saying why. It
imports nothing heavier than shared.settings, because it runs every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from shared.errors import SettingsError
from shared.settings import DEFAULT_METRICS_BINDS, REDIRECTOR_BIND, metrics_bind

SERVICES = tuple(DEFAULT_METRICS_BINDS)
TIMEOUT_S = 2.0
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_url(service: str, environ: Mapping[str, str]) -> str:
    """The URL that answers 200 while `service` (configured by `environ`) is alive.

    Raises SettingsError when the setting is malformed (the service would not start
    either) or when the service serves nothing to ask (METRICS_BIND off).
    """
    if service == "redirector":
        host, port = REDIRECTOR_BIND.read(environ)
        path = "/healthz"
    else:
        bind = metrics_bind(service).read(environ)
        if bind is None:
            raise SettingsError(f"METRICS_BIND is off: the {service} serves nothing a "
                                "healthcheck could ask (set it, or disable the healthcheck)")
        host, port = bind
        path = "/metrics"
    host = _LOOPBACK.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probe(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when `url` answers 200; otherwise what went wrong."""
    # No proxy, whatever the environment says: the service is on this host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in SERVICES:
        print(f"usage: python -m shared.healthcheck {{{'|'.join(SERVICES)}}}", file=sys.stderr)
        return 1
    service = args[0]
    try:
        url = probe_url(service, os.environ if environ is None else environ)
    except SettingsError as exc:
        print(f"{service} healthcheck: {exc}", file=sys.stderr)
        return 1
    problem = probe(url)
    if problem is not None:
        print(f"{service} unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
