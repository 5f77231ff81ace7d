"""trackctl's command line: the commands exist, and usage errors exit 2 before any I/O."""

from __future__ import annotations

import pytest

from services.verifier import settings as verifier_settings
from shared.errors import SettingsError
from trackctl import main as trackctl_main
from trackctl.main import build_parser, main


@pytest.fixture(autouse=True)
def _keep_logging_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() quietens logging process-wide; not in the test process."""
    monkeypatch.setattr(trackctl_main, "quiet_logs", lambda: None)


def exit_status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    return int(caught.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["domain", "add", "track.a.test", "--customer", "c1", "--json"],
    ["domain", "list", "--customer", "c1", "--status", "active", "--limit", "5"],
    ["domain", "show", "track.a.test"],
    ["domain", "recheck", "track.a.test", "--json"],
    ["domain", "delete", "track.a.test", "--yes"],
    ["dlq", "list", "logger", "--limit", "10"],
    ["dlq", "show", "verifier", "--index", "2"],
    ["dlq", "replay", "certifier", "--reason", "exhausted", "--via-exchange", "--limit", "3"],
    ["dlq", "purge", "logger", "--yes"],
    ["clicks", "--campaign", "spring", "--since", "24h", "--json"],
    ["doctor", "track.a.test", "--connect", "127.0.0.1", "--https-port", "8443",
     "--ca-bundle", "ca.pem", "--redirector", "http://127.0.0.1:8080", "--json"],
])
def test_every_command_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]


@pytest.mark.parametrize("argv", [
    ["domain", "add", "track.a.test"],  # --customer is required
    ["dlq", "list"],
    ["dlq", "list", "logger", "--limit", "0"],
    ["dlq", "replay", "logger", "--reason", "sleepy"],
    ["clicks"],
    ["doctor", "track.a.test", "--timeout", "0"],
    ["nonsense"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, _ = exit_status(capsys, *argv)
    assert status == 2


def test_bad_values_exit_2_with_one_clear_line(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_HOST", "click.platform.test")
    status, err = exit_status(capsys, "domain", "add", "not a name", "--customer", "c1")
    assert status == 2 and err.startswith("trackctl: 'not a name' cannot be a tracking domain")
    status, err = exit_status(capsys, "clicks", "--campaign", "k", "--since", "yesterday")
    assert status == 2 and "24h" in err
    status, err = exit_status(capsys, "doctor", "click.platform.test")
    assert status == 2 and "platform's own tracking host" in err
    status, err = exit_status(capsys, "doctor", "track.a.test", "--redirector", "ftp://x")
    assert status == 2 and "--redirector" in err
    status, err = exit_status(capsys, "dlq", "list", "redirector")
    assert status == 2 and "one of certifier, classifier, logger, verifier" in err
    monkeypatch.setenv("AMQP_URL", "http://wrong")
    status, err = exit_status(capsys, "dlq", "list", "logger")
    assert status == 2 and err.startswith("trackctl: configuration error: AMQP_URL")


@pytest.mark.parametrize("name, value", [
    ("ACME_CAA_IDENTITY", 'a"b'),
    ("DNS_NAMESERVERS", "dns.example"),
    ("DNS_TIMEOUT_S", "0"),
    ("TRACKING_HOST_ALIASES", "click.old.test:80"),
])
def test_doctor_refuses_what_the_verifier_refuses(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   name: str, value: str) -> None:
    environ = {"TRACKING_HOST": "click.platform.test", name: value}
    with pytest.raises(SettingsError) as refused:
        verifier_settings.load(environ)
    for key, setting in environ.items():
        monkeypatch.setenv(key, setting)
    status, err = exit_status(capsys, "doctor", "track.a.test")
    assert status == 2
    assert err == f"trackctl: configuration error: {refused.value}\n"
