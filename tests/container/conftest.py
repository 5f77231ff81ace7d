"""The container tier: its timings in the terminal summary, compose logs on failure."""

from __future__ import annotations

from collections.abc import Generator

import pytest

# Seconds per phase (images, up to healthy, ...) and a few counts, filled by the tests.
TIMES = pytest.StashKey[dict[str, float]]()
CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if call.when == "call":
        item.stash[CALL_FAILED] = bool(getattr(report, "failed", False))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    times = config.stash.get(TIMES, None)
    if times:
        terminalreporter.write_line("container test (seconds unless a count): " + ", ".join(
            f"{name} {round(value, 1):g}" for name, value in times.items()))
