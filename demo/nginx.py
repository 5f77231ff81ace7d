"""A real nginx run from a prefix directory on loopback ports we pick (no root, no system
configuration touched), as the edge in front of the redirector.

The main nginx.conf (`render_main`) includes the edge agent's include
(`services.edge.nginx.render_include`), written here before nginx starts exactly as the
agent would write it, so the agent finds it current and reloads nothing: certificates are
read per handshake from `cert_dir`, where an edge agent (`python -m services.edge`,
`EDGE_CERT_DIR`) writes them from the certificate store. Without a `cert_dir`, nginx
gets a fresh one (`certificate_directory`), removed when it stops.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from demo.net import free_port, listening
from demo.processes import StartError
from services.edge.nginx import render_include


def worker_group() -> str | None:
    """The group nginx's workers run in when the master is started by root (they become
    `nobody`): the edge's certificate files must be readable by it. None: our own."""
    if os.geteuid() != 0:
        return None
    return grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name


def certificate_directory(prefix: str = "edge-certs-") -> Path:
    """A fresh directory nginx's workers can reach (pytest's tmp_path is 0700 to root,
    so not below it); the agent makes it 0750 for `worker_group()`. The caller removes it."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o711)
    return parent / "certs"


def render_main(prefix: Path, include: Path, *, workers: int = 1) -> str:
    """A complete nginx.conf for `nginx -p PREFIX -c nginx.conf -e stderr`, including `include`."""
    temp = prefix / "temp"
    return f"""\
worker_processes {workers};
pid "{prefix / 'nginx.pid'}";
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path "{temp / 'body'}";
    proxy_temp_path "{temp / 'proxy'}";
    fastcgi_temp_path "{temp / 'fastcgi'}";
    uwsgi_temp_path "{temp / 'uwsgi'}";
    scgi_temp_path "{temp / 'scgi'}";
    include "{include}";
}}
"""


class Nginx:
    """One nginx master (and its workers) under `prefix`; use as a context manager."""

    def __init__(self, prefix: Path, *, upstreams: list[str], http_port: int | None = None,
                 https_port: int | None = None, cert_dir: Path | None = None) -> None:
        self.prefix = prefix
        self._own_cert_dir = cert_dir is None
        self.cert_dir = cert_dir or certificate_directory()
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
        """What the edge agent runs when its include changed (`NGINX_RELOAD_COMMAND`)."""
        return self.command("-s", "reload")

    def start(self) -> Nginx:
        """Write the configuration, start nginx in the foreground, wait for both ports."""
        for sub in ("conf.d", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_main(self.prefix, self.include))
        self.include.write_text(render_include(
            cert_dir=self.cert_dir, https_listen=self.https_listen,
            http_listen=self.http_listen, upstreams=self.upstreams))
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

    def edge_env(self, edge_id: str = "edge-1") -> dict[str, str]:
        """The settings of the edge agent beside this nginx (`python -m services.edge`)."""
        return {"EDGE_ID": edge_id, "EDGE_CERT_DIR": str(self.cert_dir),
                "EDGE_CERT_GROUP": worker_group() or "", "NGINX_CONF_PATH": str(self.include),
                "NGINX_RELOAD_COMMAND": shlex.join(self.reload_command),
                "NGINX_HTTPS_LISTEN": self.https_listen, "NGINX_HTTP_LISTEN": self.http_listen,
                "NGINX_UPSTREAMS": ",".join(self.upstreams)}

    def stop(self) -> None:
        """Graceful stop (workers finish their requests), killed after 10 s; a certificate
        directory of its own is removed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._own_cert_dir:
            shutil.rmtree(self.cert_dir.parent, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
