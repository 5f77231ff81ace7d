"""Load from wrk: its command line, and the summary bench/paths.lua prints at its end.

One wrk thread (`-t1`): on 2 cores the load generator competes with the server. The
paths script walks many distinct signed links (bench/links.py); the static one sends one
pre-built request, wrk's fastest mode, to show what picking paths in Lua costs wrk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from bench.links import TRACKING_HOST, USER_AGENT

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PATHS_LUA = BENCH / "paths.lua"
STATIC_LUA = BENCH / "static.lua"
_SUMMARY = re.compile(r"^BENCH_JSON (\{.*\})$", re.MULTILINE)


def wrk_argv(port: int, *, connections: int, duration: int, paths_file: Path | None = None,
             static: str | None = None, pace_ms: int = 0, latency: bool = True) -> list[str]:
    """wrk against 127.0.0.1:`port`: the links of `paths_file` (each connection pausing
    `pace_ms` on average after every response, if given), or one `static` path."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", *(["--latency"] if latency else []),
            "-H", f"Host: {TRACKING_HOST}", "-H", f"User-Agent: {USER_AGENT}"]
    if static is not None:  # one pre-built request, wrk's fastest mode
        return [*argv, "-s", str(STATIC_LUA), f"http://127.0.0.1:{port}{static}"]
    assert paths_file is not None
    paced = [str(pace_ms)] if pace_ms else []
    return [*argv, "-s", str(PATHS_LUA), f"http://127.0.0.1:{port}", "--", str(paths_file),
            *paced]


def shown(argv: list[str], paths_file: Path | None = None) -> str:
    """`argv` as the report prints it: paths relative to the repository, the port $PORT."""
    argv = [a.replace("http://127.0.0.1:0", "http://127.0.0.1:$PORT") for a in argv]
    if paths_file is not None:
        argv = [a.replace(str(paths_file), "bench/out/<run>/paths.txt") for a in argv]
    return shlex.join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)


def summary(output: str) -> dict[str, Any]:
    """The BENCH_JSON line of a run's output: requests, duration_us, status (responses not
    2xx/3xx), connect/read/write/timeout errors, p50_us/p90_us/p99_us/mean_us/max_us."""
    match = _SUMMARY.search(output)
    if match is None:
        raise ValueError(f"no BENCH_JSON line in wrk's output:\n{output}")
    return json.loads(match.group(1))
