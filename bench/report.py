"""The report: the figures of a bench run as Markdown, written between the `bench:` markers
of docs/performance.md (text outside them is kept), with the machine, the code measured,
the targets met or missed, and every command needed to repeat a run by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.logger import COPY_VARIANTS, FORWARD_BATCH, LoggerRun
from bench.measure import PACE_SHARE, Config, SystemResult, paired_ratio, wrk_command
from bench.scratch import Servers
from bench.wrk import ROOT
from demo.scratch import asyncpg_dsn

DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

TARGETS = {
    "redirector_vs_naive": 3.0,    # redirector >= 3x naive insert-per-click
    "redirector_vs_hmac": 0.60,    # redirector >= 60% of bare aiohttp+HMAC (uvloop)
    "redirector_p99_ms": 5.0,      # p99 < 5 ms at 64 connections
    "logger_vs_copy": 0.50,        # logger >= 50% of raw COPY
}


def paced_table(cfg: Config, systems: dict[str, SystemResult],
                add: Callable[[str], None]) -> None:
    """Latency at the same fixed offered load, bare handler beside the redirector."""
    paced = {name: systems[name].paced for name in ("hmac_uvloop", "redirector")
             if name in systems and systems[name].paced is not None}
    if len(paced) < 2:
        return
    add(f"Latency at a fixed offered load (not saturation): every connection waits a random "
        f"time (exponential, mean {cfg.pace_ms} ms; a fixed pause puts the connections in "
        f"step) after each response before its next request, a mean chosen so "
        f"the {cfg.connections} connections offer about {PACE_SHARE:.0%} of what the bare "
        f"handler sustained in this run; one {cfg.duration} s run each:")
    add("")
    add("| system | req/s served | p50 ms | p99 ms | max ms |")
    add("|---|---:|---:|---:|---:|")
    for name, run in paced.items():
        assert run is not None
        add(f"| {systems[name].label} | {run.rps:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | "
            f"{run.max_ms:.2f} |")
    bare, ours = paced["hmac_uvloop"], paced["redirector"]
    assert bare is not None and ours is not None
    add("")
    add(f"- redirector p99 at this load: {ours.p99_ms:.2f} ms, {ours.p99_ms / bare.p99_ms:.2f}x "
        f"the bare handler's {bare.p99_ms:.2f} ms (reported; the target above is at "
        f"saturation).")
    add("")



def versions(servers: Servers) -> dict[str, str]:
    """The machine and the software measured, for the report's first lines."""
    def out(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))

    async def pg_version() -> str:
        connection = await asyncpg.connect(asyncpg_dsn(servers.admin_database_url))
        try:
            pg = await connection.fetchval("SHOW server_version")
            sync = await connection.fetchval("SHOW synchronous_commit")
        finally:
            await connection.close()
        return f"{pg} (synchronous_commit={sync})"

    pg = "?"
    with contextlib.suppress(Exception):
        pg = asyncio.run(pg_version())
    rabbit = out(["rabbitmqctl", "-q", "version"])
    import aiohttp
    import uvloop

    return {"cpu": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "uvloop": uvloop.__version__, "asyncpg": asyncpg.__version__,
            "nginx": out(["nginx", "-v"]), "wrk": out(["wrk", "-v"]),
            "postgresql": pg, "rabbitmq": rabbit}


def code_revision() -> str:
    """The commit measured, and which files under services/ and shared/ differed from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
        return done.stdout.strip()

    with contextlib.suppress(Exception):
        head = git("log", "-1", "--format=%h %s")[:90]
        status = git("status", "--porcelain", "--", "services", "shared")
        changed = [line.split(maxsplit=1)[-1] for line in status.splitlines()]
        if changed:
            return (f"`{head}` plus uncommitted changes to {len(changed)} file(s) under "
                    f"services/ and shared/ ({', '.join(changed[:8])}"
                    f"{', ...' if len(changed) > 8 else ''})")
        return f"`{head}` (services/ and shared/ clean)"
    return "?"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(cfg: Config, systems: dict[str, SystemResult], logger: dict[str, Any] | None,
           full_command: str, started: float) -> str:
    """The Markdown of a run; `started` is its time.monotonic() at the start."""
    lines: list[str] = []
    add = lines.append
    add(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{full_command}` "
        f"(total {time.monotonic() - started:.0f} s).")
    add("")
    add("Machine: " + "; ".join(f"{k} {v}" for k, v in versions(cfg.servers).items()) + ".")
    add(f"Code measured: {code_revision()}.")
    add("Everything (wrk, servers, PostgreSQL, RabbitMQ) shares the same 2 cores over loopback;")
    add("wrk runs with one thread and takes a large share of one core (see the CPU column).")
    add("")
    verdicts: list[tuple[str, str, bool]] = []
    if systems:
        add(f"## HTTP: wrk -t1 -c{cfg.connections}, {cfg.duration} s runs, {cfg.rounds} rounds "
            f"(every system once per round, in turn; a {cfg.warmup} s warm-up before each "
            f"run), {cfg.links:,} distinct signed links")
        add("")
        add("| system | req/s (median) | p50 ms | p99 ms | runs: req/s, p99 ms | non-2xx/3xx | "
            "socket errors | CPU µs/request: server, all server-side | CPU % of one core "
            "(medians) |")
        add("|---|---:|---:|---:|---|---:|---:|---:|---|")
        # Rows in a fixed order (ceiling, baselines, ours), whatever order they ran in.
        order = {name: n for n, name in enumerate(
            ("nginx", "nginx_static", "hmac_uvloop", "hmac_lowlevel", "hmac_asyncio", "naive",
             "redirector", "naive_x2", "redirector_x2"))}
        systems = dict(sorted(systems.items(), key=lambda item: order.get(item[0], 99)))
        for result in systems.values():
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in result.cpu().items()
                            if v >= 1 and k not in ("bench",))
            own, side = result.cpu_us_per_request()
            per_run = " / ".join(f"{r.rps:,.0f}, {r.p99_ms:.1f}"
                                 + ("*" if r.extra.get("disturbed") else "")
                                 for r in result.runs)
            add(f"| {result.label} | {result.rps:,.0f} | {result.p50_ms:.2f} | "
                f"{result.p99_ms:.2f} | "
                f"{per_run} | "
                f"{sum(r.non_2xx_3xx for r in result.runs)} | "
                f"{sum(r.socket_errors for r in result.runs)} | {own:.0f}, {side:.0f} | "
                f"{cpu} |")
        add("")
        marked = [f"{result.name} ({r.extra['disturbed']})" for result in systems.values()
                  for r in result.runs if r.extra.get("disturbed")]
        if marked:
            add("\\* run disturbed by another job on the machine, kept because the repeats "
                "were disturbed too: " + "; ".join(marked) + ".")
            add("")
        add("Runs during which another job used more than 5% of a core (`other`, or a "
            "PostgreSQL/RabbitMQ the system does not use) are repeated, up to as many extra "
            "runs as measured ones.")
        add("")
        add("CPU groups: `machine` is the whole box (200 = both cores busy); `other` is CPU "
            "used by processes this bench did not start (another job on the machine: if it "
            "is large the run was disturbed); `kernel` is kernel threads; PostgreSQL and "
            "RabbitMQ are shared servers, so their figures include any other user's load.")
        add("")
        redirector = systems.get("redirector")
        if redirector:
            add("Redirector rows check (rows committed by the logger per run vs 3xx responses "
                "wrk counted; wrk does not count requests in flight when it stops, the "
                "redirector may still have served and logged them):")
            add("")
            add("| run | 3xx counted by wrk | rows committed | difference | all rows committed "
                "after wrk ended |")
            add("|---|---:|---:|---:|---:|")
            for number, run in enumerate(redirector.runs, start=1):
                lag = run.extra.get("lag_s")
                add(f"| {number} | {run.ok:,} | {run.extra['rows']:,} | "
                    f"{run.extra['rows'] - run.ok:+d} | "
                    f"{f'{lag:.2f} s' if lag is not None else 'not reached'} |")
            add("")
            for note in redirector.notes:
                add(f"- {note}")
            add("")
            add("Ratios and targets (each ratio is the median over rounds of the two "
                "systems' rates in the same round, measured minutes apart):")
            add("")
            add("| comparison | value | target | |")
            add("|---|---:|---:|---|")
            rows: list[tuple[str, str, str, bool | None]] = []  # ok: None when only reported

            def compare(label: str, a: SystemResult, b: str, style: str,
                        target: float | None = None) -> None:
                if b not in systems:
                    return
                ratio, per_round = paired_ratio(a, systems[b])
                shown = f"{ratio:{style}}" + ("x" if style.endswith("f") else "")
                if len(per_round) > 1:
                    shown += " (rounds: " + " / ".join(
                        f"{r:{style}}" + ("x" if style.endswith("f") else "")
                        for r in per_round) + ")"
                if target is None:
                    rows.append((label, shown, "(reported)", None))
                else:
                    wanted = f">= {target:.0f}x" if style.endswith("f") else f">= {target:.0%}"
                    rows.append((label, shown, wanted, ratio >= target))

            compare("redirector / naive insert-per-click", redirector, "naive", ".2f",
                    TARGETS["redirector_vs_naive"])
            compare("redirector / bare aiohttp+HMAC (uvloop)", redirector, "hmac_uvloop", ".0%",
                    TARGETS["redirector_vs_hmac"])
            rows.append(("redirector p99 at 64 connections", f"{redirector.p99_ms:.2f} ms",
                         f"< {TARGETS['redirector_p99_ms']:.0f} ms",
                         redirector.p99_ms < TARGETS["redirector_p99_ms"]))
            compare("redirector / nginx return 302", redirector, "nginx", ".1%")
            compare("redirector / bare low-level aiohttp server + HMAC (uvloop; the server the "
                    "redirector runs on)", redirector, "hmac_lowlevel", ".0%")
            if "redirector_x2" in systems:
                x2 = systems["redirector_x2"]
                compare("2 redirector processes (one per core) / naive", x2, "naive", ".2f")
                compare("2 redirector processes / 2 naive processes (like for like)", x2,
                        "naive_x2", ".2f")
                compare("2 redirector processes / bare aiohttp+HMAC (one process)", x2,
                        "hmac_uvloop", ".0%")
                rows.append(("2 redirector processes: p99 at 64 connections",
                             f"{x2.p99_ms:.2f} ms", "(reported)", None))
            compare("redirector / bare aiohttp+HMAC (asyncio)", redirector, "hmac_asyncio",
                    ".0%")
            if "hmac_uvloop" in systems:
                compare("bare aiohttp+HMAC uvloop / asyncio", systems["hmac_uvloop"],
                        "hmac_asyncio", ".2f")
            for name, value, target, ok in rows:
                add(f"| {name} | {value} | {target} | {'' if ok is None else verdict(ok)} |")
                if ok is not None:
                    verdicts.append((name, value, ok))
            add("")
            paced_table(cfg, systems, add)
        for result in systems.values():
            if result.name != "redirector":
                for note in result.notes:
                    add(f"- {result.name}: {note}")
        add("")
    if logger:
        runs: list[LoggerRun] = logger["runs"]
        logger_rps = statistics.median(r.rps for r in runs)
        copy_rps = statistics.median(logger["copy"]["copy"])
        sql_rps = statistics.median(logger["copy"]["copy_5000"])
        add(f"## Logger: {cfg.logger_rows:,} click events pre-loaded as "
            f"{-(-cfg.logger_rows // FORWARD_BATCH)} batched CloudEvents messages, median of "
            f"{len(runs)}")
        add("")
        add("| path | rows/s (median) | runs |")
        add("|---|---:|---|")
        add(f"| logger: queue -> committed rows (`logger.started` to last commit, its own "
            f"clock) | {logger_rps:,.0f} | {' / '.join(f'{r.rps:,.0f}' for r in runs)} |")
        add(f"| logger incl. process start (spawn -> all rows counted) | "
            f"{statistics.median(r.rows / r.wall_s for r in runs):,.0f} | "
            f"{' / '.join(f'{r.rows / r.wall_s:,.0f}' for r in runs)} |")
        for name, label in COPY_VARIANTS.items():
            values = logger["copy"][name]
            add(f"| {label} | {statistics.median(values):,.0f} | "
                f"{' / '.join(f'{x:,.0f}' for x in values)} |")
        add("")
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in runs[len(runs) // 2].cpu.items() if v >= 1)
        add(f"CPU % of one core over spawn-to-done (a middle run): {cpu}. Commits per run: "
            f"{', '.join(str(r.commits) for r in runs)}; pre-load took "
            f"{', '.join(f'{r.preload_s:.1f} s' for r in runs)}.")
        add("")
        ratio = logger_rps / copy_rps
        add("| comparison | value | target | |")
        add("|---|---:|---:|---|")
        ok = ratio >= TARGETS["logger_vs_copy"]
        add(f"| logger / raw COPY | {ratio:.0%} | >= {TARGETS['logger_vs_copy']:.0%} | "
            f"{verdict(ok)} |")
        add(f"| logger / its own write (COPY in 5000-row transactions) without broker or "
            f"process | {logger_rps / sql_rps:.0%} | (reported) | |")
        add("")
        verdicts.append(("logger / raw COPY", f"{ratio:.0%}", ok))
    add("## Commands")
    add("")
    add("```sh")
    add("# load, per HTTP system ($PORT: the server's port; paths.txt: the distinct signed "
        "links bench/links.py mints, one /t/<token> per line)")
    add(wrk_command(cfg))
    if cfg.pace_ms:
        add("# paced runs: the same, with the per-connection pause in ms after the paths file")
        add(f"{wrk_command(cfg)} {cfg.pace_ms}")
    for result in systems.values():
        add(f"# {result.label}")
        for command in result.commands:
            add(command)
    if logger:
        add("# logger (after pre-loading its queue)")
        add(logger["command"])
    add("```")
    add("")
    if verdicts:
        add("Summary: " + "; ".join(f"{name} {value} {verdict(ok)}"
                                     for name, value, ok in verdicts) + ".")
    return "\n".join(lines)


def write_doc(body: str) -> None:
    header = (
        "# Performance\n\n"
        "How fast the click path is on a 2-core machine, beside what the same machine does\n"
        "with simpler designs. Everything between the `bench:` markers is written by\n"
        "`.venv/bin/python -m bench.run` (see bench/run.py); text outside them is kept.\n\n"
    )
    block = f"{BEGIN}\n{body}\n{END}"
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            DOC.write_text(before + block + after)
            return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(header + block + "\n")

