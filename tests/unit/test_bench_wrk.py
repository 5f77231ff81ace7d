"""bench/wrk.py and bench/measure.py's pure parts: the wrk command line the bench runs and
shows, the summary it reads back, and when a run counts as disturbed by another job."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.links import TRACKING_HOST
from bench.measure import WrkRun, disturbance
from bench.wrk import PATHS_LUA, ROOT, STATIC_LUA, shown, summary, wrk_argv

OUTPUT = """Running 3s test @ http://127.0.0.1:8080
  1 threads and 64 connections
BENCH_JSON {"requests":1200,"duration_us":3000000,"bytes":1,"connect":0,"read":1,"write":0,\
"status":2,"timeout":0,"p50_us":900,"p90_us":1500,"p99_us":4100,"mean_us":950.5,"max_us":9000}
"""


def test_summary_reads_the_json_line_of_paths_lua() -> None:
    data = summary(OUTPUT)
    assert data["requests"] == 1200 and data["status"] == 2 and data["p99_us"] == 4100


def test_summary_refuses_output_without_it() -> None:
    with pytest.raises(ValueError, match="no BENCH_JSON"):
        summary("Running 3s test\nunable to connect to 127.0.0.1:8080 Connection refused\n")


def test_the_paths_run_walks_the_paths_file_with_the_pause_after_it() -> None:
    paths = Path("/tmp/paths.txt")
    argv = wrk_argv(8080, connections=64, duration=10, paths_file=paths, pace_ms=4)
    assert argv[:5] == ["wrk", "-t1", "-c64", "-d10s", "--latency"]
    assert f"Host: {TRACKING_HOST}" in argv
    assert argv[-5:] == [str(PATHS_LUA), "http://127.0.0.1:8080", "--", str(paths), "4"]
    assert "--latency" not in wrk_argv(8080, connections=32, duration=6, paths_file=paths,
                                       latency=False)


def test_the_static_run_sends_one_path_without_the_paths_script() -> None:
    argv = wrk_argv(8080, connections=64, duration=10, static="/t/static")
    assert argv[-2:] == [str(STATIC_LUA), "http://127.0.0.1:8080/t/static"]


def test_the_shown_command_has_placeholders_and_repository_paths() -> None:
    paths = ROOT / "bench" / "out" / "20990101-000000" / "paths.txt"
    text = shown(wrk_argv(0, connections=64, duration=10, paths_file=paths), paths)
    assert "'http://127.0.0.1:$PORT'" in text
    assert "-s bench/paths.lua" in text and "bench/out/<run>/paths.txt" in text
    assert str(ROOT) not in text


def run_with(cpu: dict[str, float]) -> WrkRun:
    return WrkRun(requests=1, seconds=1.0, rps=1.0, p50_ms=1.0, p99_ms=1.0, max_ms=1.0,
                  non_2xx_3xx=0, socket_errors=0, cpu=cpu)


def test_a_run_is_disturbed_by_other_jobs_or_servers_the_system_does_not_use() -> None:
    assert disturbance(run_with({"other": 4.0, "postgres": 40.0}), ("postgres",)) is None
    assert disturbance(run_with({"other": 12.0}), ()) == "other 12%"
    assert disturbance(run_with({"rabbitmq": 9.0}), ("postgres",)) == (
        "rabbitmq 9% (unused by this system)")
