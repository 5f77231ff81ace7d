"""SIGTERM while a service is still starting (waiting for a broker that refuses, or a
database that never answers) ends it at once and cleanly: exit status 0 within 2 s,
whatever step its start-up is in (shared/lifecycle.py)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from demo.net import free_port
from demo.processes import ServiceProcess
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import service_env
from tests.fault.harness import log_lines, tail
from tests.support import environment
from tests.support.proxy import SilentServer

pytestmark = pytest.mark.fault

SERVICES = ("logger", "verifier", "certifier", "redirector", "edge")
EXIT_WITHIN_S = 2.0


@pytest.fixture
def refusing_broker() -> Iterator[BrokerSettings]:
    """A broker URL on a loopback port where nothing listens: every connection attempt
    is refused, as when the broker is down. The port is bound (not listening) for the
    whole test, so nothing else can take it meanwhile."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        url = urlsplit(environment.amqp_url())
        credentials = url.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
        yield BrokerSettings(url=url._replace(netloc=netloc).geturl(),
                             exchange=f"test-{uuid.uuid4().hex[:10]}")


def env_for(name: str, broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
            **extra: str) -> dict[str, str]:
    """Valid settings for `name`; the certifier's point at files under `tmp_path`."""
    env = service_env(broker, database, tmp_path, **extra)
    if name == "certifier":
        env.update(ACME_DIRECTORY_URL="https://127.0.0.1:9/dir",
                   CERTBOT_DIR=str(tmp_path / "certbot"),
                   ACME_CHALLENGE_DIR=str(tmp_path / "challenges"))
    if name == "redirector":
        env.update(REDIRECTOR_BIND=f"127.0.0.1:{free_port()}")
    if name == "edge":
        env.update(EDGE_ID="edge-fault", EDGE_CERT_DIR=str(tmp_path / "edge-certs"),
                   NGINX_CONF_PATH=str(tmp_path / "nginx" / "edge.conf"))
    return env


def wait_until(condition: Callable[[], object], process: ServiceProcess, what: str,
               timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.process is not None and process.process.poll() is None, (
            f"{process.name} exited before {what}:\n{tail(process)}")
        assert time.monotonic() < deadline, f"{process.name}: no {what}:\n{tail(process)}"
        time.sleep(0.02)


def assert_sigterm_ends_it_at_once(process: ServiceProcess) -> None:
    """SIGTERM: exit status 0 within EXIT_WITHIN_S."""
    before = time.monotonic()
    code = process.terminate(timeout_s=15)
    took = time.monotonic() - before
    assert code == 0, tail(process)
    assert took < EXIT_WITHIN_S, f"{process.name} took {took:.2f} s to exit:\n{tail(process)}"


def assert_stopped_before_it_started(process: ServiceProcess) -> None:
    assert not log_lines(process, f'"{process.name}.started"')
    [stopped] = log_lines(process, f'"{process.name}.stopped"')
    assert '"started": false' in stopped, stopped


@pytest.mark.parametrize("name", ["logger", "verifier", "certifier", "edge"])
def test_sigterm_while_the_broker_refuses_exits_0_at_once(
        name: str, refusing_broker: BrokerSettings, database: DatabaseSettings,
        tmp_path: Path) -> None:
    env = env_for(name, refusing_broker, database, tmp_path)
    with ServiceProcess(name, env, tmp_path) as process:
        # Retrying: at least one attempt refused, the next one pending or waited for.
        wait_until(lambda: log_lines(process, '"broker.unreachable"'), process,
                   "failed connection attempt")
        assert_sigterm_ends_it_at_once(process)
        assert_stopped_before_it_started(process)


def test_sigterm_to_a_redirector_linking_to_a_refusing_broker_exits_0_at_once(
        refusing_broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path) -> None:
    # The redirector does not wait for the broker: it serves (and spools) while its
    # background link keeps retrying.
    env = env_for("redirector", refusing_broker, database, tmp_path)
    with ServiceProcess("redirector", env, tmp_path) as process:
        wait_until(lambda: log_lines(process, '"redirector.started"')
                   and log_lines(process, '"broker.unreachable"'), process,
                   "start and failed connection attempt")
        assert_sigterm_ends_it_at_once(process)
        [stopped] = log_lines(process, '"redirector.stopped"')
        assert '"drained": true' in stopped, stopped  # nothing was spooled


@pytest.mark.parametrize("name", SERVICES)
def test_sigterm_while_the_database_hangs_exits_0_at_once(
        name: str, broker: BrokerSettings, database: DatabaseSettings,
        tmp_path: Path) -> None:
    # The database is the first thing the logger, verifier and certifier open (their
    # schema check), and the redirector loads its domains from it before it listens.
    with SilentServer() as silent:
        hanging = DatabaseSettings(url=make_url(database.url).set(
            host="127.0.0.1", port=silent.port).render_as_string(hide_password=False))
        env = env_for(name, broker, hanging, tmp_path)
        with ServiceProcess(name, env, tmp_path) as process:
            wait_until(lambda: silent.accepted > 0, process, "connection to the database")
            assert_sigterm_ends_it_at_once(process)
            assert_stopped_before_it_started(process)

