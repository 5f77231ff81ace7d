"""deploy/nginx in a real nginx: the compose nginx.conf around the edge agent's include, and
the reload handshake between the edge agent (reload-request.sh as its NGINX_RELOAD_COMMAND,
driven by its own `ensure_include`) and the watcher beside nginx (reload-watcher.sh). The
agent reloads only when its include changed (at start); certificates are files nginx
reads per handshake, never a reload.

The compose file's paths are rewritten to a prefix under tmp_path; everything else is the
shipped files, run by /bin/sh as in the nginx container.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.net import free_port
from demo.nginx import certificate_directory, worker_group
from services.edge.nginx import CertificateFiles, NginxError, ensure_include, render_include
from shared.handshake import presented_serial
from tests.support.certificates import self_signed_pem

ROOT = Path(__file__).resolve().parents[2]

DEPLOY = ROOT / "deploy" / "nginx"
NAME = "track.customer-a.test"


@dataclass
class Edge:
    """nginx with the compose nginx.conf, and its reload watcher."""

    tmp: Path
    tracking: Path  # the nginx-generated volume
    command: str  # NGINX_CMD: how the watcher runs nginx
    status_port: int
    http_port: int
    https_port: int
    heartbeat: Path
    hosts_file: Path  # what the fake getent answers for the redirector name
    cert_dir: Path  # the agent's EDGE_CERT_DIR
    nginx: subprocess.Popen[bytes] | None = None
    watcher: subprocess.Popen[bytes] | None = None

    @property
    def watcher_log(self) -> Path:
        return self.tmp / "watcher.log"

    @property
    def include(self) -> Path:
        return self.tracking / "tracking-domains.conf"

    def text(self) -> str:
        """The agent's include for this edge (what it writes at start)."""
        return render_include(cert_dir=self.cert_dir, https_listen=f"127.0.0.1:{self.https_port}",
                              http_listen=f"127.0.0.1:{self.http_port}",
                              upstreams=["127.0.0.1:8080"])

    async def ensure(self, text: str) -> bool:
        """The agent's start: write the include, reload through the watcher if it changed."""
        return await ensure_include(
            self.include, text, ["sh", str(DEPLOY / "reload-request.sh"), str(self.tracking)])

    def start_watcher(self) -> None:
        env = {**os.environ, "NGINX_CMD": self.command, "WATCH_INTERVAL_S": "0.05",
               "HEARTBEAT_FILE": str(self.heartbeat), "UPSTREAM_HOSTS": "redirector.test",
               "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}",
               "FAKE_HOSTS": str(self.hosts_file)}
        self.watcher = subprocess.Popen(
            ["sh", str(DEPLOY / "reload-watcher.sh"), str(self.tracking)], env=env,
            stdout=subprocess.DEVNULL, stderr=self.watcher_log.open("ab"))

    def stop_watcher(self) -> None:
        if self.watcher is not None and self.watcher.poll() is None:
            self.watcher.kill()
            self.watcher.wait(5)


def _compose_conf_for(prefix: Path, tracking: Path, status_port: int) -> str:
    """deploy/nginx/nginx.conf with the container's paths and port moved under `prefix`."""
    text = (DEPLOY / "nginx.conf").read_text()
    temp = prefix / "temp"
    replacements = {
        "user nginx;\n": "",  # the tests' nginx runs as whoever runs the tests
        "pid /var/run/nginx.pid;": f"pid {prefix / 'nginx.pid'};",
        "listen 127.0.0.1:8081;": f"listen 127.0.0.1:{status_port};",
        "/etc/nginx/deploy/sites/": f"{DEPLOY / 'sites'}/",
        "/etc/nginx/tracking/": f"{tracking}/",
        "http {\n": "http {\n" + "".join(
            f"    {kind}_temp_path {temp / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


def _get(url: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is not installed (scripts/test installs it)"
    prefix, tracking = tmp_path / "nginx", tmp_path / "tracking"
    for directory in (prefix / "temp", tracking, tmp_path / "bin"):
        directory.mkdir(parents=True)
    status_port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_compose_conf_for(prefix, tracking, status_port))
    # getent as the watcher calls it (`getent ahostsv4 NAME`), answering from a file.
    fake = tmp_path / "bin" / "getent"
    fake.write_text('#!/bin/sh\ncat "$FAKE_HOSTS"\n')
    fake.chmod(0o755)
    hosts = tmp_path / "hosts"
    hosts.write_text("10.9.0.1 STREAM redirector.test\n")
    command = f"{binary} -p {prefix}/ -c {conf} -e stderr"
    cert_dir = certificate_directory("deploy-edge-")
    found = Edge(tmp=tmp_path, tracking=tracking, command=command, status_port=status_port,
                 http_port=free_port(), https_port=free_port(),
                 heartbeat=tmp_path / "alive", hosts_file=hosts, cert_dir=cert_dir)
    log = (tmp_path / "nginx.log").open("wb")
    found.nginx = subprocess.Popen([*command.split(), "-g", "daemon off;"], stdout=log,
                                   stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{status_port}/healthz") == 200, 10,
              "nginx's status port")
        found.start_watcher()
        _wait(found.heartbeat.exists, 10, "the watcher's first loop")
        yield found
    finally:
        found.stop_watcher()
        if found.nginx.poll() is None:
            found.nginx.send_signal(signal.SIGQUIT)
            try:
                found.nginx.wait(10)
            except subprocess.TimeoutExpired:
                found.nginx.kill()
        print("----- nginx -----\n" + (tmp_path / "nginx.log").read_text(errors="replace"))
        if found.watcher_log.exists():
            print("----- watcher -----\n" + found.watcher_log.read_text(errors="replace"))
        shutil.rmtree(cert_dir.parent, ignore_errors=True)


def test_nginx_starts_before_the_edge_agent_wrote_anything_and_is_healthy(edge: Edge) -> None:
    assert not list(edge.tracking.glob("*.conf"))
    result = subprocess.run(
        ["sh", str(DEPLOY / "healthcheck.sh")], capture_output=True, text=True, timeout=10,
        env={**os.environ, "HEALTH_URL": f"http://127.0.0.1:{edge.status_port}/healthz",
             "HEARTBEAT_FILE": str(edge.heartbeat)}, check=False)
    assert result.returncode == 0, result.stderr
    edge.stop_watcher()
    os.utime(edge.heartbeat, (time.time() - 60, time.time() - 60))
    result = subprocess.run(
        ["sh", str(DEPLOY / "healthcheck.sh")], capture_output=True, text=True, timeout=10,
        env={**os.environ, "HEALTH_URL": f"http://127.0.0.1:{edge.status_port}/healthz",
             "HEARTBEAT_FILE": str(edge.heartbeat)}, check=False)
    assert result.returncode != 0 and "watcher silent" in result.stderr


async def test_the_edge_agent_reloads_nginx_through_the_watcher_only_for_its_include(
        edge: Edge) -> None:
    # The first include: it appears, nginx loads it, the catch-all answers.
    good = edge.text()
    assert await edge.ensure(good) is True
    _wait(lambda: _get(f"http://127.0.0.1:{edge.http_port}/anything") == 301, 10,
          "the generated HTTP server")
    assert await edge.ensure(good) is False  # unchanged: no reload asked

    # A certificate: one file, presented at the next handshake, no reload.
    files = CertificateFiles(edge.cert_dir, group=worker_group())
    files.prepare()
    chain, key = self_signed_pem(NAME, serial=0xC0FFEE)
    files.write(NAME, chain.encode("ascii"), key)
    deadline = time.monotonic() + 10
    while await presented_serial("127.0.0.1", edge.https_port, NAME) != "c0ffee":
        assert time.monotonic() < deadline, "nginx never presented the new certificate"
        await asyncio.sleep(0.05)

    # An include nginx refuses: the agent hears nginx's reason and puts its file back;
    # nginx never loaded it and keeps serving.
    with pytest.raises(NginxError, match="no_such_directive"):
        await edge.ensure(good + "no_such_directive on;\n")
    assert edge.include.read_text() == good
    assert await presented_serial("127.0.0.1", edge.https_port, NAME) == "c0ffee"
    assert not list(edge.tracking.glob("reload-*")), "handshake files left behind"


async def test_concurrent_requests_are_all_answered(edge: Edge) -> None:
    assert await edge.ensure(edge.text()) is True
    requests = [await asyncio.create_subprocess_exec(
        "sh", str(DEPLOY / "reload-request.sh"), str(edge.tracking),
        stderr=asyncio.subprocess.PIPE) for _ in range(5)]
    results = await asyncio.gather(*(request.communicate() for request in requests))
    assert [request.returncode for request in requests] == [0] * 5, results


async def test_no_watcher_means_a_failed_reload_not_a_hang(edge: Edge) -> None:
    edge.stop_watcher()
    started = time.monotonic()
    request = await asyncio.create_subprocess_exec(
        "sh", str(DEPLOY / "reload-request.sh"), str(edge.tracking),
        env={**os.environ, "RELOAD_WAIT_S": "1"}, stderr=asyncio.subprocess.PIPE)
    _, stderr = await request.communicate()
    assert request.returncode == 1
    assert b"no nginx answered" in stderr
    assert time.monotonic() - started < 5
    assert not list(edge.tracking.glob("reload-request.*")), "a stale request was left"


async def test_a_change_in_the_redirectors_addresses_reloads_nginx(edge: Edge) -> None:
    assert await edge.ensure(edge.text()) is True
    edge.hosts_file.write_text("10.9.0.1 STREAM redirector.test\n"
                               "10.9.0.2 STREAM redirector.test\n")
    _wait(lambda: "upstream addresses now 10.9.0.1 10.9.0.2 : reload ok"
          in edge.watcher_log.read_text(), 10, "a reload for the new replica")
