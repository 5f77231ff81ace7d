"""Profiles (optional, `--profile`): py-spy on extra runs that are not measured."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from bench.progress import say
from bench.wrk import ROOT


def start_pyspy(binary: str, out: Path, pid: int, name: str,
                duration: float) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `duration` s into out/profile-<name>.txt (raw stacks)."""
    argv = [binary, "record", "-p", str(pid), "-d", str(int(duration)), "-r", "200",
            "--nonblocking", "--gil", "-f", "raw", "-o", str(out / f"profile-{name}.txt")]
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


def finish_pyspy(out: Path, spies: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait for the recordings and write out/profile-<name>-summary.txt beside each."""
    for name, spy in spies.items():
        spy.wait(60)
        path = out / f"profile-{name}.txt"
        if path.exists():
            summary = summarise_profile(path)
            (out / f"profile-{name}-summary.txt").write_text(summary + "\n")
            say(f"  profile of {name}: {os.path.relpath(path, ROOT)} (+ -summary.txt)")
