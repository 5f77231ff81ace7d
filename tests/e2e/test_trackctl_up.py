"""`trackctl up` runs every service as a child and shows their logs on one stream: each
line a child writes comes out whole, never two services' lines run together.

The children here are stand-ins that write long JSON log lines as fast as they can,
all at once (the real services write the same kind of lines, less often); the parent is
the real `trackctl up` code in its own process, its stderr a pipe as under systemd,
Docker or `| tee`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter

from demo.processes import ROOT

LINES = 300

# A child: LINES JSON lines of 1-20 KB, written by print() as structlog does, then it
# waits for the SIGTERM that `trackctl up` sends when it stops.
CHILD = f"""
import json, signal, sys, time
name = sys.argv[1]
for number in range({LINES}):
    print(json.dumps({{"service": name, "n": number, "pad": "x" * (1000 + 997 * number % 19000)}}),
          file=sys.stderr, flush=True)
signal.sigwait([signal.SIGTERM])
"""

PARENT = """
import os, sys
from trackctl import up
names = ("logger", "verifier", "certifier", "redirector")
sys.exit(up.run(os.environ, {name: [sys.executable, "-c", CHILD, name] for name in names}))
"""


def test_every_childs_log_line_comes_out_whole() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", f"CHILD = {CHILD!r}\n{PARENT}"], cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    assert parent.stderr is not None
    received = b""
    deadline = time.monotonic() + 60
    try:
        while received.count(b'"service"') < 4 * LINES and time.monotonic() < deadline:
            ready, _, _ = select.select([parent.stderr], [], [], 1.0)
            if ready:
                chunk = os.read(parent.stderr.fileno(), 1 << 20)
                if not chunk:
                    break
                received += chunk
    finally:
        parent.send_signal(signal.SIGTERM)
        _, rest = parent.communicate(timeout=60)
        received += rest or b""
    lines = [line for line in received.split(b"\n") if line and not line.startswith(b"trackctl:")]
    broken = []
    per_service: Counter[str] = Counter()
    for line in lines:
        try:
            per_service[json.loads(line)["service"]] += 1
        except ValueError:
            broken.append(line[:120] + b"..." + line[-60:])
    print(f"{len(lines)} lines, {len(broken)} broken; per service {dict(per_service)}")
    assert not broken, broken[:3]
    assert per_service == dict.fromkeys(("logger", "verifier", "certifier", "redirector"),
                                        LINES)
    assert parent.returncode == 0
