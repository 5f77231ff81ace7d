"""Every start-up failure is one line on stderr and a non-zero exit (README: "A missing or
malformed one stops the service at start with one line naming it; secrets are never
logged"), and a broker that is down costs one line per retry, never two.

Each case runs the real service process (`python -m services.<name>`) and reads what it
wrote, as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.net import free_port
from shared.settings import DatabaseSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("logger", "verifier", "certifier", "redirector")
SENTINEL = "Sentinel-Secret-0123456789abcdefXYZ"  # 35 characters
SHORT_SECRET = "ShortSecret0123"  # 15 characters, also a valid key id


def _env(tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {**os.environ, "TRACKING_HOST": "click.platform.test",
           "LINK_KEYS": "k1:" + "s" * 40, "CERT_STORE_KEYS": "c1:" + "c" * 40,
           "REDIRECTOR_BIND": f"127.0.0.1:{free_port()}",
           "METRICS_BIND": "off", "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
           "SPOOL_DIR": str(tmp_path / "spool"), "CERTBOT_DIR": str(tmp_path / "certbot"),
           "ACME_CHALLENGE_DIR": str(tmp_path / "challenges"),
           "DNS_NAMESERVERS": "127.0.0.1", "LOG_LEVEL": "INFO"}
    env.update(changes)
    return env


def _run(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{done.stderr[-3000:]}"
    assert done.stdout == ""
    return lines[0]


def _failure_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line saying why the service stopped: the last, after nothing but the
    service's ordinary start-up progress (JSON log lines at info)."""
    *before, last = done.stderr.splitlines() or [""]
    for line in before:
        assert json.loads(line)["level"] == "info", f"not start-up progress: {line[:500]}"
    assert done.stdout == ""
    return last


@pytest.mark.parametrize("service", SERVICES)
def test_a_non_numeric_port_in_database_url_is_one_line_and_status_2(
        service: str, tmp_path: Path) -> None:
    done = _run(service, _env(tmp_path,
                              DATABASE_URL=f"postgresql://app:{SENTINEL}@127.0.0.1:54x2/db"))
    line = _one_line(done)
    assert done.returncode == 2
    assert line.startswith(f"{service}: configuration error: DATABASE_URL "), line
    assert SENTINEL not in line


@pytest.mark.parametrize("service", ["logger", "verifier", "certifier"])
def test_postgresql_down_at_start_is_one_line_without_the_password(
        service: str, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    done = _run(service, _env(
        tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed}/td?password={SENTINEL}"))
    line = _failure_line(done)
    assert done.returncode == 1
    assert line.startswith(f"{service}: cannot reach the database at "), line
    assert f"127.0.0.1:{closed}" in line
    assert SENTINEL not in line


@pytest.mark.parametrize(("service", "changes"), [
    ("redirector", {"LINK_KEYS": f"{SENTINEL}:k2026"}),  # written secret:kid
    ("redirector", {"LINK_KEYS": f"{SHORT_SECRET}:k1"}),  # and a short secret at that
    ("redirector", {"LINK_KEYS": f"k1:{'s' * 40},{SHORT_SECRET}:k2"}),
    ("certifier", {"CERT_STORE_KEYS": f"{SENTINEL}:k2026"}),
    ("certifier", {"CERT_STORE_KEYS": f"c1:{SHORT_SECRET}"}),
    ("logger", {"AMQP_URL": f"amqp://guest@127.0.0.1:5672/?password={SENTINEL}"}),
    ("logger", {"DATABASE_URL": f"mysql://db/x?password={SENTINEL}"}),
])
def test_a_secret_in_an_odd_spelling_is_never_echoed(service: str, changes: dict[str, str],
                                                     tmp_path: Path) -> None:
    done = _run(service, _env(tmp_path, **changes))
    line = _one_line(done)
    assert done.returncode == 2
    assert line.startswith(f"{service}: configuration error: "), line
    assert SENTINEL not in line and SHORT_SECRET not in line


def test_each_broker_retry_is_one_line(tmp_path: Path) -> None:
    """With the broker down, the redirector keeps serving and retries the broker: each
    attempt is our one `broker.unreachable` warning, not that plus the AMQP library's
    own ERROR line about the same attempt."""
    closed = free_port()
    port = free_port()
    env = _env(tmp_path, AMQP_URL=f"amqp://guest:{SENTINEL}@127.0.0.1:{closed}/",
               REDIRECTOR_BIND=f"127.0.0.1:{port}")
    log_path = tmp_path / "redirector.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.redirector"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:  # attempts at about 0, 0.2, 0.6, 1.4 s after the start
            deadline = time.monotonic() + 30
            while log_path.read_text().count('"broker.unreachable"') < 4:
                assert time.monotonic() < deadline and process.poll() is None, \
                    log_path.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    output = log_path.read_text()
    lines = output.splitlines()
    retries = [line for line in lines if '"broker.unreachable"' in line]
    about_the_broker = [line for line in lines if str(closed) in line or "aiormq" in line
                        or "aio_pika" in line or "refused" in line]
    print("\n".join(lines))
    assert len(retries) >= 4, output[-3000:]
    assert about_the_broker == retries, (
        "lines about the broker that are not our one line per retry:\n"
        + "\n".join(line for line in about_the_broker if line not in retries))
    assert not [line for line in lines if '"level": "error"' in line]
    assert SENTINEL not in output
    assert process.returncode == 0


def test_a_redirector_bind_already_taken_is_one_line(tmp_path: Path,
                                                     database: DatabaseSettings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("redirector", _env(tmp_path, REDIRECTOR_BIND=f"127.0.0.1:{port}",
                                       DATABASE_URL=database.url))
    line = _failure_line(done)
    assert done.returncode == 1
    assert line.startswith(f"redirector: REDIRECTOR_BIND 127.0.0.1:{port} cannot be used: "), line
