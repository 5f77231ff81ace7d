"""`trackctl up`: run every service of the pipeline as child processes, for one machine.

Production runs each service on its own (compose, systemd); this is the one
command that brings the whole pipeline up locally. A child that dies stops the
rest, so a broken pipeline is never half up.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

SERVICES = ("logger", "verifier", "certifier", "redirector")


def available_services() -> list[str]:
    """The services this installation has (those not built yet are simply absent)."""
    found = []
    for name in SERVICES:
        try:
            if importlib.util.find_spec(f"services.{name}.__main__") is not None:
                found.append(name)
        except ModuleNotFoundError:
            pass
    return found


def run(environ: Mapping[str, str]) -> int:
    names = available_services()
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for name in names:
        children[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                          env=dict(environ))
    bind = environ.get("REDIRECTOR_BIND", "127.0.0.1:8080")
    print(f"trackctl: running {', '.join(names)}; the redirector listens on http://{bind}/ "
          "(Ctrl-C stops everything)", file=sys.stderr, flush=True)
    failed = None
    while not stopping and failed is None:
        for name, child in children.items():
            if child.poll() is not None:
                failed = name
                break
        time.sleep(0.2)
    if failed:
        print(f"trackctl: {failed} exited with status {children[failed].returncode}; "
              "stopping the others", file=sys.stderr)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(45)
        except subprocess.TimeoutExpired:
            child.kill()
    return 1 if failed else 0
