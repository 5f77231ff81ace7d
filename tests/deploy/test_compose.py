"""compose.yaml, the Dockerfile and .dockerignore, checked without a Docker engine.

`docker-compose config` (Debian's docker-compose 1.29: it validates and resolves the
file, no engine needed) must accept the file; then what it resolved is checked against
the code: every service it runs exists, every variable it sets is one that program
declares (its settings `PROGRAM`) and the values load through its own settings code,
every volume is declared, every long-running container has a healthcheck, nothing
stops a service from being scaled, and the paths shared between containers line up.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.settings import PROGRAMS

ROOT = Path(__file__).resolve().parents[2]
APP_IMAGE = "tracking-domains"
REQUIRED_ENV = {
    "TRACKING_HOST": "click.platform.example",
    "LINK_KEYS": "k2026:" + "x" * 40,
    "CERT_STORE_KEYS": "s2026:" + "y" * 40,
}
SCALABLE = ("redirector", "logger", "verifier", "certifier")


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    assert binary, ("docker-compose is not installed: `apt-get install -y "
                    "--no-install-recommends docker-compose` (scripts/test does it)")
    return binary


def _compose_config(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(extra_env)
    return subprocess.run([_docker_compose(), "-f", "compose.yaml", "config"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


@cache
def _resolved() -> dict[str, Any]:
    result = _compose_config(REQUIRED_ENV)
    assert result.returncode == 0, f"docker-compose config refused compose.yaml:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _resolved()


def _services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def _ours(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in _services(config).items():
        if service.get("image", "").split(":")[0] == APP_IMAGE:
            yield name, service


def _one_shots(config: dict[str, Any]) -> set[str]:
    return {dependency for service in _services(config).values()
            for dependency, how in (service.get("depends_on") or {}).items()
            if how.get("condition") == "service_completed_successfully"}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: "" if value is None else str(value)
            for key, value in (service.get("environment") or {}).items()}


def _mounts(service: dict[str, Any]) -> list[dict[str, str]]:
    """Volumes as {source, target, type, read_only}, from either syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            volume = {"source": source, "target": target, "type": kind,
                      "read_only": mode == "ro"}
        mounts.append(volume)
    return mounts


def _module_of(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    if command[:2] == ["python", "-m"] and command[2].startswith("services."):
        return command[2].split(".", 1)[1]
    return None


# --- the file as docker-compose sees it -------------------------------------------------------

def test_docker_compose_accepts_the_file_and_requires_what_it_must() -> None:
    _resolved()
    for missing in REQUIRED_ENV:
        result = _compose_config({k: v for k, v in REQUIRED_ENV.items() if k != missing})
        assert result.returncode != 0 and missing in result.stderr, (
            f"compose.yaml starts without {missing}: {result.stderr}")


def test_it_runs_every_service_rabbitmq_postgres_and_nginx(config: dict[str, Any]) -> None:
    services = _services(config)
    modules = {module for service in services.values()
               if (module := _module_of(service)) is not None}
    assert modules == {"redirector", "logger", "verifier", "certifier", "classifier",
                       "edge"}, modules
    for module in modules:
        assert (ROOT / "services" / module / "__main__.py").is_file(), module
    images = {service.get("image", "").split(":")[0] for service in services.values()}
    assert {"rabbitmq", "postgres", "nginx"} <= images, images
    assert "management" in services["rabbitmq"]["image"], "RabbitMQ without its management UI"


def test_every_command_exists(config: dict[str, Any]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, service in _ours(config):
        command = service.get("command") or []
        assert command, f"{name} runs the image's default command (trackctl --help)"
        if _module_of(service):
            continue
        if command[0] in scripts:
            assert (ROOT / "trackctl" / f"{command[1]}.py").is_file(), command
        else:  # a one-shot tool of the base image (prepare-volumes: chown)
            assert name in _one_shots(config) and not _environment(service), (name, command)


def test_migrations_run_once_before_anything_that_uses_the_database(
        config: dict[str, Any]) -> None:
    services = _services(config)
    migrate = services["migrate"]
    assert migrate["command"] == ["trackctl", "db", "upgrade"]
    assert migrate.get("restart", "no") == "no"
    for name, service in _ours(config):
        if _module_of(service) is None:
            continue
        depends = service.get("depends_on") or {}
        assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", name
        for dependency in ("rabbitmq", "postgres"):
            assert depends.get(dependency, {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {dependency} to be healthy")


# --- settings -----------------------------------------------------------------------------

def test_every_variable_set_is_a_setting_the_service_reads(config: dict[str, Any]) -> None:
    for name, service in _ours(config):
        env = _environment(service)
        if not env:
            continue
        program = _module_of(service) or service["command"][0]
        assert program in PROGRAMS, f"{name} runs {program}, which declares no settings"
        unknown = sorted(set(env) - PROGRAMS[program].names)
        assert not unknown, f"{name} sets {unknown}, which {program} never reads"


def test_every_service_loads_its_settings_from_what_compose_gives_it(
        config: dict[str, Any]) -> None:
    """The values parse (addresses, CIDRs, URLs, commands) and nothing required is missing."""
    for _name, service in _ours(config):
        module = _module_of(service)
        if module is None:
            continue
        settings = importlib.import_module(f"services.{module}.settings")
        settings.load(_environment(service))  # raises SettingsError naming the variable


def test_the_variables_nginx_is_given_are_read_by_its_scripts(config: dict[str, Any]) -> None:
    scripts = "\n".join(path.read_text() for path in (ROOT / "deploy" / "nginx").glob("*.sh"))
    for variable in _environment(_services(config)["nginx"]):
        assert re.search(rf"\${{?{variable}\b", scripts), f"no nginx script reads {variable}"


# --- volumes, health, scaling -----------------------------------------------------------------

def test_every_volume_is_declared_and_every_bind_mount_exists(config: dict[str, Any]) -> None:
    declared = set(config.get("volumes") or {})
    used = set()
    for name, service in _services(config).items():
        for mount in _mounts(service):
            if mount["type"] == "volume":
                assert mount["source"] in declared, f"{name} mounts undeclared {mount['source']}"
                used.add(mount["source"])
            elif mount["type"] == "bind":
                assert Path(mount["source"]).exists(), f"{name} mounts missing {mount['source']}"
    assert declared == used, f"declared but never mounted: {declared - used}"
    for wanted in ("postgres", "rabbitmq", "certbot", "acme-challenge", "nginx-generated"):
        assert wanted in declared, f"no named volume for {wanted}"


def test_every_long_running_container_has_a_healthcheck(config: dict[str, Any]) -> None:
    one_shots = _one_shots(config)
    for name, service in _services(config).items():
        if name in one_shots:
            assert service.get("restart", "no") == "no", f"one-shot {name} restarts"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always"), name
    for name, service in _services(config).items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in _services(config), (name, dependency)
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in _services(config)[dependency], (name, dependency)


def test_healthchecks_ask_the_port_each_service_is_given(config: dict[str, Any]) -> None:
    """A fixed port in a healthcheck reports whatever holds that port (under host
    networking, another container's process): ours read the service's own settings."""
    for name, service in _ours(config):
        module = _module_of(service)
        if module is None:
            continue
        assert service["healthcheck"]["test"] == [
            "CMD", "python", "-m", "shared.healthcheck", module], name
    for name, service in _services(config).items():
        test = " ".join(service.get("healthcheck", {}).get("test") or [])
        assert not re.search(r"127\.0\.0\.1:\d+|localhost:\d+", test), (
            f"{name}'s healthcheck names a fixed port: {test}")


def test_nothing_stops_a_service_from_being_scaled(config: dict[str, Any]) -> None:
    for name, service in _services(config).items():
        assert "container_name" not in service, f"{name} has a fixed container_name"
    for name in SCALABLE:
        service = _services(config)[name]
        assert not service.get("ports"), f"{name} publishes a host port: it cannot scale"
        assert "hostname" not in service, name


def test_sigterm_has_time_to_drain(config: dict[str, Any]) -> None:
    for name in SCALABLE:
        service = _services(config)[name]
        assert service.get("init") is True, f"{name}: no init to forward signals and reap"
        grace = service.get("stop_grace_period", "10s")
        assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= 30, (name, grace)


# --- what the containers share -------------------------------------------------------------------

def _volume_at(service: dict[str, Any], path: str) -> tuple[str, str, bool]:
    """(volume, path inside it, read-only) for a path inside a container."""
    best = None
    for mount in _mounts(service):
        target = mount["target"].rstrip("/")
        if (path == target or path.startswith(target + "/")) and (
                best is None or len(target) > len(best["target"])):
            best = mount
    assert best is not None, f"{path} is on no volume"
    return best["source"], path[len(best["target"].rstrip("/")):], bool(best.get("read_only"))


def test_nginx_reaches_every_redirector_replica(config: dict[str, Any]) -> None:
    services = _services(config)
    edge = _environment(services["edge"])
    redirector_port = _environment(services["redirector"])["REDIRECTOR_BIND"].rsplit(":", 1)[1]
    hosts = set()
    for upstream in edge["NGINX_UPSTREAMS"].split(","):
        host, port = upstream.strip().rsplit(":", 1)
        assert host in services and _module_of(services[host]) == "redirector", (
            f"upstream {upstream} is not the redirector service (Docker's DNS name for "
            "every replica)")
        assert port == redirector_port, (upstream, redirector_port)
        hosts.add(host)
    assert set(_environment(services["nginx"])["UPSTREAM_HOSTS"].split()) == hosts


def test_the_containers_share_challenges_certificates_and_the_nginx_include(
        config: dict[str, Any]) -> None:
    services = _services(config)
    certifier, edge, nginx = services["certifier"], services["edge"], services["nginx"]
    cenv, eenv = _environment(certifier), _environment(edge)

    # ACME challenges: written by the certifier, read by every redirector.
    written = _volume_at(certifier, cenv["ACME_CHALLENGE_DIR"])
    read = _volume_at(services["redirector"],
                      _environment(services["redirector"])["ACME_CHALLENGE_DIR"])
    assert written[:2] == read[:2] and not written[2]

    # Certificates: the edge agent's files, which its include names by the agent's paths;
    # nginx reads them (read-only), nothing else does, and never the certbot directory.
    files = _volume_at(edge, eenv["EDGE_CERT_DIR"])
    assert not files[2]
    assert _volume_at(nginx, eenv["EDGE_CERT_DIR"])[:2] == files[:2]
    assert _volume_at(nginx, eenv["EDGE_CERT_DIR"])[2], "nginx must not write certificates"
    assert eenv["EDGE_CERT_DIR"].startswith("/"), "relative paths would differ"
    assert not any(m["source"] == _volume_at(certifier, cenv["CERTBOT_DIR"])[0]
                   for m in _mounts(nginx)), "nginx reads the store's copies, not certbot's"
    # The workers' group (the nginx image's nginx, gid 101) is the agent's, to give it.
    assert eenv["EDGE_CERT_GROUP"] in [str(g) for g in edge.get("group_add", [])]

    # The include: written by the edge agent, included by nginx.conf.
    conf = Path(eenv["NGINX_CONF_PATH"])
    volume, inside, read_only = _volume_at(edge, str(conf))
    assert not read_only
    nginx_conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    includes = re.findall(r"^\s*include\s+([^;]+);", nginx_conf, re.MULTILINE)
    seen_by_nginx = [pattern for pattern in includes
                     if _volume_at(nginx, str(Path(pattern).parent))[0] == volume]
    assert seen_by_nginx, f"nginx.conf includes nothing from the {volume} volume"
    nginx_dir = next(m["target"] for m in _mounts(nginx) if m["source"] == volume)
    assert any(fnmatch.fnmatch(f"{nginx_dir}{inside}", pattern) for pattern in seen_by_nginx)
    mounted_conf = [m for m in _mounts(nginx) if m["target"] == "/etc/nginx/nginx.conf"]
    assert mounted_conf and Path(mounted_conf[0]["source"]) == ROOT / "deploy/nginx/nginx.conf"
    # The certifier has no nginx duty left: no nginx setting, no nginx volume.
    assert not [name for name in cenv if name.startswith("NGINX_")]
    assert not any(m["source"] == volume for m in _mounts(certifier))

    # The reload: the command is installed in the image and talks to nginx's watcher
    # through the directory of the include.
    command = shlex.split(eenv["NGINX_RELOAD_COMMAND"])
    assert f"/usr/local/bin/{command[0]}" in _dockerfile_copies().values()
    assert [_volume_at(edge, directory)[:2] for directory in command[1:]] == \
        [(volume, "")], command
    assert "reload-watcher.sh /etc/nginx/tracking" in \
        (ROOT / "deploy/nginx/start.sh").read_text()
    assert nginx_dir == "/etc/nginx/tracking"


def test_volumes_are_prepared_for_the_services_user(config: dict[str, Any]) -> None:
    services = _services(config)
    prepare = services["prepare-volumes"]
    useradd = re.search(r"useradd .*--uid (\d+)", _dockerfile_text())
    assert useradd is not None, "the Dockerfile creates no user with a fixed uid"
    uid = useradd.group(1)
    assert prepare["command"][:2] == ["chown", f"{uid}:{uid}"]
    prepared = {_volume_at(prepare, path)[0] for path in prepare["command"][2:]}
    for name, service in _ours(config):
        for mount in _mounts(service):
            if mount["type"] == "volume" and not mount.get("read_only"):
                assert mount["source"] in prepared, f"{name} writes to unprepared {mount['source']}"


def test_third_party_images_are_pinned_to_a_version(config: dict[str, Any]) -> None:
    for name, service in _services(config).items():
        image = service.get("image", "")
        if image.split(":")[0] == APP_IMAGE:
            assert service.get("build"), f"{name} uses the app image without building it"
            continue
        tag = image.partition(":")[2]
        assert re.match(r"\d", tag), f"{name}: {image} is not pinned to a version"


# --- Dockerfile and .dockerignore ---------------------------------------------------------------

def _dockerfile_text() -> str:
    return (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", _dockerfile_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _dockerfile_copies() -> dict[str, str]:
    """Source (in the build context) -> destination, for COPY without --from."""
    copies = {}
    for keyword, rest in _instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        for source in words[:-1]:
            copies[source] = words[-1]
    return copies


def _build_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (what a FROM may name)."""
    args = {}
    for keyword, rest in _instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    return args


def test_the_dockerfile_builds_from_one_base_argument_with_no_registry_frontend() -> None:
    """No `# syntax=` line (BuildKit would fetch that frontend from a registry); every
    stage from the BASE_IMAGE argument, whose default is the official image pinned to a
    release (scripts/images passes a base made from Debian packages instead)."""
    text = _dockerfile_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE), (
        "a `# syntax=` line makes every build fetch the frontend from a registry")
    default = _build_args().get("BASE_IMAGE")
    assert default, "no `ARG BASE_IMAGE=...` before the first FROM"
    assert re.match(r"\d+\.\d+\.\d+", default.partition(":")[2]), (
        f"BASE_IMAGE={default}: pin the base to a release")
    aliases: set[str] = set()
    for keyword, rest in _instructions():
        if keyword != "FROM":
            continue
        image, _, alias = rest.partition(" AS ")
        image = image.split()[-1]
        assert image in ("${BASE_IMAGE}", "$BASE_IMAGE") or image in aliases, (
            f"FROM {image}: every stage starts from BASE_IMAGE (or an earlier stage)")
        if alias:
            aliases.add(alias.strip())


def test_the_dockerfile_builds_a_small_image_run_by_an_unprivileged_user() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "not a multi-stage build"
    final = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"][-1]
    users = [rest for keyword, rest in instructions[final:] if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as root"
    cmd = [rest for keyword, rest in instructions if keyword == "CMD"]
    command = json.loads(cmd[-1])  # exec form: signals reach the process
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts or command[:2] == ["python", "-m"], command
    assert any(keyword == "COPY" and "--from=" in rest for keyword, rest in instructions), (
        "the runtime stage does not take its virtualenv from the build stage")
    # Only `python3` is on every base's PATH (Debian's package has no `python`).
    for keyword, rest in instructions[:final]:
        if keyword == "RUN":
            assert not re.search(r"(^|[\s&;|])python\s", rest), (
                f"RUN {rest[:60]}...: call python3 (or the virtualenv's own python)")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            ignored = not negated
    return ignored


# Packages setuptools finds that are for development only: kept out of the image.
DEV_ONLY_PACKAGES = {"demo"}


def _packaged_top_levels() -> set[str]:
    """Top-level packages `[tool.setuptools.packages.find] include` matches."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    return {path.parent.name for path in ROOT.glob("*/__init__.py")
            if any(fnmatch.fnmatch(path.parent.name, pattern) for pattern in patterns)}


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_the_rest() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = _dockerfile_copies()
    for source in copies:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        if source != ".":
            assert not _ignored(source, patterns), f"COPY {source}, but .dockerignore drops it"
    assert "." in copies, "the Dockerfile names what it copies: a new package needs an edit"
    # The whole context is copied: it must hold the package, all of it.
    for needed in ("pyproject.toml", "README.md"):
        assert not _ignored(needed, patterns), f".dockerignore drops {needed}"
    packages = _packaged_top_levels()
    assert {"shared", "services"} <= packages, packages
    for package in packages:
        files = [str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*")
                 if path.is_file() and "__pycache__" not in path.parts]
        if package in DEV_ONLY_PACKAGES:
            assert all(_ignored(path, patterns) for path in files), (
                f"{package} is for development; keep it out of the image")
            continue
        dropped = [path for path in files if _ignored(path, patterns)]
        assert not dropped, f".dockerignore drops part of the package: {dropped[:5]}"
    for heavy in (".venv", ".git", "var", "tests", "bench", "docs", "scripts",
                  "deploy/grafana", "compose.yaml"):
        assert _ignored(heavy, patterns), f"{heavy} is sent to the Docker daemon"
