"""A real nginx for tests, run from a prefix directory on loopback ports the test picks.

The main nginx.conf is the project's own (`services.certifier.nginx.render_main`);
the include starts as the generator's output for no domains, which already listens
on both ports, and the certifier rewrites it and reloads with `reload_command`.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from services.certifier.nginx import render_main, render_sites
from tests.support.proxy import free_port


class Nginx:
    def __init__(self, prefix: Path, *, upstreams: list[str], http_port: int | None = None,
                 https_port: int | None = None) -> None:
        self.prefix = prefix
        self.http_port = http_port or free_port()
        self.https_port = https_port or free_port()
        self.upstreams = upstreams
        self.conf = prefix / "nginx.conf"
        self.include = prefix / "conf.d" / "tracking-domains.conf"
        self.log_path = prefix / "nginx.log"
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_listen(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def https_listen(self) -> str:
        return f"127.0.0.1:{self.https_port}"

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", "stderr",
                *extra]

    @property
    def reload_command(self) -> list[str]:
        return self.command("-s", "reload")

    def start(self) -> Nginx:
        for sub in ("conf.d", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_main(self.prefix, self.include))
        self.include.write_text(render_sites([], https_listen=self.https_listen,
                                             http_listen=self.http_listen,
                                             upstreams=self.upstreams))
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.command("-g", "daemon off;"), stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while not (_listening(self.http_port) and _listening(self.https_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start:\n{self.log_text()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
