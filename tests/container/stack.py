"""compose.yaml run for real on this machine's Docker engine, host-networked.

The engine here has no bridge (no iptables; scripts/images starts it that way), so every
container shares the host's network. The real compose file is merged (`docker-compose
config`) with an override, and then only what host networking forces is changed:

- every service: `network_mode: host`; `ports`, `expose` and `hostname` dropped (compose
  refuses them, or they mean nothing, on the host's network);
- every address a service binds or dials by service name becomes 127.0.0.1 and a free
  port picked by the test (REDIRECTOR_BIND, METRICS_BIND, NGINX_*_LISTEN,
  NGINX_UPSTREAMS, nginx's loopback status port and its HEALTH_URL); nginx's reload
  watcher gets no UPSTREAM_HOSTS (there is no service name to resolve);
- the `rabbitmq` and `postgres` services are the machine's own servers instead, at
  127.0.0.1, in a vhost and a database of the test's own (AMQP_URL, DATABASE_URL);
- the nginx image is the local one made from Debian packages (no registry to pull from);
- the test's CA (Pebble) is trusted by the certifier: its listener CA is mounted and
  named by ACME_CA_BUNDLE.

What compose.yaml exposes as variables (TRACKING_HOST, LINK_KEYS, ACME_DIRECTORY_URL,
DNS_NAMESERVERS, TRUSTED_PROXIES, ...) is given as variables, as an operator would.
`host_networked()` is checked without an engine in tests/deploy/test_host_network.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from demo.net import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
# Debian's client: /usr/local/bin/docker may be a newer one that this engine does not suit.
DOCKER = "/usr/bin/docker"
# The images scripts/images makes (the bases' names may be changed there too).
PYTHON_BASE_IMAGE = os.environ.get("PYTHON_BASE_IMAGE", "local/python3:bookworm")
NGINX_BASE_IMAGE = os.environ.get("NGINX_BASE_IMAGE", "local/nginx:bookworm")
APP_IMAGE = "tracking-domains:latest"
# compose.yaml's services that the machine's own servers replace.
REPLACED = ("rabbitmq", "postgres")
DROPPED_KEYS = ("ports", "expose", "hostname")
ONE_SHOTS = ("migrate", "prepare-volumes")
LONG_RUNNING = ("redirector", "logger", "classifier", "verifier", "certifier", "nginx", "edge")
APP_SERVICES = ("redirector", "logger", "classifier", "verifier", "certifier", "edge")
# The app services with a database (the classifier has none).
DATABASE_SERVICES = ("redirector", "logger", "verifier", "certifier", "edge")
ACME_CA_IN_CONTAINER = "/run/acme-ca.pem"
PROJECT_LABEL = "com.docker.compose.project"


class ComposeError(AssertionError):
    """A docker / docker-compose command failed (message: the command and its output)."""


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise ComposeError("docker-compose is not installed: run scripts/images")
    return binary


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, bounded in time; a failure raises ComposeError with its output."""
    try:
        result = subprocess.run(list(argv), env=None if env is None else dict(env),
                                cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        raise ComposeError(f"{' '.join(argv)} took more than {timeout_s} s") from exc
    if check and result.returncode != 0:
        raise ComposeError(f"{' '.join(argv)} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# --- the configuration -----------------------------------------------------------------------

@dataclass(frozen=True)
class Ports:
    """The loopback ports of one run, all distinct and free when picked."""

    redirector: int
    metrics: Mapping[str, int]
    nginx_http: int
    nginx_https: int
    nginx_status: int

    @classmethod
    def pick(cls) -> Ports:
        picked: list[int] = []
        while len(picked) < 4 + len(APP_SERVICES):
            port = free_port()
            if port not in picked:
                picked.append(port)
        apps = len(APP_SERVICES)
        return cls(redirector=picked[0], metrics=dict(zip(APP_SERVICES, picked[1:apps + 1],
                                                          strict=True)),
                   nginx_http=picked[apps + 1], nginx_https=picked[apps + 2],
                   nginx_status=picked[apps + 3])

    def all(self) -> list[int]:
        return [self.redirector, *self.metrics.values(), self.nginx_http, self.nginx_https,
                self.nginx_status]


def loopback(port: int) -> str:
    return f"127.0.0.1:{port}"


def nginx_conf_on(port: int) -> str:
    """deploy/nginx/nginx.conf with its loopback status server on `port` instead."""
    text = NGINX_CONF.read_text()
    changed, count = re.subn(r"listen 127\.0\.0\.1:8081;", f"listen 127.0.0.1:{port};", text)
    if count != 1:
        raise ComposeError("deploy/nginx/nginx.conf no longer has one `listen 127.0.0.1:8081;`"
                           " status server: update tests/container/stack.py")
    return changed


def override(ports: Ports, *, amqp_urls: Mapping[str, str], database_url: str,
             acme_ca: Path, nginx_conf: Path, nginx_gid: int | None = None) -> dict[str, Any]:
    """The override file: host networking, loopback addresses, the machine's servers.

    `amqp_urls` maps each service to its AMQP_URL (a test may route one service through
    a proxy it controls). `nginx_gid`: the group of nginx's workers in the nginx image the
    test runs (the local one is not the official image, whose `nginx` group is 101),
    given to the edge agent's certificate files.
    """
    host: dict[str, Any] = {"network_mode": "host"}
    services: dict[str, Any] = {
        "migrate": {**host, "environment": {"DATABASE_URL": database_url}},
        "prepare-volumes": dict(host),
    }
    for name in APP_SERVICES:
        services[name] = {**host, "environment": {
            "AMQP_URL": amqp_urls[name], "METRICS_BIND": loopback(ports.metrics[name])}}
        if name in DATABASE_SERVICES:
            services[name]["environment"]["DATABASE_URL"] = database_url
    services["redirector"]["environment"]["REDIRECTOR_BIND"] = loopback(ports.redirector)
    services["edge"]["environment"].update({
        "NGINX_UPSTREAMS": loopback(ports.redirector),
        "NGINX_HTTP_LISTEN": loopback(ports.nginx_http),
        "NGINX_HTTPS_LISTEN": loopback(ports.nginx_https)})
    if nginx_gid is not None:
        services["edge"]["environment"]["EDGE_CERT_GROUP"] = str(nginx_gid)
        services["edge"]["group_add"] = [str(nginx_gid)]
    services["certifier"]["environment"]["ACME_CA_BUNDLE"] = ACME_CA_IN_CONTAINER
    services["certifier"]["volumes"] = [f"{acme_ca}:{ACME_CA_IN_CONTAINER}:ro"]
    services["nginx"] = {
        **host, "image": NGINX_BASE_IMAGE,
        "environment": {"UPSTREAM_HOSTS": "",
                        "HEALTH_URL": f"http://127.0.0.1:{ports.nginx_status}/healthz"},
        "volumes": [f"{nginx_conf}:/etc/nginx/nginx.conf:ro"]}
    return {"services": services}


def nginx_worker_gid() -> int:
    """The gid of the `nginx` user in the nginx image the test runs."""
    result = run([DOCKER, "run", "--rm", "--network", "none", NGINX_BASE_IMAGE,
                  "id", "-g", "nginx"])
    return int(result.stdout.strip())


def compose_env(variables: Mapping[str, str]) -> dict[str, str]:
    """docker-compose's environment: a few basics and compose.yaml's variables."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(variables)
    return env


def merged(project: str, override_file: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    """compose.yaml and the override, as `docker-compose config` resolves them."""
    result = run([docker_compose(), "-p", project, "-f", str(COMPOSE_FILE),
                  "-f", str(override_file), "config"], env=compose_env(variables))
    return yaml.safe_load(result.stdout)


def host_networked(config: Mapping[str, Any]) -> dict[str, Any]:
    """What an override cannot say: the replaced services gone (and every dependency
    on them), the keys compose refuses under host networking dropped."""
    changed: dict[str, Any] = json.loads(json.dumps(config))  # a deep copy of plain data
    services = changed["services"]
    for name in REPLACED:
        services.pop(name, None)
        (changed.get("volumes") or {}).pop(name, None)
    for service in services.values():
        for key in DROPPED_KEYS:
            service.pop(key, None)
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            for name in REPLACED:
                depends.pop(name, None)
            if not depends:
                del service["depends_on"]
    return changed


# --- who a process talks to ---------------------------------------------------------------------

def _process_tree(roots: set[int]) -> set[int]:
    """`roots` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = set(), list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def _socket_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net stores each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def peer_addresses(pids: set[int]) -> set[str]:
    """The remote addresses of the connected TCP and UDP sockets the processes hold (their
    network namespace is the host's: host networking)."""
    inodes = _socket_inodes(_process_tree(pids))
    peers = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            remote, inode = fields[2], int(fields[9])
            address, _, port = remote.partition(":")
            if inode in inodes and int(port, 16) != 0:
                peers.add(_address(address))
    return peers


def is_loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    return parsed.is_loopback


# --- the running project -----------------------------------------------------------------------

@dataclass
class Project:
    """One compose project, from the host-networked file written in `directory`."""

    name: str
    directory: Path
    config: dict[str, Any]
    variables: Mapping[str, str]

    def __post_init__(self) -> None:
        self.file = self.directory / "compose.host.yaml"
        self.file.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def compose(self, *args: str, timeout_s: float = 180.0,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([docker_compose(), "--ansi", "never", "-p", self.name, "-f", str(self.file),
                    *args], env=compose_env(self.variables), timeout_s=timeout_s, check=check)

    def containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of every container of the project, running or not."""
        ids = run([DOCKER, "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={self.name}"]
                  ).stdout.split()
        if not ids:
            return []
        return json.loads(run([DOCKER, "inspect", *ids]).stdout)

    def volumes(self) -> list[str]:
        return run([DOCKER, "volume", "ls", "-q", "--filter",
                    f"label={PROJECT_LABEL}={self.name}"]).stdout.split()

    def states(self) -> dict[str, list[dict[str, Any]]]:
        """Each service's containers' `State` (with `Health` where it has a healthcheck)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for container in self.containers():
            service = container["Config"]["Labels"].get("com.docker.compose.service", "?")
            found.setdefault(service, []).append(container["State"])
        return found

    def wait_healthy(self, services: Sequence[str], timeout_s: float) -> float:
        """Seconds until every one of `services` has a running, healthy container."""
        started = time.monotonic()
        while True:
            states = self.states()
            waiting = {name: [s.get("Health", {}).get("Status", s["Status"])
                              for s in states.get(name, [])]
                       for name in services}
            waiting = {name: seen for name, seen in waiting.items() if "healthy" not in seen}
            if not waiting:
                return time.monotonic() - started
            for name in services:
                for state in states.get(name, []):
                    if state["Status"] == "exited" or state.get("Restarting"):
                        raise ComposeError(f"{name} exited ({state['ExitCode']}):\n"
                                           f"{self.logs(name)}")
            if time.monotonic() - started > timeout_s:
                raise ComposeError(f"not healthy within {timeout_s} s: {waiting}\n"
                                   f"{self.logs()}")
            time.sleep(0.5)

    def peers(self) -> set[str]:
        """Every remote address the project's running processes are connected to now."""
        return peer_addresses({container["State"]["Pid"] for container in self.containers()
                               if container["State"]["Running"]})

    def logs(self, *services: str, lines: int = 60) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(lines), *services,
                              timeout_s=60, check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout_s=240)
