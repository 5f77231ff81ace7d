"""The click-path benchmark: the redirector and the logger beside their baselines, in one run.

    .venv/bin/python bench/run.py            # full run (~10 min), writes docs/performance.md
    .venv/bin/python bench/run.py --quick --no-docs   # smoke run of every step (~1 min)

Measured on this machine in `--runs` rounds: each round starts every HTTP system in
turn, warms it up, runs `wrk -t1 -c64 -d<duration>s --latency -s bench/paths.lua` once
(one wrk thread: on 2 cores the load generator competes with the server) and stops it.
Figures are medians over rounds; ratios are medians of the per-round ratios, so a
machine whose speed drifts during the bench (these do) affects both sides of a ratio:

1. HTTP, many distinct signed links, Host = TRACKING_HOST:
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
   of the same rows into an identical (freshly migrated) table.

Each system gets its own database (created, migrated with shared.db.migrate.upgrade,
dropped) and its own AMQP namespace (AMQP_EXCHANGE, deleted afterwards). Needs
nginx and wrk on PATH, PostgreSQL and RabbitMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402

from demo.scratch import delete_namespace  # noqa: E402
from services.logger.database import COLUMNS  # noqa: E402
from services.logger.handlers import to_row  # noqa: E402
from services.redirector.event_ids import EventIds  # noqa: E402
from shared.broker import topology as broker_topology  # noqa: E402
from shared.broker.names import CLICK_TRACKED, LOGGER_QUEUE  # noqa: E402
from shared.broker.publisher import Publisher  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.events import ClickTracked, Event, decode_message, encode_batch, encode_event  # noqa: E402
from shared.links import LinkSigner  # noqa: E402
from shared.settings import DatabaseSettings, parse_link_keys  # noqa: E402

PY = sys.executable
BENCH = ROOT / "bench"
LUA = BENCH / "paths.lua"
DOC = ROOT / "docs" / "performance.md"
TRACKING_HOST = "click.bench.test"
LINK_KEYS = "bench:" + "bench-signing-secret-0123456789abcdef"
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FORWARD_BATCH = 500  # the redirector's CLICK_BATCH_SIZE default
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

TARGETS = {
    "redirector_vs_naive": 3.0,    # redirector >= 3x naive insert-per-click
    "redirector_vs_hmac": 0.60,    # redirector >= 60% of bare aiohttp+HMAC (uvloop)
    "redirector_p99_ms": 5.0,      # p99 < 5 ms at 64 connections
    "logger_vs_copy": 0.50,        # logger >= 50% of raw COPY
}


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# --- processes -----------------------------------------------------------------------------

_started: list[Proc] = []


class Proc:
    """A child process we started, its output in a log file. Stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.name, self.argv, self.log, self.cwd = name, argv, log, cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.extra_env = env or {}
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, env=self.env, cwd=cwd, stdout=self._out,
                                      stderr=subprocess.STDOUT)
        self.started = time.time()
        _started.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.extra_env.items())
        argv = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in self.argv]
        return (env + " " if env else "") + shlex.join(argv)

    def wait_for(self, needle: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not log {needle!r}:\n{self.text()[-3000:]}")

    def stop(self, timeout_s: float = 40.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if not self._out.closed:
            self._out.close()
        if self in _started:
            _started.remove(self)
        return self.popen.returncode


def stop_all() -> None:
    for proc in list(reversed(_started)):
        with contextlib.suppress(Exception):
            proc.stop(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} never listened on {port}")


def get(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": TRACKING_HOST, "User-Agent": USER_AGENT})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


# --- CPU accounting (/proc), so each figure says who used the two cores ---------------------

_TICK = os.sysconf("SC_CLK_TCK")
_GROUPS = {"postgres": "postgres", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq",
           "nginx": "nginx"}


def _proc_cpu(pid: int) -> tuple[str, int, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def cpu_snapshot(labels: dict[str, int]) -> dict[int, tuple[str, float]]:
    """CPU seconds so far per pid, with its group: the labelled pids, postgres, rabbitmq,
    nginx, this script ("bench"), kernel threads ("kernel") and every other process
    ("other": another job on the machine, which would disturb the figures)."""
    snapshot: dict[int, tuple[str, float]] = {}
    by_pid = {pid: label for label, pid in labels.items()}
    by_pid[os.getpid()] = "bench"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        found = _proc_cpu(pid)
        if found is None:
            continue
        comm, ppid, seconds = found
        label = by_pid.get(pid) or _GROUPS.get(comm)
        if label is None:
            label = "kernel" if ppid == 2 or pid == 2 else "other"
        snapshot[pid] = (label, seconds)
    return snapshot


def cpu_percent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                elapsed: float) -> dict[str, float]:
    """% of one core per group between two snapshots (processes that exited meanwhile are
    missed; ones that started meanwhile count in full)."""
    totals: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        old = before.get(pid)
        used = seconds - (old[1] if old and old[0] == label else 0.0)
        totals[label] = totals.get(label, 0.0) + max(used, 0.0)
    return {k: round(100 * v / elapsed, 1) for k, v in sorted(totals.items())}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, sum(values[:8]) / _TICK


_quiet_budget_s = [180.0]  # total waiting for a quiet machine in one bench run


def wait_quiet(limit_pct: float = 25.0, max_wait_s: float = 45.0) -> float:
    """Wait until the machine is nearly idle (busy < limit_pct of one core over 1 s; our own
    servers are idle between runs), at most max_wait_s here and 180 s in the whole bench.
    Another job on the machine (a test run) would skew the figures: the 'other' CPU column
    shows how much of it there was during each run. Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        before = machine_busy()[0]
        time.sleep(1.0)
        busy = 100 * (machine_busy()[0] - before)
        waited = time.monotonic() - t0
        if busy < limit_pct:
            break
        if waited > min(max_wait_s, _quiet_budget_s[0]):
            say(f"  WARNING: machine still {busy:.0f}% busy (another job); measuring anyway "
                "(see the 'other' CPU figure)")
            break
        if waited < 1.5:
            say(f"  machine {busy:.0f}% busy (another job?); waiting up to "
                f"{min(max_wait_s, _quiet_budget_s[0]):.0f} s for it to go quiet")
    _quiet_budget_s[0] = max(0.0, _quiet_budget_s[0] - max(0.0, waited - 1.0))
    return waited


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- wrk -----------------------------------------------------------------------------------

@dataclass
class WrkRun:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx_3xx: int
    socket_errors: int
    cpu: dict[str, float]  # % of one core during the run, per process group
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Responses with a status below 400 (all 302 here: see the pre-check)."""
        return self.requests - self.non_2xx_3xx


@dataclass
class SystemResult:
    name: str
    label: str
    commands: list[str]
    runs: list[WrkRun]
    notes: list[str] = field(default_factory=list)
    paced: WrkRun | None = None  # one run at a fixed offered load (see pace_for)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    def cpu_us_per_request(self) -> tuple[float, float]:
        """Median CPU µs per request: (the HTTP server process, everything server-side:
        server + logger + PostgreSQL + RabbitMQ; wrk, kernel and other jobs excluded)."""
        own, total = [], []
        for run in self.runs:
            main = sum(v for k, v in run.cpu.items()
                       if k in ("server", "nginx") or k.startswith("redirector"))
            side = main + sum(run.cpu.get(k, 0.0) for k in ("logger", "postgres", "rabbitmq"))
            own.append(main / 100 / run.rps * 1e6)
            total.append(side / 100 / run.rps * 1e6)
        return statistics.median(own), statistics.median(total)

    def cpu(self) -> dict[str, float]:
        keys = {k for r in self.runs for k in r.cpu}
        return {k: statistics.median(r.cpu.get(k, 0.0) for r in self.runs) for k in sorted(keys)}


@dataclass
class Config:
    duration: int
    runs: int
    warmup: int
    connections: int
    links: int
    logger_rows: int
    logger_runs: int
    out: Path
    profile: str | None = None  # py-spy binary: profile an extra, unmeasured run
    paths_file: Path = field(init=False)
    # Per-connection pause for the paced runs, set from the bare handler's measured rate.
    pace_ms: int = field(init=False, default=0)
    # The HTTP systems are measured in rounds (each system once per round, in turn), so
    # that a machine whose speed drifts during the bench drifts under all of them alike.
    rounds: int = field(init=False, default=1)
    round: int = field(init=False, default=0)


def wrk_argv(cfg: Config, port: int, duration: int, static: str | None = None,
             pace_ms: int = 0) -> list[str]:
    argv = ["wrk", "-t1", f"-c{cfg.connections}", f"-d{duration}s", "--latency",
            "-H", f"Host: {TRACKING_HOST}", "-H", f"User-Agent: {USER_AGENT}"]
    if static is not None:  # one pre-built request, wrk's fastest mode
        return [*argv, "-s", str(BENCH / "static.lua"), f"http://127.0.0.1:{port}{static}"]
    paced = [str(pace_ms)] if pace_ms else []
    return [*argv, "-s", str(LUA), f"http://127.0.0.1:{port}", "--", str(cfg.paths_file),
            *paced]


# The paced runs offer this share of what the bare handler sustains, to every server alike.
PACE_SHARE = 0.5


def pace_for(cfg: Config, bare_rps: float) -> int:
    """Milliseconds each connection waits between requests so that all of them together
    offer about PACE_SHARE of `bare_rps` (less, by the response time itself)."""
    return max(1, round(cfg.connections / (PACE_SHARE * bare_rps) * 1000))


def wrk_command(cfg: Config, static: str | None = None) -> str:
    argv = wrk_argv(cfg, 0, cfg.duration, static)
    argv = [a.replace("http://127.0.0.1:0", "http://127.0.0.1:$PORT")
            .replace(str(cfg.paths_file), "bench/out/<run>/paths.txt") for a in argv]
    return shlex.join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)


def run_wrk(cfg: Config, port: int, duration: int, tag: str, pids: dict[str, int],
            static: str | None = None, pace_ms: int = 0) -> WrkRun:
    argv = wrk_argv(cfg, port, duration, static, pace_ms)
    waited = wait_quiet()
    before, wrk_before, t0 = cpu_snapshot(pids), children_cpu(), time.monotonic()
    busy_before = machine_busy()[0]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    elapsed = time.monotonic() - t0
    after, wrk_after = cpu_snapshot(pids), children_cpu()
    busy_after = machine_busy()[0]
    (cfg.out / f"wrk-{tag}.txt").write_text(done.stdout + done.stderr)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(match.group(1))
    cpu = cpu_percent(before, after, elapsed)
    cpu["wrk"] = round(100 * (wrk_after - wrk_before) / elapsed, 1)
    cpu["machine"] = round(100 * (busy_after - busy_before) / elapsed, 1)
    seconds = data["duration_us"] / 1e6
    run = WrkRun(
        requests=data["requests"], seconds=seconds, rps=data["requests"] / seconds,
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
        non_2xx_3xx=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        cpu=cpu, extra={"waited_s": round(waited, 1)},
    )
    say(f"  {tag}: {run.rps:,.0f} req/s  p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  "
        f"non-2xx/3xx {run.non_2xx_3xx}  socket errors {run.socket_errors}  cpu {cpu}")
    return run


PROFILED_RUN = 99
served: dict[str, int] = {}  # 3xx wrk counted per system, warm-up and repeated runs included
FOREIGN_LIMIT = 5.0  # % of one core: more than this from another job marks a run disturbed


def disturbance(run: WrkRun, uses: tuple[str, ...]) -> str | None:
    """Why the run was disturbed by another job on the machine, or None."""
    found = [f"other {run.cpu.get('other', 0.0):.0f}%"] if run.cpu.get("other", 0.0) > \
        FOREIGN_LIMIT else []
    found += [f"{group} {run.cpu.get(group, 0.0):.0f}% (unused by this system)"
              for group in ("postgres", "rabbitmq")
              if group not in uses and run.cpu.get(group, 0.0) > FOREIGN_LIMIT]
    return ", ".join(found) or None


def measure(cfg: Config, name: str, port: int, pids: dict[str, int],
            between: Callable[[WrkRun | None], None] | None = None,
            uses: tuple[str, ...] = ()) -> list[WrkRun]:
    """Warm up, then `cfg.runs` measured runs; `between` runs after each. A run another job
    disturbed (see `disturbance`) is repeated, at most `cfg.runs` extra times; the
    undisturbed runs are kept first."""
    if cfg.warmup:
        warm = run_wrk(cfg, port, cfg.warmup, f"{name}-warmup", pids)
        if between:
            between(warm)
    clean: list[WrkRun] = []
    disturbed: list[WrkRun] = []
    served[name] = warm.ok if cfg.warmup else 0
    for number in range(1, 2 * cfg.runs + 1):
        if len(clean) >= cfg.runs or len(clean) + (2 * cfg.runs - number + 1) < cfg.runs:
            break
        run = run_wrk(cfg, port, cfg.duration, f"{name}-r{cfg.round + 1}-{number}", pids)
        served[name] += run.ok
        if between:
            between(run)
        reason = disturbance(run, uses)
        if reason:
            run.extra["disturbed"] = reason
            say(f"    disturbed by another job ({reason}); will repeat it")
            disturbed.append(run)
        else:
            clean.append(run)
    return (clean + disturbed)[:cfg.runs]


# --- profiling (optional, --profile): py-spy on an extra run that is not measured -----------

def start_pyspy(cfg: Config, pid: int, name: str, duration: float) -> subprocess.Popen[bytes]:
    assert cfg.profile
    argv = [cfg.profile, "record", "-p", str(pid), "-d", str(int(duration)), "-r", "200",
            "--nonblocking", "--gil", "-f", "raw",
            "-o", str(cfg.out / f"profile-{name}.txt")]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(own.items(), key=lambda x: -x[1])[:top]]
    out.append("inclusive:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(inclusive.items(), key=lambda x: -x[1])[:top * 2]]
    return "\n".join(out)


def finish_pyspy(cfg: Config, spies: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, spy in spies.items():
        spy.wait(60)
        path = cfg.out / f"profile-{name}.txt"
        if path.exists():
            summary = summarise_profile(path)
            (cfg.out / f"profile-{name}-summary.txt").write_text(summary + "\n")
            say(f"  profile of {name}: {os.path.relpath(path, ROOT)} (+ -summary.txt)")


# --- databases and broker namespaces -------------------------------------------------------

def dsn(database: str) -> str:
    return f"{PG}/{database}"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(dsn("postgres"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(upgrade(DatabaseSettings(url=f"postgresql+asyncpg://{PG.split('://')[1]}"
                                             f"/{name}")))
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_namespace(tag: str) -> Iterator[str]:
    exchange = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield exchange
    finally:
        try:
            asyncio.run(asyncio.wait_for(delete_namespace(AMQP_URL, exchange), timeout=60))
        except Exception as exc:
            say(f"  WARNING: could not delete the AMQP namespace {exchange!r} "
                f"({type(exc).__name__}: {exc}); delete its queues by hand")


def preflight() -> None:
    """Fail in seconds, not minutes, when PostgreSQL or RabbitMQ does not answer."""
    async def check() -> None:
        connection = await asyncpg.connect(dsn("postgres"), timeout=10)
        await connection.close()
        amqp = await aio_pika.connect(AMQP_URL, timeout=10)
        await amqp.close()

    try:
        asyncio.run(asyncio.wait_for(check(), timeout=30))
    except Exception as exc:
        sys.exit(f"bench: PostgreSQL ({PG}) or RabbitMQ ({AMQP_URL.split('@')[-1]}) does not "
                 f"answer: {type(exc).__name__}: {exc}")


async def _count(database: str) -> int:
    connection = await asyncpg.connect(dsn(database))
    try:
        return await connection.fetchval("SELECT count(*) FROM tracking_logs")
    finally:
        await connection.close()


def count_rows(database: str) -> int:
    return asyncio.run(_count(database))


def wait_rows(database: str, target: int, timeout_s: float = 60.0,
              quiet_s: float = 0.6) -> tuple[int, float | None]:
    """Poll until at least `target` rows and no change for `quiet_s`.
    Returns (rows, seconds until `target` was first reached, or None)."""
    t0 = time.monotonic()
    reached: float | None = None
    last, last_change = -1, t0

    async def poll() -> tuple[int, float | None]:
        nonlocal reached, last, last_change
        connection = await asyncpg.connect(dsn(database))
        try:
            while True:
                rows = await connection.fetchval("SELECT count(*) FROM tracking_logs")
                now = time.monotonic()
                if rows != last:
                    last, last_change = rows, now
                if reached is None and rows >= target:
                    reached = now - t0
                if reached is not None and now - last_change >= quiet_s:
                    return rows, reached
                if now - t0 > timeout_s:
                    return rows, reached
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    return asyncio.run(poll())


# --- links -----------------------------------------------------------------------------

def make_links(count: int) -> list[tuple[str, dict[str, str]]]:
    signer = LinkSigner(parse_link_keys(LINK_KEYS))
    links = []
    for i in range(count):
        fields = {"customer_id": f"cust-{i % 20}", "campaign_id": f"camp-{i % 200}",
                  "recipient_id": f"rcpt-{i:07d}",
                  "url": f"https://shop{i % 20}.example/products/{i}?utm_source=email"
                         f"&utm_campaign=camp-{i % 200}"}
        links.append((signer.mint_token(**fields), fields))
    return links


def check_redirects(port: int, token: str, url: str) -> None:
    status, location = get(port, f"/t/{token}")
    if status != 302 or location != url:
        raise RuntimeError(f"expected 302 to {url}, got {status} {location}")
    status, _ = get(port, f"/t/{token[:-4]}AAAA")
    if status != 404:
        raise RuntimeError(f"a forged link got {status}, not 404")


# --- the HTTP systems ----------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=1024;
        location / {{ return 302 https://shop.example/; }}
    }}
}}
"""


def bench_nginx(cfg: Config) -> tuple[SystemResult, SystemResult]:
    prefix = cfg.out / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port))
    proc = Proc("nginx", ["nginx", "-p", str(prefix), "-c", "nginx.conf", "-e", "stderr",
                          "-g", "daemon off;"], cfg.out / "nginx.log")
    try:
        wait_port(port, proc)
        status, _ = get(port, "/t/x")
        assert status == 302, status
        runs = measure(cfg, "nginx", port, {})
        # Reference for the load generator's own cost: one static path, no Lua per request.
        static = [run_wrk(cfg, port, cfg.duration, "nginx-static", {}, static="/t/static")]
    finally:
        proc.stop()
    command = (f"nginx -p {os.path.relpath(prefix, ROOT)} -c nginx.conf -e stderr "
               "-g 'daemon off;'   # conf: worker_processes 1; access_log off; "
               "keepalive_requests 1000000; location / { return 302 ...; }")
    result = SystemResult("nginx", "nginx `return 302` (1 worker)", [command], runs)
    reference = SystemResult("nginx_static", "nginx, one static path, no Lua (1 run; "
                             "shows what the Lua path-picking costs wrk)",
                             [wrk_command(cfg, static="/t/static")], static)
    return result, reference


def bench_hmac(cfg: Config, links: list[tuple[str, dict[str, str]]], loop: str,
               lowlevel: bool = False) -> SystemResult:
    port = free_port()
    kind = "hmac-lowlevel" if lowlevel else "hmac"
    tag = f"{kind}-{loop}"
    proc = Proc(tag, [PY, str(BENCH / "baselines.py"), kind, "--port", str(port),
                      "--loop", loop],
                cfg.out / f"{tag}.log", env={"LINK_KEYS": LINK_KEYS})
    try:
        proc.wait_for("listening")
        check_redirects(port, links[0][0], links[0][1]["url"])
        runs = measure(cfg, tag, port, {"server": proc.pid})
        if lowlevel:
            return SystemResult(
                "hmac_lowlevel", f"bare aiohttp low-level server (web.Server) + HMAC, {loop}",
                [proc.command().replace(LINK_KEYS, "$LINK_KEYS")
                 .replace(f"--port {port}", "--port $PORT")], runs)
        paced = None
        if loop == "uvloop" and cfg.round == 0:
            cfg.pace_ms = pace_for(cfg, statistics.median(r.rps for r in runs))
            paced = run_wrk(cfg, port, cfg.duration, f"hmac-{loop}-paced", {"server": proc.pid},
                            pace_ms=cfg.pace_ms)
        if cfg.profile and loop == "uvloop" and cfg.round == 0:  # beside the redirector's
            spies = {"hmac-uvloop": start_pyspy(cfg, proc.pid, "hmac-uvloop", cfg.duration)}
            time.sleep(0.5)
            run_wrk(cfg, port, cfg.duration, "hmac-uvloop-profiled", {"server": proc.pid})
            finish_pyspy(cfg, spies)
    finally:
        proc.stop()
    return SystemResult(f"hmac_{loop}", f"bare aiohttp + HMAC, {loop}",
                        [proc.command().replace(LINK_KEYS, "$LINK_KEYS")
                         .replace(f"--port {port}", "--port $PORT")], runs, paced=paced)


def bench_naive(cfg: Config, links: list[tuple[str, dict[str, str]]],
                processes: int = 1) -> SystemResult:
    """The naive handler; with `processes` > 1, that many on one port (SO_REUSEPORT),
    each with its own pool of 20: the like-for-like baseline for the redirector's
    one-process-per-core row."""
    suffix = f"_x{processes}" if processes > 1 else ""
    with fresh_database(f"naive{suffix}") as database:
        port = free_port()
        procs = [Proc(f"naive-{n}" if n > 1 else "naive",
                      [PY, str(BENCH / "baselines.py"), "naive", "--port", str(port),
                       "--loop", "uvloop", "--dsn", dsn(database)],
                      cfg.out / f"naive{suffix}-{n}.log", env={"LINK_KEYS": LINK_KEYS})
                 for n in range(1, processes + 1)]
        try:
            for proc in procs:
                proc.wait_for("listening")
            check_redirects(port, links[0][0], links[0][1]["url"])
            pids = {("server" if n == 1 else f"server-{n}"): proc.pid
                    for n, proc in enumerate(procs, start=1)}
            runs = measure(cfg, f"naive{suffix}", port, pids, uses=("postgres",))
        finally:
            for proc in procs:
                proc.stop()
        rows = count_rows(database)
    total = served[f"naive{suffix}"] + 1  # + the pre-check's click
    command = (procs[0].command().replace(LINK_KEYS, "$LINK_KEYS")
               .replace(database, f"bench_naive{suffix}_<id>")
               .replace(f"--port {port}", "--port $PORT"))
    if processes > 1:
        result = SystemResult(f"naive_x{processes}", f"{processes} naive processes, one port "
                              "(reported)", [f"# {processes} of these, same port", command],
                              runs)
    else:
        result = SystemResult("naive", "naive: aiohttp + HMAC + awaited INSERT per click "
                              "(uvloop)", [command], runs)
    result.notes.append(f"rows {rows:,} vs 3xx counted by wrk incl. warm-up and the pre-check "
                        f"{total:,} (difference {rows - total:+d})")
    return result


def bench_redirector(cfg: Config, links: list[tuple[str, dict[str, str]]],
                     processes: int = 1) -> SystemResult:
    """The redirector (`processes` of them sharing one port with SO_REUSEPORT, each with
    its own spool slot, as docs/operations.md deploys one per core) and one logger."""
    with fresh_database("redirector") as database, fresh_namespace("redirector") as exchange:
        port = free_port()
        spool = Path(tempfile.mkdtemp(prefix="spool-", dir=cfg.out))
        env = {"AMQP_URL": AMQP_URL, "AMQP_EXCHANGE": exchange,
               "DATABASE_URL": dsn(database), "TRACKING_HOST": TRACKING_HOST,
               "LINK_KEYS": LINK_KEYS, "SPOOL_DIR": str(spool),
               "REDIRECTOR_BIND": f"127.0.0.1:{port}"}
        logger = Proc("logger", [PY, "-m", "services.logger"], cfg.out / "redir-logger.log",
                      env={k: v for k, v in env.items()
                           if k in ("AMQP_URL", "AMQP_EXCHANGE", "DATABASE_URL")})
        redirector = None
        extra: list[Proc] = []
        suffix = f"-x{processes}" if processes > 1 else ""
        try:
            logger.wait_for('"logger.started"')
            redirector = Proc("redirector", [PY, "-m", "services.redirector"],
                              cfg.out / f"redirector{suffix}.log", env=env)
            redirector.wait_for('"broker.connected"')
            wait_port(port, redirector)
            for number in range(2, processes + 1):
                more = Proc(f"redirector-{number}", [PY, "-m", "services.redirector"],
                            cfg.out / f"redirector{suffix}-{number}.log", env=env)
                extra.append(more)
                more.wait_for('"redirector.listening"')
            check_redirects(port, links[0][0], links[0][1]["url"])
            rows, _ = wait_rows(database, 1, timeout_s=10)
            if rows != 1:
                raise RuntimeError(f"pre-check click: {rows} rows, expected 1")
            state = {"rows": rows, "total_ok": 1}

            def verify(run: WrkRun | None) -> None:
                assert run is not None
                target = state["rows"] + run.ok
                rows, lag = wait_rows(database, target)
                run.extra.update(rows=rows - state["rows"], lag_s=lag)
                state["rows"] = rows
                state["total_ok"] += run.ok
                say(f"    rows +{run.extra['rows']:,} vs 3xx {run.ok:,} "
                    f"(diff {run.extra['rows'] - run.ok:+d}); all rows in "
                    f"{f'{lag:.2f} s' if lag is not None else 'NOT reached'} after wrk ended")

            pids = {"redirector": redirector.pid, "logger": logger.pid,
                    **{f"redirector-{n}": proc.pid for n, proc in enumerate(extra, start=2)}}
            runs = measure(cfg, f"redirector{suffix}", port, pids, between=verify,
                           uses=("postgres", "rabbitmq"))
            paced = None
            if cfg.pace_ms and processes == 1 and cfg.round == 0:
                paced = run_wrk(cfg, port, cfg.duration, "redirector-paced", pids,
                                pace_ms=cfg.pace_ms)
                verify(paced)
            if cfg.profile and processes == 1 and cfg.round == 0:
                spies = {name: start_pyspy(cfg, pid, name, cfg.duration)
                         for name, pid in pids.items()}
                time.sleep(0.5)
                verify(run_wrk(cfg, port, cfg.duration, "redirector-profiled", pids))
                finish_pyspy(cfg, spies)
            for proc in (*extra, redirector):
                proc.stop()
            rows_total, _ = wait_rows(database, state["rows"], timeout_s=30)
            logger.stop()
        finally:
            for started in (*extra, redirector):
                if started is not None:
                    started.stop()
            logger.stop()
            shutil.rmtree(spool, ignore_errors=True)
    commands = [
        redirector.command().replace(LINK_KEYS, "$LINK_KEYS").replace(database, "bench_redir_<id>")
        .replace(exchange, "bench-redirector-<id>").replace(str(spool), "bench/out/<run>/spool")
        .replace(f"127.0.0.1:{port}", "127.0.0.1:$PORT"),
        logger.command().replace(database, "bench_redir_<id>")
        .replace(exchange, "bench-redirector-<id>"),
    ]
    if processes > 1:
        commands = [f"# {processes} of these, same port and SPOOL_DIR", *commands]
        result = SystemResult(f"redirector_x{processes}",
                              f"{processes} redirector processes + logger (reported)",
                              commands, runs)
    else:
        result = SystemResult("redirector", "redirector + logger (publish w/ confirms + "
                              "commit)", commands, runs, paced=paced)
    result.notes.append(f"rows after the redirector stopped (drained): {rows_total:,}; 3xx "
                        f"counted by wrk incl. warm-up, plus the pre-check click: "
                        f"{state['total_ok']:,} (difference {rows_total - state['total_ok']:+d})")
    return result


def merge(systems: dict[str, SystemResult], name: str, result: SystemResult,
          number: int) -> None:
    """Add one round's result of a system to what the earlier rounds gave."""
    notes = [f"round {number + 1}: {note}" for note in result.notes]
    found = systems.get(name)
    if found is None:
        result.notes = notes
        systems[name] = result
        return
    found.runs.extend(result.runs)
    found.notes.extend(notes)
    found.paced = found.paced or result.paced


def paired_ratio(a: SystemResult, b: SystemResult) -> tuple[float, list[float]]:
    """The median of a/b over rounds, with each round's ratio: both were measured within
    minutes of each other in a round, so the machine's drift cancels out."""
    ratios = [x.rps / y.rps for x, y in zip(a.runs, b.runs, strict=False)]
    return statistics.median(ratios), ratios


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


# --- the logger ------------------------------------------------------------------------

def make_events(links: list[tuple[str, dict[str, str]]], count: int) -> list[bytes]:
    source = f"/redirector/{socket.gethostname()}/{os.getpid()}"
    ids = EventIds()  # the redirector's own (time-ordered) click ids
    events = []
    for i in range(count):
        _token, fields = links[i % len(links)]
        events.append(encode_event(
            ClickTracked(customer_id=fields["customer_id"], campaign_id=fields["campaign_id"],
                         recipient_id=fields["recipient_id"], domain=TRACKING_HOST,
                         url=fields["url"], ip="127.0.0.1", user_agent=USER_AGENT,
                         method="GET", bot=False, bot_reason=None),
            source=source, event_id=ids.next(), time=datetime.now(UTC)))
    return events


async def preload(exchange: str, events: list[bytes]) -> float:
    """Publish the events as the forwarder does: batches of 500, batched mode, confirms."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = broker_topology.Topology(exchange)
        amqp_exchange = await broker_topology.declare(channel, topology)
        publisher = Publisher(channel, amqp_exchange, source="/bench/preload")
        bodies = [encode_batch(events[i:i + FORWARD_BATCH])
                  for i in range(0, len(events), FORWARD_BATCH)]
        t0 = time.monotonic()
        for i in range(0, len(bodies), 8):  # a few in flight, like the forwarder's 4
            await asyncio.gather(*(publisher.publish(CLICK_TRACKED, body, batch=True)
                                   for body in bodies[i:i + 8]))
        elapsed = time.monotonic() - t0
        queue = await channel.declare_queue(topology.queue(LOGGER_QUEUE), passive=True)
        ready = queue.declaration_result.message_count
        if ready != len(bodies):
            raise RuntimeError(f"queue holds {ready} messages, expected {len(bodies)}")
        return elapsed


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


@dataclass
class LoggerRun:
    rows: int
    seconds: float          # logger.started -> commit of the last row (logger's own clock)
    wall_s: float           # process spawn -> all rows counted
    preload_s: float
    commits: int
    cpu: dict[str, float]

    @property
    def rps(self) -> float:
        return self.rows / self.seconds


def bench_logger_once(cfg: Config, events: list[bytes], number: int) -> tuple[LoggerRun, str]:
    with fresh_database("logger") as database, fresh_namespace("logger") as exchange:
        preload_s = asyncio.run(asyncio.wait_for(preload(exchange, events), timeout=120))
        wait_quiet()
        env = {"AMQP_URL": AMQP_URL, "AMQP_EXCHANGE": exchange, "DATABASE_URL": dsn(database)}
        before = cpu_snapshot({})
        logger = Proc("logger", [PY, "-m", "services.logger"],
                      cfg.out / f"logger-{number}.log", env=env)
        t_spawn = time.monotonic()
        spies = {}
        if cfg.profile and number == PROFILED_RUN:
            spies["logger-queue"] = start_pyspy(cfg, logger.pid, "logger-queue", 15)
        try:
            rows, reached = wait_rows(database, len(events), timeout_s=180, quiet_s=0.3)
            wall = time.monotonic() - t_spawn
            after = cpu_snapshot({"logger": logger.pid})
        finally:
            logger.stop()
            finish_pyspy(cfg, spies)
        command = (logger.command().replace(database, "bench_logger_<id>")
                   .replace(exchange, "bench-logger-<id>"))
    if rows != len(events) or reached is None:
        raise RuntimeError(f"logger committed {rows} rows, expected {len(events)}")
    lines = [json.loads(line) for line in logger.text().splitlines() if line.startswith("{")]
    started = next(_ts(x) for x in lines if x.get("event") == "logger.started")
    commits = [x for x in lines if x.get("event") == "clicks.committed"]
    total, last = 0, started
    for commit in commits:
        total += commit["inserted"]
        last = _ts(commit)
        if total >= len(events):
            break
    seconds = last - started
    cpu = cpu_percent(before, after, wall)
    run = LoggerRun(rows=rows, seconds=seconds, wall_s=wall, preload_s=preload_s,
                    commits=len(commits), cpu=cpu)
    say(f"  logger-{number}: {rows:,} rows in {seconds:.2f} s = {run.rps:,.0f} rows/s "
        f"({len(commits)} commits; spawn-to-done {wall:.2f} s; preload {preload_s:.1f} s; "
        f"cpu over spawn-to-done {cpu})")
    return run, command


async def _write_batches(connections: list[asyncpg.Connection], rows: list[tuple[Any, ...]],
                         merge: bool) -> None:
    """5000-row transactions, as the logger commits them, from `len(connections)` writers."""
    from services.logger import database as logger_db

    batches = [rows[i:i + 5000] for i in range(0, len(rows), 5000)]
    batches.reverse()

    async def writer(connection: asyncpg.Connection) -> None:
        while batches:
            batch = batches.pop()
            async with connection.transaction():
                if merge:  # the logger's SQL: staging COPY + INSERT ... SELECT ON CONFLICT
                    await connection.execute(logger_db._CREATE_STAGING)
                    await connection.copy_records_to_table(
                        logger_db._STAGING, records=batch, columns=COLUMNS)
                    await connection.execute(logger_db._MERGE)
                else:
                    await connection.copy_records_to_table(
                        "tracking_logs", records=batch, columns=COLUMNS)

    await asyncio.gather(*(writer(c) for c in connections))


COPY_VARIANTS = {
    "copy": "raw asyncpg COPY into tracking_logs (one COPY of all rows)",
    "copy_5000": "plain COPY into tracking_logs in 5000-row transactions, one connection "
                 "(the logger's write when no row is a duplicate)",
    "logger_sql": "staging COPY + INSERT..SELECT ON CONFLICT (the logger's path for "
                  "redelivered rows), 5000-row transactions, one connection",
    "logger_sql_x2": "the same with two concurrent connections",
}


async def copy_runs(rows: list[tuple[Any, ...]], runs: int,
                    database: str) -> dict[str, list[float]]:
    """The raw-COPY baseline, then (for the diagnosis) the logger's SQL without the broker
    or the logger process, on one and two connections, and COPY in the logger's batches."""
    connections = [await asyncpg.connect(dsn(database)) for _ in range(2)]
    results: dict[str, list[float]] = {name: [] for name in COPY_VARIANTS}
    try:
        for name in COPY_VARIANTS:
            for number in range(1, runs + 1):
                await connections[0].execute("TRUNCATE tracking_logs")
                t0 = time.perf_counter()
                if name == "copy":
                    await connections[0].copy_records_to_table(
                        "tracking_logs", records=rows, columns=COLUMNS)
                else:
                    await _write_batches(connections[:2 if name.endswith("x2") else 1], rows,
                                         merge=name.startswith("logger_sql"))
                elapsed = time.perf_counter() - t0
                results[name].append(len(rows) / elapsed)
                say(f"  {name}-{number}: {len(rows):,} rows in {elapsed:.2f} s = "
                    f"{len(rows) / elapsed:,.0f} rows/s")
    finally:
        for connection in connections:
            await connection.close()
    return results


def bench_logger(cfg: Config, links: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    events = make_events(links, cfg.logger_rows)
    runs: list[LoggerRun] = []
    command = ""
    disturbed: list[LoggerRun] = []
    for number in range(1, 2 * cfg.logger_runs + 1):
        if len(runs) >= cfg.logger_runs:
            break
        run, command = bench_logger_once(cfg, events, number)
        if run.cpu.get("other", 0.0) > FOREIGN_LIMIT or run.cpu.get("rabbitmq", 0.0) > 20:
            say("    disturbed by another job; will repeat it")
            disturbed.append(run)
        else:
            runs.append(run)
    runs = (runs + disturbed)[:cfg.logger_runs]
    if cfg.profile:  # an extra, profiled run (not counted)
        bench_logger_once(cfg, events, PROFILED_RUN)
    decoded = decode_message(encode_batch(events), "application/cloudevents-batch+json")
    rows = [to_row(e) for e in decoded if isinstance(e, Event)]
    assert len(rows) == len(events)
    with fresh_database("copy") as database:
        wait_quiet()
        copies = asyncio.run(copy_runs(rows, cfg.logger_runs, database))
    return {"runs": runs, "command": command, "copy": copies}


# --- report ----------------------------------------------------------------------------

def versions() -> dict[str, str]:
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
        connection = await asyncpg.connect(dsn("postgres"))
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
           full_command: str) -> str:
    lines: list[str] = []
    add = lines.append
    add(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{full_command}` "
        f"(total {time.monotonic() - T0:.0f} s).")
    add("")
    add("Machine: " + "; ".join(f"{k} {v}" for k, v in versions().items()) + ".")
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
        "links run.py mints, one /t/<token> per line)")
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
        "`.venv/bin/python bench/run.py` (see its docstring); text outside them is kept.\n\n"
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


# --- main ------------------------------------------------------------------------------

T0 = time.monotonic()
SYSTEMS = ("nginx", "hmac_uvloop", "hmac_lowlevel", "hmac_asyncio", "naive", "redirector",
           "naive_x2", "redirector_x2", "logger")


def main() -> None:
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
    if any(name in only for name in ("naive", "redirector", "logger")):
        preflight()
    out = args.out or BENCH / "out" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(duration=args.duration, runs=args.runs, warmup=args.warmup,
                 connections=args.connections, links=args.links,
                 logger_rows=args.logger_rows, logger_runs=args.logger_runs, out=out,
                 profile=args.profile)
    full_command = (".venv/bin/python bench/run.py " + shlex.join(sys.argv[1:])).strip()
    say(f"bench: output in {os.path.relpath(out, ROOT)}")
    links = make_links(cfg.links)
    cfg.paths_file = out / "paths.txt"
    cfg.paths_file.write_text("".join(f"/t/{token}\n" for token, _ in links))
    say(f"bench: {len(links):,} signed links, mean path length "
        f"{sum(len(t) + 3 for t, _ in links) / len(links):.0f} bytes")

    systems: dict[str, SystemResult] = {}
    logger = None
    try:
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
    finally:
        stop_all()
    body = report(cfg, systems, logger, full_command)
    (out / "report.md").write_text(body + "\n")
    print()
    print(body)
    if not args.no_docs:
        write_doc(body)
        say(f"bench: wrote {os.path.relpath(DOC, ROOT)}")


if __name__ == "__main__":
    main()
