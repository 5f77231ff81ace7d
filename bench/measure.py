"""How an HTTP system is measured: warm-up, wrk runs with the CPU of every process group
beside them, runs that another job disturbed repeated, and the results kept per system.

The systems are measured in rounds (each once per round, in turn); figures are medians
over rounds, and a ratio is the median of the rounds' ratios, so a machine whose speed
drifts during the bench (these do) moves both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import children_cpu, cpu_percent, cpu_snapshot, machine_busy, wait_quiet
from bench.progress import say
from bench.scratch import Servers
from bench.wrk import shown, summary, wrk_argv

# The paced runs offer this share of what the bare handler sustains, to every server alike.
PACE_SHARE = 0.5
FOREIGN_LIMIT = 5.0  # % of one core: more than this from another job marks a run disturbed


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
    servers: Servers
    profile: str | None = None  # py-spy binary: profile an extra, unmeasured run
    paths_file: Path = field(init=False)
    # Per-connection pause for the paced runs, set from the bare handler's measured rate.
    pace_ms: int = field(init=False, default=0)
    # The HTTP systems are measured in rounds (each system once per round, in turn), so
    # that a machine whose speed drifts during the bench drifts under all of them alike.
    rounds: int = field(init=False, default=1)
    round: int = field(init=False, default=0)
    # 3xx wrk counted per system, warm-up and repeated runs included (the rows check).
    served: dict[str, int] = field(init=False, default_factory=dict)


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


def pace_for(cfg: Config, bare_rps: float) -> int:
    """Milliseconds each connection waits between requests so that all of them together
    offer about PACE_SHARE of `bare_rps` (less, by the response time itself)."""
    return max(1, round(cfg.connections / (PACE_SHARE * bare_rps) * 1000))


def _argv(cfg: Config, port: int, duration: int, static: str | None = None,
          pace_ms: int = 0) -> list[str]:
    return wrk_argv(port, connections=cfg.connections, duration=duration,
                    paths_file=cfg.paths_file, static=static, pace_ms=pace_ms)


def wrk_command(cfg: Config, static: str | None = None) -> str:
    """The wrk command of a measured run, as the report shows it."""
    return shown(_argv(cfg, 0, cfg.duration, static), cfg.paths_file)


def run_wrk(cfg: Config, port: int, duration: int, tag: str, pids: dict[str, int],
            static: str | None = None, pace_ms: int = 0) -> WrkRun:
    argv = _argv(cfg, port, duration, static, pace_ms)
    waited = wait_quiet()
    before, wrk_before, t0 = cpu_snapshot(pids), children_cpu(), time.monotonic()
    busy_before = machine_busy()[0]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    elapsed = time.monotonic() - t0
    after, wrk_after = cpu_snapshot(pids), children_cpu()
    busy_after = machine_busy()[0]
    (cfg.out / f"wrk-{tag}.txt").write_text(done.stdout + done.stderr)
    try:
        if done.returncode != 0:
            raise ValueError(f"exit status {done.returncode}")
        data = summary(done.stdout)
    except ValueError as exc:
        raise RuntimeError(f"wrk failed ({exc}):\n{done.stdout}\n{done.stderr}") from None
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
    cfg.served[name] = warm.ok if cfg.warmup else 0
    for number in range(1, 2 * cfg.runs + 1):
        if len(clean) >= cfg.runs or len(clean) + (2 * cfg.runs - number + 1) < cfg.runs:
            break
        run = run_wrk(cfg, port, cfg.duration, f"{name}-r{cfg.round + 1}-{number}", pids)
        cfg.served[name] += run.ok
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
