"""The container healthcheck asks the address the service itself listens on."""

from __future__ import annotations

import importlib

import pytest

from shared import healthcheck
from shared.errors import SettingsError
from shared.healthcheck import SERVICES, main, probe_url

SERVICE_ENV = {"TRACKING_HOST": "click.platform.test", "LINK_KEYS": "k1:" + "s" * 40,
               "CERT_STORE_KEYS": "c1:" + "c" * 40,
               "ACME_EMAIL": "certs@platform.test", "EDGE_ID": "edge-a"}


def test_defaults_are_the_services_own() -> None:
    assert probe_url("redirector", {}) == "http://127.0.0.1:8080/healthz"
    assert probe_url("logger", {}) == "http://127.0.0.1:9102/metrics"
    assert probe_url("verifier", {}) == "http://127.0.0.1:9103/metrics"
    assert probe_url("certifier", {}) == "http://127.0.0.1:9104/metrics"


def test_the_port_comes_from_the_services_setting() -> None:
    env = {"REDIRECTOR_BIND": "127.0.0.1:18080", "METRICS_BIND": "127.0.0.1:19999"}
    assert probe_url("redirector", env) == "http://127.0.0.1:18080/healthz"
    for service in ("logger", "verifier", "certifier"):
        assert probe_url(service, env) == "http://127.0.0.1:19999/metrics"


def test_a_wildcard_bind_is_asked_on_loopback() -> None:
    assert probe_url("redirector", {"REDIRECTOR_BIND": "0.0.0.0:8080"}) == \
        "http://127.0.0.1:8080/healthz"
    assert probe_url("logger", {"METRICS_BIND": "[::]:9102"}) == "http://[::1]:9102/metrics"
    assert probe_url("logger", {"METRICS_BIND": "10.1.2.3:9102"}) == \
        "http://10.1.2.3:9102/metrics"


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("binds", [
    {}, {"REDIRECTOR_BIND": "0.0.0.0:28080", "METRICS_BIND": "0.0.0.0:29101"},
    {"REDIRECTOR_BIND": "[::1]:28081", "METRICS_BIND": "127.0.0.2:29102"}])
def test_it_reads_what_the_service_reads(service: str, binds: dict[str, str]) -> None:
    settings = importlib.import_module(f"services.{service}.settings").load(
        {**SERVICE_ENV, **binds})
    host, port = settings.bind if service == "redirector" else settings.metrics_bind
    asked = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    asked = f"[{asked}]" if ":" in asked else asked
    assert probe_url(service, {**SERVICE_ENV, **binds}).startswith(f"http://{asked}:{port}/")


def test_metrics_off_or_malformed_is_one_line_and_unhealthy(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SettingsError, match="METRICS_BIND is off"):
        probe_url("logger", {"METRICS_BIND": "off"})
    assert main(["verifier"], {"METRICS_BIND": "9103"}) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("verifier healthcheck: METRICS_BIND")


def test_unknown_service_is_a_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nginx"], {}) == 1
    assert main([], {}) == 1
    assert "usage: python -m shared.healthcheck" in capsys.readouterr().err


def test_healthy_only_on_200(monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    answers = {"http://127.0.0.1:8080/healthz": None,
               "http://127.0.0.1:9102/metrics": "http://127.0.0.1:9102/metrics answered 503"}
    monkeypatch.setattr(healthcheck, "probe", lambda url: answers[url])
    assert main(["redirector"], {}) == 0
    assert main(["logger"], {}) == 1
    assert capsys.readouterr().err == \
        "logger unhealthy: http://127.0.0.1:9102/metrics answered 503\n"
