"""Settings declared once: each program reads exactly the variables it declares, every
default is a valid value, one parser per kind of value (delay lists, flags) whatever
the service, and a variable that may hold a secret never echoes it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pytest

from services.certifier import settings as certifier_settings
from services.classifier import settings as classifier_settings
from services.edge import settings as edge_settings
from services.logger import settings as logger_settings
from services.redirector import settings as redirector_settings
from services.verifier import settings as verifier_settings
from shared.errors import SettingsError
from shared.logs import LOG_LEVEL
from shared.settings import AMQP_URL, LINK_KEYS, REQUIRED, Env, Program, Setting
from shared.settings.parsers import matching, string
from tests.support.settings import PROGRAMS, SERVICES

MINIMAL = {"TRACKING_HOST": "click.platform.test", "LINK_KEYS": "k1:" + "s" * 40,
           "CERT_STORE_KEYS": "c1:" + "c" * 40, "EDGE_ID": "edge-a"}
LOADERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "redirector": redirector_settings.load,
    "logger": logger_settings.load,
    "verifier": verifier_settings.load,
    "certifier": certifier_settings.load,
    "classifier": classifier_settings.load,
    "edge": edge_settings.load,
}


class Recording(dict[str, str]):
    """An environment that notes every variable looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def error(call: Callable[[], object]) -> str:
    with pytest.raises(SettingsError) as info:
        call()
    return str(info.value)


# --- programs and their declarations ---------------------------------------------------------

@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_reads_exactly_the_variables_it_declares(service: str) -> None:
    environ = Recording(MINIMAL)
    LOADERS[service](environ)
    assert environ.asked == SERVICES[service].names


def test_a_program_cannot_read_a_variable_it_does_not_declare() -> None:
    with pytest.raises(LookupError, match="logger reads LINK_KEYS but does not declare it"):
        Env(MINIMAL, SERVICES["logger"])[LINK_KEYS]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_default_is_a_valid_value(program: str) -> None:
    for setting in PROGRAMS[program].settings:
        if setting.default is not REQUIRED:
            setting.read({})  # raises SettingsError naming it if the default is broken


def test_a_variable_several_programs_read_is_one_declaration() -> None:
    seen: dict[str, Setting[Any]] = {}
    for program in PROGRAMS.values():
        for setting in program.settings:
            assert setting.name.isupper() and setting.help, setting
            first = seen.setdefault(setting.name, setting)
            # A program's variant (another default, optional) keeps the declaration's help.
            assert setting.help == first.help, (program.name, setting.name)


def test_a_program_declares_each_variable_once() -> None:
    with pytest.raises(ValueError, match="LINK_KEYS"):
        Program("twice", (LINK_KEYS, LINK_KEYS.optional()))


def test_a_computed_default_says_how_the_docs_show_it() -> None:
    with pytest.raises(ValueError, match="X"):
        Setting("X", string, lambda: "computed", "a test's")


def test_how_the_docs_show_a_default() -> None:
    assert Setting("X", string, REQUIRED, "x").shown_default == "(required)"
    assert Setting("X", string, "", "x").shown_default == "(none)"
    assert Setting("X", string, "5", "x").shown_default == "`5`"
    assert Setting("X", string, "", "x", shown="the system's").shown_default == "the system's"
    assert LINK_KEYS.optional().shown_default == "(none)"


# --- one parser per kind of value -------------------------------------------------------------

DELAYS = [verifier_settings.VERIFIER_RETRY_DELAYS_MS, certifier_settings.CERTIFIER_RETRY_DELAYS_MS]


@pytest.mark.parametrize("setting", DELAYS, ids=lambda s: s.name)
@pytest.mark.parametrize(("value", "expected"), [
    ("200,400", (200, 400)),
    (" 200 , 400 ", (200, 400)),
    # Empty items are skipped, as in every list setting (the certifier refused them).
    ("200,,400", (200, 400)),
    ("200,400,", (200, 400)),
])
def test_retry_delays_alike_in_every_service(setting: Setting[tuple[int, ...]], value: str,
                                             expected: tuple[int, ...]) -> None:
    assert setting.read({setting.name: value}) == expected


@pytest.mark.parametrize("setting", DELAYS, ids=lambda s: s.name)
@pytest.mark.parametrize(("value", "says"), [
    # A tier is a queue named after its delay: a repeat is a mistake, not a second tier
    # (the certifier accepted it).
    ("200,200", "must be increasing positive milliseconds, got '200,200'"),
    ("400,200", "must be increasing positive milliseconds"),
    ("0,100", "must be increasing positive milliseconds"),
    (",", "must be increasing positive milliseconds"),
    ("200,soon", "must be comma-separated milliseconds, got '200,soon'"),
])
def test_bad_retry_delays_alike_in_every_service(setting: Setting[tuple[int, ...]], value: str,
                                                 says: str) -> None:
    assert error(lambda: setting.read({setting.name: value})).startswith(f"{setting.name} {says}")


FLAGS = [redirector_settings.REDIRECTOR_ACCESS_LOG, edge_settings.NGINX_VERIFY_TLS]


@pytest.mark.parametrize("setting", FLAGS, ids=lambda s: s.name)
def test_flags_alike_in_every_service(setting: Setting[bool]) -> None:
    for value in ("1", "true", "YES", "On"):
        assert setting.read({setting.name: value}) is True
    for value in ("0", "false", "No", "OFF"):
        assert setting.read({setting.name: value}) is False
    for environ in ({setting.name: "maybe"}, {setting.name: "2"}, {setting.name: "enabled"}):
        # Before, anything but 1/true/yes quietly meant "off" (NGINX_VERIFY_TLS=TRUE).
        assert error(partial(setting.read, environ)).startswith(f"{setting.name} must be 1 or 0")


def test_log_level() -> None:
    assert LOG_LEVEL.read({}) == "INFO"
    assert LOG_LEVEL.read({"LOG_LEVEL": "debug"}) == "DEBUG"
    # Before, an unknown level stopped the service with a KeyError traceback.
    assert error(lambda: LOG_LEVEL.read({"LOG_LEVEL": "verbose"})).startswith(
        "LOG_LEVEL must be one of DEBUG, INFO")


@pytest.mark.parametrize(("service", "name", "value"), [
    ("redirector", "REDIRECTOR_ACCESS_LOG", "maybe"),
    ("logger", "LOG_LEVEL", "loud"),
    ("verifier", "VERIFIER_RETRY_DELAYS_MS", "200,200"),
    ("verifier", "DNS_NAMESERVERS", "127.0.0.1:\u00b2"),
    ("certifier", "CERTIFIER_RETRY_DELAYS_MS", "100,100"),
    ("edge", "NGINX_RELOAD_COMMAND", "nginx -s 'reload"),
    ("edge", "NGINX_VERIFY_TLS", "TRUEE"),
    ("certifier", "ACME_LIMIT_ORDERS_PER_3H", "0"),
    ("certifier", "TRACKING_HOST", "1.2.3.4"),
])
def test_service_setting_errors_name_the_setting(service: str, name: str, value: str) -> None:
    assert error(lambda: LOADERS[service]({**MINIMAL, name: value})).startswith(f"{name} ")


# --- secrets -----------------------------------------------------------------------------------

def test_a_secret_variable_never_echoes_its_value_whatever_its_parser_says() -> None:
    token = Setting("API_TOKEN", matching(r"[a-z]+", "lower-case letters"), REQUIRED,
                    "a test's", redact=lambda _value: "***")
    message = error(lambda: token.read({"API_TOKEN": "Hunter2-Secret"}))
    assert message.startswith("API_TOKEN ") and "Hunter2-Secret" not in message


def test_a_url_without_a_password_is_shown_in_its_error() -> None:
    message = error(lambda: AMQP_URL.read({"AMQP_URL": "http://mq.internal/"}))
    assert message == "AMQP_URL must start with amqp:// or amqps://, got 'http://mq.internal/'"


def test_trackctl_up_refuses_a_malformed_redirector_bind_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trackctl import up

    def no_child(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a service was started")

    monkeypatch.setattr(up.subprocess, "Popen", no_child)
    assert error(lambda: up.run({"REDIRECTOR_BIND": "8080"})).startswith(
        "REDIRECTOR_BIND must be host:port")
