"""The lockfiles (requirements/*.txt, written by scripts/lock) agree with pyproject.toml.

pyproject pins each direct dependency; the lockfiles pin the whole tree with hashes and are
what scripts/bootstrap and the image install. A pin moved in one and not the other would
install something other than pyproject says, so they are checked against each other here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
TEST_LOCK = ROOT / "requirements" / "test.txt"
# `name[extras]==version ; marker`: the extras and the marker do not matter here.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: list[str]) -> dict[str, str]:
    found = {}
    for requirement in requirements:
        match = PIN.match(requirement)
        assert match, f"not pinned to one version: {requirement!r}"
        found[normalized(match.group(1))] = match.group(2)
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """Package -> (version, how many hashes) from a pip-compile --generate-hashes file."""
    entries: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("    --hash="):
            assert current is not None, line
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
            continue
        match = PIN.match(line)
        assert match, f"{path.name}: not a pinned package line: {line!r}"
        current = normalized(match.group(1))
        entries[current] = (match.group(2), 0)
    return entries


def test_every_runtime_pin_is_in_both_locks_at_that_version() -> None:
    wanted = pinned(pyproject()["dependencies"])
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        versions = {name: version for name, (version, _) in locked(lock).items()}
        drifted = {name: (version, versions.get(name)) for name, version in wanted.items()
                   if versions.get(name) != version}
        assert not drifted, f"{lock.name} differs from pyproject (wanted, locked): {drifted}"


def test_every_test_pin_is_in_the_test_lock_at_that_version() -> None:
    wanted = pinned(pyproject()["optional-dependencies"]["test"])
    versions = {name: version for name, (version, _) in locked(TEST_LOCK).items()}
    drifted = {name: (version, versions.get(name)) for name, version in wanted.items()
               if versions.get(name) != version}
    assert not drifted, f"test.txt differs from pyproject (wanted, locked): {drifted}"


def test_the_test_lock_has_every_runtime_package_at_the_same_version() -> None:
    runtime, test = locked(RUNTIME_LOCK), locked(TEST_LOCK)
    differ = {name: (version, test.get(name, ("missing",))[0])
              for name, (version, _) in runtime.items()
              if test.get(name, ("missing",))[0] != version}
    assert not differ, f"runtime.txt vs test.txt: {differ}"


def test_every_locked_package_carries_hashes() -> None:
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        unhashed = [name for name, (_, hashes) in locked(lock).items() if not hashes]
        assert not unhashed, f"{lock.name}: no hash for {unhashed}"
