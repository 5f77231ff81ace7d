"""The click-path benchmark: the redirector and the logger beside their baselines, in one run.

    .venv/bin/python -m bench.run            # full run (~10 min), writes docs/performance.md
    .venv/bin/python -m bench.run --quick --no-docs   # smoke run of every step (~1 min)

Measured on this machine in `--runs` rounds: each round starts every HTTP system in
turn, warms it up, runs `wrk -t1 -c64 -d<duration>s --latency -s bench/paths.lua` once
(one wrk thread: on 2 cores the load generator competes with the server) and stops it.
Figures are medians over rounds; ratios are medians of the per-round ratios, so a
machine whose speed drifts during the bench (these do) affects both sides of a ratio:

1. HTTP, many distinct signed links, Host = TRACKING_HOST (bench/systems.py):
   nginx `return 302` (1 worker) · bare aiohttp + HMAC (uvloop, and plain asyncio) ·
   naive aiohttp + HMAC + one awaited INSERT per click (asyncpg pool of 20) ·
   the real redirector (`python -m services.redirector`) with the real logger
   (`python -m services.logger`) consuming, every click published with confirms and
   committed to PostgreSQL; rows are counted after every run and compared with wrk.
   Reported beside them: the bare handler on aiohttp's low-level server (which the
   redirector runs on), and two processes on one port (one per core) of the
   redirector and of the naive handler.
2. The logger from a pre-loaded queue (CloudEvents batches of 500, exactly as the
   redirector's forwarder publishes them) to committed rows, beside one asyncpg COPY
   of the same rows into an identical (freshly migrated) table (bench/logger.py).

Each system gets its own database (created, migrated with shared.db.migrate.upgrade,
dropped) and its own AMQP namespace (AMQP_EXCHANGE, deleted afterwards): bench/scratch.py.
Needs nginx and wrk on PATH, PostgreSQL and RabbitMQ on 127.0.0.1. The report
(bench/report.py) goes to bench/out/<run>/report.md and, unless --no-docs, between the
markers of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.links import make_links, write_paths
from bench.logger import bench_logger
from bench.measure import Config, SystemResult, merge
from bench.progress import say
from bench.report import DOC, report, write_doc
from bench.scratch import Servers
from bench.systems import bench_hmac, bench_naive, bench_nginx, bench_redirector
from bench.wrk import BENCH, ROOT

SYSTEMS = ("nginx", "hmac_uvloop", "hmac_lowlevel", "hmac_asyncio", "naive", "redirector",
           "naive_x2", "redirector_x2", "logger")


def main() -> None:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every HTTP system")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--links", type=int, default=50_000, help="distinct signed links")
    parser.add_argument("--logger-rows", type=int, default=200_000)
    parser.add_argument("--logger-runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--quick", action="store_true",
                        help="short smoke run: 3 s x 1 run, 1 s warm-up, 30k logger rows")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/performance.md")
    parser.add_argument("--profile", nargs="?", const="py-spy", metavar="PY_SPY",
                        help="also run py-spy (path to the binary) on the redirector, the "
                        "logger and the queue-draining logger during extra, unmeasured runs")
    parser.add_argument("--out", type=Path, help="where logs and wrk outputs go "
                        "(default bench/out/<timestamp>)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.runs, args.warmup = 3, 1, 1
        args.logger_rows, args.logger_runs = 30_000, 1
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y --no-install-recommends nginx wrk")
    servers = Servers.from_environment()
    if any(name in only for name in ("naive", "redirector", "logger")):
        servers.preflight()
    out = (args.out or BENCH / "out" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(duration=args.duration, runs=args.runs, warmup=args.warmup,
                 connections=args.connections, links=args.links,
                 logger_rows=args.logger_rows, logger_runs=args.logger_runs, out=out,
                 servers=servers, profile=args.profile)
    full_command = (".venv/bin/python -m bench.run " + shlex.join(sys.argv[1:])).strip()
    say(f"bench: output in {os.path.relpath(out, ROOT)}")
    links = make_links(cfg.links)
    cfg.paths_file = write_paths(links, out / "paths.txt")
    say(f"bench: {len(links):,} signed links, mean path length "
        f"{sum(len(t) + 3 for t, _ in links) / len(links):.0f} bytes")

    systems: dict[str, SystemResult] = {}
    logger = None
    # The redirector runs right after the bare handler and right before the naive
    # one: the machine's speed drifts over minutes, and the two target ratios pair
    # the redirector with those two, so they are measured as close in time as can be.
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("nginx", lambda: bench_nginx(cfg)),  # also gives "nginx_static"
        ("hmac_asyncio", lambda: bench_hmac(cfg, links, "asyncio")),
        ("hmac_lowlevel", lambda: bench_hmac(cfg, links, "uvloop", lowlevel=True)),
        ("hmac_uvloop", lambda: bench_hmac(cfg, links, "uvloop")),
        ("redirector", lambda: bench_redirector(cfg, links)),
        ("naive", lambda: bench_naive(cfg, links)),
        ("naive_x2", lambda: bench_naive(cfg, links, processes=2)),
        ("redirector_x2", lambda: bench_redirector(cfg, links, processes=2)),
    ]
    cfg.rounds, cfg.runs = cfg.runs, 1
    for number in range(cfg.rounds):
        cfg.round = number
        for name, step in steps:
            if name in only:
                say(f"bench: {name}, round {cfg.round + 1} of {cfg.rounds}")
                result = step()
                if isinstance(result, tuple):
                    merge(systems, name, result[0], cfg.round)
                    merge(systems, f"{name}_static", result[1], cfg.round)
                else:
                    merge(systems, name, result, cfg.round)
    if "logger" in only:
        say("bench: logger")
        logger = bench_logger(cfg, links)
    body = report(cfg, systems, logger, full_command, started)
    (out / "report.md").write_text(body + "\n")
    print()
    print(body)
    if not args.no_docs:
        write_doc(body)
        say(f"bench: wrote {os.path.relpath(DOC, ROOT)}")


if __name__ == "__main__":
    main()
