"""`trackctl up`: run every service of the pipeline as child processes, for one machine.

Production runs each service on its own (compose, systemd); this is the one
command that brings the whole pipeline up locally. A child that dies stops the
rest, so a broken pipeline is never half up.

When stderr is not a terminal (a pipe, a file, a journal), the children's JSON log
lines pass through this process and are written a whole line at a time: children
writing straight to a shared pipe ran long lines together (a pipe keeps writes whole
only up to 4 KiB, and print() writes a line and its newline apart). On a terminal
the children write to it themselves, readable lines as usual (a terminal takes each
write whole).
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from shared.settings import REDIRECTOR_BIND
from trackctl.settings import reader

SERVICES = ("logger", "classifier", "verifier", "certifier", "redirector", "edge")
# The one edge of a single machine, unless the environment names it (EDGE_ID).
LOCAL_EDGE_ID = "local"


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


MAX_LINE = 1 << 20  # a longer line is passed on in pieces of this size


class LineRelay:
    """Copies children's output to one stream, one whole line per write, under one lock."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def follow(self, stream: BinaryIO) -> None:
        thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _copy(self, stream: BinaryIO) -> None:
        with stream:
            for line in iter(lambda: stream.readline(MAX_LINE), b""):
                self.write(line)

    def write(self, line: bytes) -> None:
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def join(self, timeout_s: float) -> None:
        """Wait for the children's last lines (their streams end when they exit)."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def run(environ: Mapping[str, str],
        commands: Mapping[str, Sequence[str]] | None = None) -> int:
    """Run every service (or the given `commands`, by name) until Ctrl-C or one exits."""
    if commands is None:
        commands = {name: [sys.executable, "-m", f"services.{name}"]
                    for name in available_services()}
    names = list(commands)
    environ = {"EDGE_ID": LOCAL_EDGE_ID, **environ}
    host, port = reader(environ)[REDIRECTOR_BIND]
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.stderr.flush()
    relay = None if sys.stderr.isatty() else LineRelay(sys.stderr.buffer)

    def say(text: str) -> None:
        if relay is None:
            print(f"trackctl: {text}", file=sys.stderr, flush=True)
        else:
            relay.write(f"trackctl: {text}\n".encode())

    for name in names:
        if relay is None:
            children[name] = subprocess.Popen(list(commands[name]), env=dict(environ))
        else:
            children[name] = subprocess.Popen(list(commands[name]), env=dict(environ),
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            relay.follow(children[name].stdout)  # type: ignore[arg-type]
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    say(f"running {', '.join(names)}; the redirector listens on http://{bind}/ "
        "(Ctrl-C stops everything)")
    failed = None
    while not stopping and failed is None:
        for name, child in children.items():
            if child.poll() is not None:
                failed = name
                break
        time.sleep(0.2)
    if failed:
        say(f"{failed} exited with status {children[failed].returncode}; stopping the others")
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(45)
        except subprocess.TimeoutExpired:
            child.kill()
    if relay is not None:
        relay.join(5)
    return 1 if failed else 0
