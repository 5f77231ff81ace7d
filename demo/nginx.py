"""A real nginx run from a prefix directory on loopback ports we pick (no root, no system
configuration touched), as the edge in front of the redirector.

The main nginx.conf is the project's own (`services.certifier.nginx.render_main`);
the include starts as the generator's output for no domains, which already listens
on both ports, and the certifier rewrites it and reloads with `reload_command`, as it
does in production.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from demo.net import free_port, listening
from demo.processes import StartError
from services.certifier.nginx import render_main, render_sites


class Nginx:
    """One nginx master (and its workers) under `prefix`; use as a context manager."""

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
        """Plain HTTP (`NGINX_HTTP_LISTEN`): where the CA fetches HTTP-01 answers."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def https_listen(self) -> str:
        """HTTPS (`NGINX_HTTPS_LISTEN`): where clicks arrive."""
        return f"127.0.0.1:{self.https_port}"

    def command(self, *extra: str) -> list[str]:
        """nginx's command line for this prefix, with `extra` arguments."""
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", "stderr",
                *extra]

    @property
    def reload_command(self) -> list[str]:
        """What the certifier runs after rewriting the include (`NGINX_RELOAD_COMMAND`)."""
        return self.command("-s", "reload")

    def start(self) -> Nginx:
        """Write the configuration, start nginx in the foreground, wait for both ports."""
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
        while not (listening(self.http_port) and listening(self.https_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise StartError(f"nginx did not start:\n{self.log_text()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        """nginx's error log (stderr) so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Graceful stop (workers finish their requests), killed after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
