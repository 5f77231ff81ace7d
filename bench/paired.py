"""Which of two trees' redirectors costs less CPU per click, measured at the same moment.

    git worktree add /tmp/base main                # the tree to compare against
    .venv/bin/python -m bench.paired /tmp/base     # this tree (B) against that one (A)
    .venv/bin/python -m bench.paired . --env-b CLICK_BATCH_SIZE=2000   # a setting, same tree
    .venv/bin/python -m bench.paired /tmp/base --minted \
        --env-b SCANNER_NETWORKS_FILE=bench/scanner-networks.cidr    # classification's cost

Run it from this tree's root. This machine's speed drifts within minutes
(docs/performance.md), so runs of A and then B measure the drift as much as the code.
Here both redirectors run at once, each with its own spool and one logger behind both
(the real pipeline: publish with confirms, commit), and every run loads both with their
own `wrk -t1 -c32` at the same time. The kernel shares the cores between them, so each
one's CPU time (utime + stime, from /proc) per 302 served compares their cost under
identical conditions. The two wrk processes swap order every run, and half way both
redirectors are restarted in the other order. Prints each run and the median ratio B/A
of CPU per click: below 1.0, this tree is cheaper.

Every response must be a 302 (a run with any other status stops the bench), and the rows
committed must match the 302s served.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.cpu import process_cpu
from bench.links import LINK_KEYS, TRACKING_HOST, check_redirects, make_links, write_paths
from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database, fresh_namespace, wait_rows
from bench.systems import running
from bench.wrk import BENCH, ROOT, summary, wrk_argv
from demo.net import free_port
from demo.processes import ServiceProcess


def load_both(ports: list[int], paths: Path, seconds: int, connections: int,
              out: Path) -> list[int]:
    """Both wrk at once; returns the 3xx each one counted."""
    outputs = [out / f"wrk-{i}.txt" for i in range(len(ports))]
    procs = [subprocess.Popen(wrk_argv(port, connections=connections, duration=seconds,
                                       paths_file=paths, latency=False),
                              stdout=path.open("w"), stderr=subprocess.STDOUT)
             for port, path in zip(ports, outputs, strict=True)]
    for proc in procs:
        proc.wait(seconds + 60)
    served = []
    for path in outputs:
        text = path.read_text()
        try:
            counts = summary(text)
        except ValueError:
            counts = None
        if counts is None or counts["status"]:
            raise RuntimeError(f"not every response was a 302:\n{text}")
        served.append(counts["requests"])
    return served


def cpu_seconds(pid: int) -> float:
    found = process_cpu(pid)
    if found is None:
        raise RuntimeError(f"process {pid} is gone")
    return found[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the tree to compare against (A); this "
                        "tree again to compare settings")
    parser.add_argument("--env-a", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for A's redirector only (repeatable)")
    parser.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for B's redirector only (repeatable)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--duration", type=int, default=6, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="per wrk")
    parser.add_argument("--minted", action="store_true",
                        help="links carry their minting time t (now): both trees read it, "
                             "a tree that classifies checks it on every click")
    args = parser.parse_args()
    trees = {"A": args.other.resolve(), "B": ROOT}
    own_env = {side: dict(item.split("=", 1) for item in items)
               for side, items in (("A", args.env_a), ("B", args.env_b))}
    servers = Servers.from_environment()
    (BENCH / "out").mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="paired-", dir=BENCH / "out"))
    links = make_links(20_000, minted_at=int(time.time()) if args.minted else None)
    paths = write_paths(links, out / "paths.txt")
    say(f"A = {trees['A']} {own_env['A'] or ''}, B = {trees['B']} {own_env['B'] or ''}; "
        f"logs in {out}")
    with (fresh_database(servers, "paired") as database,
          fresh_namespace(servers, "paired") as exchange):
        env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange,
               "DATABASE_URL": dsn(database), "METRICS_BIND": "off"}
        with running(ServiceProcess("logger", env, out)) as logger:
            logger.wait_for_log('"logger.started"', 30)
            total, ratios = 0, []
            for half, starting in enumerate((["A", "B"], ["B", "A"])):
                # Restarted, the other one first, half way: in A/A runs (the same tree on
                # both sides) the process started first was the cheaper one per click
                # (docs/performance.md).
                ports, pids = {}, {}
                with ExitStack() as stack:
                    for side in starting:
                        ports[side] = free_port()
                        proc = stack.enter_context(running(ServiceProcess(
                            "redirector", {
                                **env, "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": LINK_KEYS,
                                "SPOOL_DIR": str(out / f"spool-{side}"),
                                "REDIRECTOR_BIND": f"127.0.0.1:{ports[side]}", **own_env[side]},
                            out, cwd=trees[side])))
                        proc.wait_for_log('"broker.connected"', 30)
                        proc.wait_listening(ports[side])
                        check_redirects(ports[side], links[0][0], links[0][1]["url"])
                        pids[side] = proc.pid
                    total += 2 + sum(load_both(list(ports.values()), paths, 2,
                                               args.connections, out))  # pre-checks, warm-up
                    for run in range(half * args.runs // 2, (half + 1) * args.runs // 2):
                        order = ["A", "B"] if run % 2 == 0 else ["B", "A"]
                        before = {side: cpu_seconds(pids[side]) for side in order}
                        served = dict(zip(order, load_both([ports[s] for s in order], paths,
                                                           args.duration, args.connections,
                                                           out), strict=True))
                        total += sum(served.values())
                        cost = {side: (cpu_seconds(pids[side]) - before[side]) / served[side]
                                * 1e6 for side in order}
                        ratios.append(cost["B"] / cost["A"])
                        say(f"run {run + 1} ({starting[0]} started first): "
                            f"A {served['A'] / args.duration:,.0f} req/s {cost['A']:.1f} "
                            f"µs/click, B {served['B'] / args.duration:,.0f} req/s "
                            f"{cost['B']:.1f} µs/click; B/A {ratios[-1]:.3f}")
            say(f"CPU per click, B/A: median {statistics.median(ratios):.3f} over {args.runs} "
                f"runs (min {min(ratios):.3f}, max {max(ratios):.3f}); "
                f"{sum(r < 1 for r in ratios)} of {args.runs} runs below 1")
            rows, _ = wait_rows(database, total)
            # wrk does not count the requests in flight when it stops; they were served too.
            say(f"rows committed: {rows:,}; 302s counted by wrk: {total:,} "
                f"(difference {rows - total:+d})")
            if rows < total:
                raise RuntimeError("fewer rows than 302s")


if __name__ == "__main__":
    main()
