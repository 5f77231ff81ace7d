"""The HTTP systems the click path is measured against, each started, checked, loaded and
stopped in turn: nginx `return 302` (the ceiling), the bare aiohttp + HMAC handler (on
`web.Application` and on the low-level server, uvloop and plain asyncio), the naive
handler (one awaited INSERT per click), and the redirector with the logger behind it.

The baselines are bench/baselines.py's servers; the redirector and the logger are the
real services (`python -m services.<name>`), each with a database and an AMQP namespace
of its own (bench/scratch.py). Every system must answer a signed link with its 302 and a
forged one with a 404 before it is measured; for the pipelines the rows in
`tracking_logs` are counted against the 3xx wrk saw.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from bench.links import LINK_KEYS, TRACKING_HOST, Links, check_redirects
from bench.measure import Config, SystemResult, WrkRun, measure, pace_for, run_wrk, wrk_command
from bench.progress import say
from bench.pyspy import finish_pyspy, start_pyspy
from bench.scratch import (
    count_rows,
    database_name,
    dsn,
    fresh_database,
    fresh_namespace,
    wait_rows,
)
from bench.wrk import ROOT
from demo.net import free_port, https_get
from demo.processes import ChildProcess, ServiceProcess

PY = sys.executable
P = TypeVar("P", bound=ChildProcess)

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


@contextlib.contextmanager
def running(process: P, timeout_s: float = 40.0) -> Iterator[P]:
    """`process` started; on the way out SIGTERM (a service drains first), and SIGKILL if
    it has not exited within `timeout_s`."""
    with process:
        try:
            yield process
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.terminate(timeout_s)


def command_line(argv: list[str], env: Mapping[str, str]) -> str:
    """How to run it by hand, from the repository root: its own settings, then its argv."""
    settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    argv = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv]
    return (settings + " " if settings else "") + shlex.join(argv)


def bench_nginx(cfg: Config) -> tuple[SystemResult, SystemResult]:
    prefix = cfg.out / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port))
    argv = ["nginx", "-p", str(prefix), "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]
    with running(ChildProcess("nginx", argv, {}, cfg.out)) as proc:
        proc.wait_listening(port)
        status, _, _ = https_get(port, TRACKING_HOST, "/t/x")
        assert status == 302, status
        runs = measure(cfg, "nginx", port, {})
        # Reference for the load generator's own cost: one static path, no Lua per request.
        static = [run_wrk(cfg, port, cfg.duration, "nginx-static", {}, static="/t/static")]
    command = (f"nginx -p {os.path.relpath(prefix, ROOT)} -c nginx.conf -e stderr "
               "-g 'daemon off;'   # conf: worker_processes 1; access_log off; "
               "keepalive_requests 1000000; location / { return 302 ...; }")
    result = SystemResult("nginx", "nginx `return 302` (1 worker)", [command], runs)
    reference = SystemResult("nginx_static", "nginx, one static path, no Lua (1 run; "
                             "shows what the Lua path-picking costs wrk)",
                             [wrk_command(cfg, static="/t/static")], static)
    return result, reference


def baseline(kind: str, port: int, loop: str, *extra: str) -> list[str]:
    """bench/baselines.py's server `kind` on `port`."""
    return [PY, "-m", "bench.baselines", kind, "--port", str(port), "--loop", loop, *extra]


def bench_hmac(cfg: Config, links: Links, loop: str, lowlevel: bool = False) -> SystemResult:
    port = free_port()
    kind = "hmac-lowlevel" if lowlevel else "hmac"
    tag = f"{kind}-{loop}"
    env = {"LINK_KEYS": LINK_KEYS}
    argv = baseline(kind, port, loop)
    command = (command_line(argv, env).replace(LINK_KEYS, "$LINK_KEYS")
               .replace(f"--port {port}", "--port $PORT"))
    paced = None
    with running(ChildProcess(tag, argv, env, cfg.out)) as proc:
        proc.wait_for_log("listening", 30)
        check_redirects(port, links[0][0], links[0][1]["url"])
        runs = measure(cfg, tag, port, {"server": proc.pid})
        if lowlevel:
            return SystemResult(
                "hmac_lowlevel", f"bare aiohttp low-level server (web.Server) + HMAC, {loop}",
                [command], runs)
        if loop == "uvloop" and cfg.round == 0:
            cfg.pace_ms = pace_for(cfg, statistics.median(r.rps for r in runs))
            paced = run_wrk(cfg, port, cfg.duration, f"hmac-{loop}-paced", {"server": proc.pid},
                            pace_ms=cfg.pace_ms)
        if cfg.profile and loop == "uvloop" and cfg.round == 0:  # beside the redirector's
            spies = {"hmac-uvloop": start_pyspy(cfg.profile, cfg.out, proc.pid, "hmac-uvloop",
                                                cfg.duration)}
            time.sleep(0.5)
            run_wrk(cfg, port, cfg.duration, "hmac-uvloop-profiled", {"server": proc.pid})
            finish_pyspy(cfg.out, spies)
    return SystemResult(f"hmac_{loop}", f"bare aiohttp + HMAC, {loop}", [command], runs,
                        paced=paced)


def bench_naive(cfg: Config, links: Links, processes: int = 1) -> SystemResult:
    """The naive handler; with `processes` > 1, that many on one port (SO_REUSEPORT),
    each with its own pool of 20: the like-for-like baseline for the redirector's
    one-process-per-core row."""
    suffix = f"_x{processes}" if processes > 1 else ""
    with fresh_database(cfg.servers, f"naive{suffix}") as database:
        port = free_port()
        env = {"LINK_KEYS": LINK_KEYS}
        argv = baseline("naive", port, "uvloop", "--dsn", dsn(database))
        with contextlib.ExitStack() as stack:
            procs = [stack.enter_context(running(ChildProcess(
                f"naive{suffix}-{n}", argv, env, cfg.out))) for n in range(1, processes + 1)]
            for proc in procs:
                proc.wait_for_log("listening", 30)
            check_redirects(port, links[0][0], links[0][1]["url"])
            pids = {("server" if n == 1 else f"server-{n}"): proc.pid
                    for n, proc in enumerate(procs, start=1)}
            runs = measure(cfg, f"naive{suffix}", port, pids, uses=("postgres",))
        rows = count_rows(database)
        name = database_name(database)
    total = cfg.served[f"naive{suffix}"] + 1  # + the pre-check's click
    command = (command_line(argv, env).replace(LINK_KEYS, "$LINK_KEYS")
               .replace(name, f"bench_naive{suffix}_<id>")
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


def bench_redirector(cfg: Config, links: Links, processes: int = 1) -> SystemResult:
    """The redirector (`processes` of them sharing one port with SO_REUSEPORT, each with
    its own spool slot, as docs/operations.md deploys one per core) and one logger."""
    with (fresh_database(cfg.servers, "redirector") as database,
          fresh_namespace(cfg.servers, "redirector") as exchange,
          contextlib.ExitStack() as stack):
        port = free_port()
        spool = Path(tempfile.mkdtemp(prefix="spool-", dir=cfg.out))
        stack.callback(shutil.rmtree, spool, ignore_errors=True)
        broker = {"AMQP_URL": cfg.servers.amqp_url, "AMQP_EXCHANGE": exchange,
                  "DATABASE_URL": dsn(database)}
        env = {**broker, "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": LINK_KEYS,
               "SPOOL_DIR": str(spool), "REDIRECTOR_BIND": f"127.0.0.1:{port}"}
        suffix = f"-x{processes}" if processes > 1 else ""
        logger = stack.enter_context(running(ServiceProcess("logger", broker, cfg.out)))
        logger.wait_for_log('"logger.started"', 30)
        redirector = stack.enter_context(running(ServiceProcess("redirector", env, cfg.out)))
        redirector.wait_for_log('"broker.connected"', 30)
        redirector.wait_listening(port)
        extra = []
        for _ in range(2, processes + 1):
            more = stack.enter_context(running(ServiceProcess("redirector", env, cfg.out)))
            extra.append(more)
            more.wait_for_log('"redirector.started"', 30)
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
            spies = {name: start_pyspy(cfg.profile, cfg.out, pid, name, cfg.duration)
                     for name, pid in pids.items()}
            time.sleep(0.5)
            verify(run_wrk(cfg, port, cfg.duration, "redirector-profiled", pids))
            finish_pyspy(cfg.out, spies)
        for proc in (*extra, redirector):
            proc.terminate(40)
        rows_total, _ = wait_rows(database, state["rows"], timeout_s=30)
        logger.terminate(40)
        name = database_name(database)
    commands = [
        command_line(redirector.argv, env).replace(LINK_KEYS, "$LINK_KEYS")
        .replace(name, "bench_redir_<id>").replace(exchange, "bench-redirector-<id>")
        .replace(str(spool), "bench/out/<run>/spool")
        .replace(f"127.0.0.1:{port}", "127.0.0.1:$PORT"),
        command_line(logger.argv, broker).replace(name, "bench_redir_<id>")
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
