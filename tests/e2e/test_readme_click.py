"""The README's first click, run as written: its shell lines mint a link with the real
`trackctl`, click it with curl against the real redirector, and show the stored click
with `trackctl clicks`, counted as a bot as the README says."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

from demo.databases import fetch
from demo.net import free_port
from demo.processes import ROOT, ServiceProcess
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TEST_LINK_KEYS, service_env


def _readme_click_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index("Then mint and click a link"):]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block is not None
    return block.group(1).strip().splitlines()


def test_the_readme_click_redirects_and_shows_as_one_bot_click(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    port = free_port()
    env = service_env(broker, database, tmp_path, TRACKING_HOST="localhost",
                      REDIRECTOR_BIND=f"127.0.0.1:{port}")
    # The README runs from the checkout, with scripts/run's development key file.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-link-keys").write_text(TEST_LINK_KEYS.split(",")[0] + "\n")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    lines = [line.replace("8080", str(port)) for line in _readme_click_lines()]
    clicks_at = next(n for n, line in enumerate(lines) if "trackctl clicks" in line)
    with ServiceProcess("logger", env, tmp_path) as logger, \
            ServiceProcess("redirector", env, tmp_path) as redirector:
        redirector.wait_http(f"http://127.0.0.1:{port}/healthz")
        logger.wait_for_log("logger.started")
        shell = {**os.environ, **env}
        shell.pop("LINK_KEYS")  # the README's own export sets it
        # Up to the curl, then (once the logger had its moment) the rest, as a person
        # would type them: one shell, so `url` carries over.
        script = "\n".join([*lines[:clicks_at], "sleep 2", *lines[clicks_at:]])
        done = subprocess.run(["bash", "-euc", script], cwd=tmp_path, env=shell,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert re.search(rf"^http://localhost:{port}/t/v1\.k2026\.", done.stdout, re.M)
    assert "HTTP/1.1 302 Found" in done.stdout
    assert "Location: https://example.com/sale?x=1" in done.stdout
    rows = _rows(database)
    assert [(r["campaign_id"], r["bot"], r["bot_reason"]) for r in rows] == [
        ("spring", True, "user-agent:curl")]
    report = done.stdout[done.stdout.index("HTTP/1.1 302"):]
    assert "user-agent:curl" in report and re.search(r"bot\D*1", report), report


def _rows(database: DatabaseSettings) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline and not rows:
        rows = [dict(r) for r in asyncio.run(fetch(
            database, "SELECT campaign_id, bot, bot_reason FROM tracking_logs"))]
        time.sleep(0.1)
    return rows
