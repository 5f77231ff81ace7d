"""The click path's throughput with the destination watch on (this tree) against a tree
without it (A), both loaded at the same moment.

    git worktree add /tmp/base HEAD~N           # the parent of the watch's commits
    .venv/bin/python -m bench.destinations /tmp/base

Two whole pipelines run side by side, each in its own AMQP namespace and database: A is
the other tree's redirector and logger (no destination queue exists there); B is this
tree's redirector and logger plus a verifier whose destination watch reads its copy of
every click and asks a DBL zone on a loopback DNS server (`demo/blocklists.py`) about the
destinations, two of which are listed. Every run loads both redirectors with their own
`wrk -t1 -c32` at once (the two swap their start order each run, and half way both
redirectors are restarted in the other order, as in bench.paired), so the machine's drift
(docs/performance.md) hits both alike. Prints per run and as medians over runs:

- each side's 302s per second, and B/A: the click path's throughput;
- each side's CPU per click (its redirector and logger), and B/A;
- B's verifier's CPU per click, less what it uses with no clicks at all (its recheck,
  census and reputation loops, measured for 5 s before the runs).

The kernel shares the two cores between everything, so the verifier's CPU slows A as much
as B: the throughput ratio shows whether the watch holds the click path back (it must
not: it is off the path), the verifier's CPU per click what the watch costs the machine.
RabbitMQ serves both namespaces, so its extra work for B's second queue is not in B's
figures; its total is printed. Rows committed must match the 302s served on both sides,
and B's watch must have told each customer linking to a listed destination, once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.cpu import cpu_snapshot
from bench.links import LINK_KEYS, TRACKING_HOST, check_redirects, make_links, write_paths
from bench.paired import cpu_seconds, load_both
from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database, fresh_namespace, wait_rows
from bench.systems import running
from bench.wrk import BENCH, ROOT
from demo.blocklists import ListZones
from demo.databases import fetch
from demo.dns import DnsServer
from demo.net import free_port
from demo.processes import ServiceProcess
from demo.scratch import admin_execute, settings_for
from shared.settings import DatabaseSettings

# bench/links.py sends customer i % 20 to shop{i % 20}.example: these two are listed.
LISTED = {"shop3.example": "phishing", "shop7.example": "malware"}
_MIGRATE = ("import asyncio, sys; from shared.db.migrate import upgrade; "
            "from shared.settings import DatabaseSettings; "
            "asyncio.run(upgrade(DatabaseSettings(url=sys.argv[1])))")


@contextmanager
def database_of(tree: Path, servers: Servers) -> Iterator[DatabaseSettings]:
    """A scratch database migrated by `tree`'s own migrations (A's schema is older)."""
    name = f"bench_dest_a_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(servers.admin_database_url, f'CREATE DATABASE "{name}"'))
    try:
        database = settings_for(servers.admin_database_url, name)
        subprocess.run([sys.executable, "-c", _MIGRATE, database.url], cwd=tree, check=True,
                       timeout=120)
        yield database
    finally:
        asyncio.run(admin_execute(servers.admin_database_url,
                                  f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def listings(database: DatabaseSettings) -> int:
    found = asyncio.run(fetch(database, "SELECT count(*) AS n FROM destination_listings"))
    return int(found[0]["n"])


def measure_run(run: int, args: argparse.Namespace, pids: dict[str, dict[str, int]],
                verifier: int, ports: dict[str, int], paths: Path, out: Path,
                idle_rate: float, served_total: dict[str, int], rates: list[float],
                costs: list[float], watch_costs: list[float]) -> None:
    """One run: both wrk at once; each side's throughput and CPU per click."""
    order = ["A", "B"] if run % 2 == 0 else ["B", "A"]
    own = {**{f"{s}-{k}": pid for s in ("A", "B") for k, pid in pids[s].items()},
           "verifier": verifier}
    before_all = cpu_snapshot(own)
    before = {label: cpu_seconds(pid) for label, pid in own.items()}
    counts = load_both([ports[s] for s in order], paths, args.duration, args.connections, out)
    after_all = cpu_snapshot(own)
    used = {label: cpu_seconds(pid) - before[label] for label, pid in own.items()}
    served = dict(zip(order, counts, strict=True))
    for side in ("A", "B"):
        served_total[side] += served[side]
    cost = {side: (used[f"{side}-redirector"] + used[f"{side}-logger"]) / served[side] * 1e6
            for side in ("A", "B")}
    watch = max(0.0, used["verifier"] - idle_rate * args.duration) / served["B"] * 1e6
    rabbit = sum(sec - before_all.get(pid, (label, 0.0))[1]
                 for pid, (label, sec) in after_all.items() if label == "rabbitmq")
    other = sum(sec - before_all.get(pid, (label, 0.0))[1]
                for pid, (label, sec) in after_all.items() if label == "other")
    rates.append(served["B"] / served["A"])
    costs.append(cost["B"] / cost["A"])
    watch_costs.append(watch)
    say(f"run {run + 1} ({order[0]} first): A {served['A'] / args.duration:,.0f} req/s "
        f"{cost['A']:.1f} µs/click; B {served['B'] / args.duration:,.0f} req/s "
        f"{cost['B']:.1f} µs/click + verifier {watch:.2f} µs/click; B/A throughput "
        f"{rates[-1]:.3f}, CPU per click {costs[-1]:.3f}; rabbitmq "
        f"{rabbit / args.duration * 100:.0f}%, other jobs {other / args.duration * 100:.0f}% "
        "of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the tree without the watch (A)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--duration", type=int, default=6, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="per wrk")
    args = parser.parse_args()
    trees = {"A": args.other.resolve(), "B": ROOT}
    servers = Servers.from_environment()
    servers.preflight()
    (BENCH / "out").mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="destinations-", dir=BENCH / "out"))
    for side in ("A", "B"):
        (out / side).mkdir()
    links = make_links(20_000)
    paths = write_paths(links, out / "paths.txt")
    say(f"A = {trees['A']}, B = {trees['B']} (destination watch on); logs in {out}")
    with (DnsServer() as dns, database_of(trees["A"], servers) as db_a,
          fresh_database(servers, "dest_b") as db_b,
          fresh_namespace(servers, "dest_a") as ex_a, fresh_namespace(servers, "dest_b") as ex_b,
          ExitStack() as stack):
        zones = ListZones(dns, dbl="dbl.bench.test")
        for name, category in LISTED.items():
            zones.list("dbl", name, category)
        envs = {side: {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange,
                       "DATABASE_URL": dsn(database), "METRICS_BIND": "off"}
                for side, exchange, database in (("A", ex_a, db_a), ("B", ex_b, db_b))}
        pids: dict[str, dict[str, int]] = {"A": {}, "B": {}}
        for side in ("A", "B"):
            logger = stack.enter_context(running(ServiceProcess(
                "logger", envs[side], out / side, cwd=trees[side])))
            logger.wait_for_log('"logger.started"', 30)
            pids[side]["logger"] = logger.pid
        verifier = stack.enter_context(running(ServiceProcess("verifier", {
            **envs["B"], "TRACKING_HOST": TRACKING_HOST, "DNS_NAMESERVERS": dns.address,
            "REPUTATION_LISTS": f"dbl={zones.zones['dbl']}",
            "REPUTATION_NAMESERVERS": dns.address}, out / "B")))
        verifier.wait_for_log('"verifier.started"', 30)
        # The verifier's own loops (recheck, census, reputation) cost CPU with no clicks at
        # all: measured first, and taken off its figure per click.
        idle_before, idle_s = cpu_seconds(verifier.pid), 5.0
        time.sleep(idle_s)
        idle_rate = (cpu_seconds(verifier.pid) - idle_before) / idle_s
        say(f"verifier with no clicks: {idle_rate * 100:.2f}% of a core")
        served_total = {"A": 0, "B": 0}
        rates: list[float] = []
        costs: list[float] = []
        watch_costs: list[float] = []
        for half, starting in enumerate((["A", "B"], ["B", "A"])):
            # Restarted half way, the other one first: in A/A runs of bench.paired the
            # process started first was the cheaper one per click (docs/performance.md).
            ports: dict[str, int] = {}
            with ExitStack() as redirectors:
                for side in starting:
                    ports[side] = free_port()
                    proc = redirectors.enter_context(running(ServiceProcess("redirector", {
                        **envs[side], "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": LINK_KEYS,
                        "SPOOL_DIR": str(out / side / "spool"),
                        "REDIRECTOR_BIND": f"127.0.0.1:{ports[side]}"},
                        out / side, cwd=trees[side])))
                    proc.wait_for_log('"broker.connected"', 30)
                    proc.wait_listening(ports[side])
                    check_redirects(ports[side], links[0][0], links[0][1]["url"])
                    served_total[side] += 1
                    pids[side]["redirector"] = proc.pid
                warm = load_both([ports["A"], ports["B"]], paths, 2, args.connections, out)
                served_total["A"] += warm[0]
                served_total["B"] += warm[1]
                for run in range(half * args.runs // 2, (half + 1) * args.runs // 2):
                    measure_run(run, args, pids, verifier.pid, ports, paths, out, idle_rate,
                                served_total, rates, costs, watch_costs)
        say(f"throughput B/A: median {statistics.median(rates):.3f} over {args.runs} runs "
            f"(min {min(rates):.3f}, max {max(rates):.3f}); CPU per click (redirector + "
            f"logger) B/A: median {statistics.median(costs):.3f}; the watch (verifier, "
            f"its idle CPU taken off): median {statistics.median(watch_costs):.2f} µs per "
            "click")
        for side, database in (("A", db_a), ("B", db_b)):
            rows, _ = wait_rows(database, served_total[side])
            say(f"{side}: rows committed {rows:,}; 302s counted by wrk {served_total[side]:,} "
                f"(difference {rows - served_total[side]:+d})")
            if rows < served_total[side]:
                raise RuntimeError(f"{side}: fewer rows than 302s")
        # Each customer whose links lead to a listed destination, told once.
        expected = len(LISTED)
        told = listings(db_b)
        say(f"B: destination.listed published {told} (expected {expected})")
        if told != expected:
            raise RuntimeError("the destination watch did not tell what it should have")


if __name__ == "__main__":
    main()
