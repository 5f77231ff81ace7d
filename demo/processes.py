"""The processes of the local world: the services (one `python -m services.<name>` child
each) and any other child kept the same way (the benchmarks' baseline servers).

The demo, the end-to-end and fault tests and the benchmarks all run the services as
real processes (their own settings parsing, signals, logs), never in-process, so what
they show is what a deployment runs. Each child's output goes to a log file, which is
how callers wait for it to be ready and what they show when it is not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from demo.net import listening

ROOT = Path(__file__).resolve().parents[1]


class StartError(RuntimeError):
    """A process of the local world exited early or never became ready (message: why,
    with the tail of its log)."""


class ChildProcess:
    """One child process (`argv`), its output kept in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.cwd = cwd or ROOT
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the child (not waiting for it: see `wait_for_log`, `wait_http`)."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by terminate() or kill()
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )
        return self

    def log_text(self) -> str:
        """Everything the child has written so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout_s: float = 20.0) -> None:
        """Wait until the log holds `needle` (e.g. the service's `<name>.started` event)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            self._raise_if_exited()
            time.sleep(0.05)
        raise StartError(f"{self.name} did not log {needle!r}:\n{self.log_text()[-4000:]}")

    def wait_http(self, url: str, timeout_s: float = 20.0) -> None:
        """Wait until `url` answers (any status), e.g. the redirector's /healthz."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartError(f"{self.name} never answered {url}:\n{self.log_text()[-4000:]}")

    def wait_listening(self, port: int, timeout_s: float = 20.0) -> None:
        """Wait until something accepts TCP connections on 127.0.0.1:`port`."""
        deadline = time.monotonic() + timeout_s
        while not listening(port):
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} never listened on {port}:\n"
                                 f"{self.log_text()[-4000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The child's process id (it must have been started)."""
        assert self.process is not None
        return self.process.pid

    def _raise_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise StartError(f"{self.name} exited early:\n{self.log_text()[-4000:]}")

    def terminate(self, timeout_s: float = 40.0) -> int:
        """SIGTERM and wait: the graceful path. Returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class ServiceProcess(ChildProcess):
    """One `python -m services.<name>` child, its output kept in a log file."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path,
                 cwd: Path | None = None) -> None:
        super().__init__(name, [sys.executable, "-m", f"services.{name}"], env, log_dir, cwd)


def count_lines(text: str, *needles: str) -> int:
    """Log lines holding every needle (service logs are JSON, one event a line)."""
    return sum(1 for line in text.splitlines() if all(n in line for n in needles))
