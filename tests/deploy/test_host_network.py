"""The container test's host-network version of compose.yaml changes only what it must.

tests/container runs the real compose.yaml, merged with an override and adjusted for
host networking (tests/container/stack.py). Checked here without an engine (only
`docker-compose config`): every other setting of every service is compose.yaml's own,
so what the container test proves is about the file operators run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.container.stack import (
    ACME_CA_IN_CONTAINER,
    DROPPED_KEYS,
    REPLACED,
    Ports,
    host_networked,
    merged,
    override,
)
from tests.deploy.test_compose import REQUIRED_ENV, _resolved

PROJECT = "tdpaper"
# What host networking (or the machine's own servers, or the test's CA) forces, by key.
ENVIRONMENT_CHANGED = {
    "AMQP_URL", "DATABASE_URL", "REDIRECTOR_BIND", "METRICS_BIND", "NGINX_UPSTREAMS",
    "NGINX_HTTP_LISTEN", "NGINX_HTTPS_LISTEN", "UPSTREAM_HOSTS",
}
ENVIRONMENT_ADDED = {"ACME_CA_BUNDLE", "HEALTH_URL"}
MOUNTS_CHANGED = {ACME_CA_IN_CONTAINER, "/etc/nginx/nginx.conf"}


def _host_config(tmp_path: Path) -> dict[str, Any]:
    ca, conf = tmp_path / "ca.pem", tmp_path / "nginx.conf"
    ca.write_text("")
    conf.write_text("")
    urls = dict.fromkeys(("redirector", "logger", "verifier", "certifier", "edge"),
                         "amqp://guest:guest@127.0.0.1:5672/test-paper")
    file = tmp_path / "override.yaml"
    file.write_text(yaml.safe_dump(override(
        Ports.pick(), amqp_urls=urls, database_url="postgresql://postgres@127.0.0.1/td_test_x",
        acme_ca=ca, nginx_conf=conf)))
    return host_networked(merged(PROJECT, file, REQUIRED_ENV))


def _targets(service: dict[str, Any]) -> dict[str, str]:
    return {volume.split(":")[1]: volume for volume in service.get("volumes") or []}


def test_only_what_host_networking_forces_is_changed(tmp_path: Path) -> None:
    original = _resolved()["services"]
    changed = _host_config(tmp_path)
    services = changed["services"]
    assert set(services) == set(original) - set(REPLACED)
    assert set(changed["volumes"]) == set(_resolved()["volumes"]) - set(REPLACED)
    for name, service in services.items():
        before = original[name]
        assert service["network_mode"] == "host", name
        for key in DROPPED_KEYS:
            assert key not in service, (name, key)
        keys = set(service) | set(before)
        for key in keys - {"network_mode", "environment", "volumes", "depends_on", "image",
                           *DROPPED_KEYS}:
            assert service.get(key) == before.get(key), f"{name}.{key} changed"
        env, env_before = service.get("environment") or {}, before.get("environment") or {}
        differs = {key for key in set(env) | set(env_before) if env.get(key) !=
                   env_before.get(key)}
        assert differs <= ENVIRONMENT_CHANGED | ENVIRONMENT_ADDED, (name, differs)
        assert set(env_before) <= set(env), f"{name} lost a setting"
        mounts, mounts_before = _targets(service), _targets(before)
        assert {target for target in set(mounts) | set(mounts_before)
                if mounts.get(target) != mounts_before.get(target)} <= MOUNTS_CHANGED, name
        depends = set(service.get("depends_on") or {})
        assert depends == set(before.get("depends_on") or {}) - set(REPLACED), name
        if name != "nginx":
            assert service.get("image") == before.get("image"), name
    assert services["nginx"]["image"] != original["nginx"]["image"]  # no registry here
