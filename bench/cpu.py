"""CPU accounting from /proc, so that each figure says who used the two cores.

Every process's CPU seconds are read before and after a run and grouped: the processes a
bench labels (the server, the logger...), PostgreSQL, RabbitMQ, nginx, the bench itself,
kernel threads, and "other" (a job the bench did not start, which would disturb it).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from bench.progress import say

_TICK = os.sysconf("SC_CLK_TCK")
_GROUPS = {"postgres": "postgres", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq",
           "nginx": "nginx"}


def process_cpu(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds so far: user + system) of a process, or None
    when it is gone."""
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
        found = process_cpu(pid)
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
    """CPU seconds used so far by this process's waited-for children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
