"""The redirector process refuses to start, in one line, when its spool cannot be used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_unusable_spool_dir_stops_the_redirector_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    spool_dir = blocker / "spool"
    env = {**os.environ, "SPOOL_DIR": str(spool_dir), "TRACKING_HOST": "click.test",
           "LINK_KEYS": "k1:" + "s" * 40, "REDIRECTOR_BIND": "127.0.0.1:18997",
           "METRICS_BIND": "off", "AMQP_URL": "amqp://guest:guest@127.0.0.1:9/",
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    done = subprocess.run([sys.executable, "-m", "services.redirector"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"redirector: SPOOL_DIR {spool_dir} cannot be used: ")
    assert "Not a directory" in last
