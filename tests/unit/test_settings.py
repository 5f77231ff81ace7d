"""Settings: one clear error per bad setting, naming it and never showing a secret."""

from __future__ import annotations

import ipaddress

import pytest

from services.logger import settings as logger_settings
from services.redirector import settings as redirector_settings
from services.redirector.settings import TRUSTED_PROXIES
from shared.errors import SettingsError
from shared.settings import (
    DEFAULT_AMQP_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_EXCHANGE,
    LINK_KEYS,
    REDIRECTOR_BIND,
    REQUIRED,
    TRACKING_HOST,
    BrokerSettings,
    DatabaseSettings,
    Env,
    LinkKey,
    Setting,
    normalise_database_url,
    parse_link_keys,
    redact_url,
    tracking_host_aliases,
)
from shared.settings.parsers import number, string, whole

SECRET = "hunter2-0123456789abcdef0123456789"  # 34 characters
SHORT = "hunter2-short"
MINIMAL = {"TRACKING_HOST": "click.platform.test", "LINK_KEYS": f"k1:{SECRET}"}


def error(call) -> str:
    with pytest.raises(SettingsError) as info:
        call()
    return str(info.value)


def broker(environ: dict[str, str]) -> BrokerSettings:
    return BrokerSettings.read(Env(environ))


def database(environ: dict[str, str]) -> DatabaseSettings:
    return DatabaseSettings.read(Env(environ))


def read_int(name: str, environ: dict[str, str], default: str = "1", minimum: int = 0) -> int:
    return Setting(name, whole(minimum), default, "a test's").read(environ)


def read_float(name: str, environ: dict[str, str], default: str = "1",
               minimum: float = 0.0) -> float:
    return Setting(name, number(minimum), default, "a test's").read(environ)


# --- basics -----------------------------------------------------------------------------

def test_required_setting_missing_or_blank() -> None:
    for environ in ({}, {"X": ""}, {"X": "   "}):
        assert error(lambda e=environ: Setting("X", string, REQUIRED, "x").read(e)).startswith(
            "X ")


def test_values_are_stripped_and_defaults_used() -> None:
    environ = {"A": "  value  ", "B": " "}
    assert Setting("A", string, REQUIRED, "a").read(environ) == "value"
    assert Setting("B", string, "default", "b").read(environ) == "default"
    assert read_int("MISSING", environ, "7") == 7
    assert read_float("MISSING", environ, "1.5") == 1.5


@pytest.mark.parametrize(("value", "expected"), [("5", 5), (" 12 ", 12), ("0", 0)])
def test_int(value: str, expected: int) -> None:
    assert read_int("N", {"N": value}) == expected


@pytest.mark.parametrize("value", ["x", "1.5", "1e3", "-1", "²"])
def test_bad_int_names_the_setting(value: str) -> None:
    assert error(lambda: read_int("N", {"N": value})).startswith("N ")


def test_int_minimum() -> None:
    assert "at least 3" in error(lambda: read_int("N", {"N": "2"}, "5", minimum=3))


@pytest.mark.parametrize(("value", "expected"), [("2.5", 2.5), ("3", 3.0), ("0", 0.0)])
def test_float(value: str, expected: float) -> None:
    assert read_float("F", {"F": value}) == expected


@pytest.mark.parametrize("value", ["x", "-0.5", "1,5"])
def test_bad_float_names_the_setting(value: str) -> None:
    assert error(lambda: read_float("F", {"F": value})).startswith("F ")


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_float_refuses_nan(value: str) -> None:
    assert error(lambda: read_float("F", {"F": value}, minimum=0.1)).startswith("F ")


# --- REDIRECTOR_BIND (host:port) ------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:1", ("::", 1)),
])
def test_host_port(value: str, expected: tuple[str, int]) -> None:
    assert REDIRECTOR_BIND.read({"REDIRECTOR_BIND": value}) == expected


def test_host_port_default() -> None:
    assert REDIRECTOR_BIND.read({}) == ("127.0.0.1", 8080)


@pytest.mark.parametrize("value", [
    "8080", ":8080", "host:", "host:0", "host:65536", "host:http", "host:-1", "[]:80",
    "host:80:", "host: 80",
])
def test_bad_host_port(value: str) -> None:
    message = error(lambda: REDIRECTOR_BIND.read({"REDIRECTOR_BIND": value}))
    assert message.startswith("REDIRECTOR_BIND must be host:port")


@pytest.mark.parametrize("port", ["\u00b2", "\u2460"])
def test_host_port_with_odd_unicode_digits(port: str) -> None:
    environ = {"REDIRECTOR_BIND": f"host:{port}"}
    assert error(lambda: REDIRECTOR_BIND.read(environ)).startswith("REDIRECTOR_BIND")


# --- LINK_KEYS ------------------------------------------------------------------------------

def test_link_keys_first_signs_order_kept() -> None:
    keys = parse_link_keys(f"new:{SECRET}, old:{'o' * 40} ,x_Y-9:{'z' * 32}")
    assert [k.kid for k in keys] == ["new", "old", "x_Y-9"]
    assert keys[0].secret == SECRET.encode()
    assert keys[2].secret == b"z" * 32


def test_secret_may_contain_colons_and_non_ascii() -> None:
    (key,) = parse_link_keys("k:" + "a:b:" * 8 + "ü")
    assert key.secret == ("a:b:" * 8 + "ü").encode("utf-8")


def test_secret_is_never_in_a_repr() -> None:
    (key,) = parse_link_keys(f"k:{SECRET}")
    assert SECRET not in repr(key)
    assert SECRET not in str(key)


def test_link_keys_required() -> None:
    assert error(lambda: LINK_KEYS.read({})).startswith("LINK_KEYS ")


@pytest.mark.parametrize("value", [
    f"k1:{SHORT}",
    f"k1:{SECRET},k2:{SHORT}",
    "k1:" + "s" * 31,
])
def test_short_secret_is_refused_without_showing_it(value: str) -> None:
    message = error(lambda: parse_link_keys(value))
    assert message.startswith("LINK_KEYS ")
    assert "at least 32" in message
    assert SHORT not in message
    assert "s" * 31 not in message


def test_secret_of_exactly_32_characters() -> None:
    assert parse_link_keys("k:" + "s" * 32)[0].secret == b"s" * 32


def test_duplicate_kid() -> None:
    message = error(lambda: parse_link_keys(f"k1:{SECRET},k1:{'o' * 40}"))
    assert message.startswith("LINK_KEYS ")
    assert "twice" in message
    assert SECRET not in message
    assert "o" * 40 not in message


@pytest.mark.parametrize("kid", ["", "k" * 33, "bad kid", "bad.kid", "kid/1", "ключ"])
def test_bad_kid(kid: str) -> None:
    message = error(lambda: parse_link_keys(f"{kid}:{SECRET}"))
    assert message.startswith("LINK_KEYS ")
    assert SECRET not in message


def test_kid_of_32_characters() -> None:
    assert parse_link_keys("k" * 32 + ":" + SECRET)[0].kid == "k" * 32


@pytest.mark.parametrize("value", [SECRET, f"k1:{SECRET},{SECRET}", f"k1:{SECRET},", ","])
def test_entry_without_colon_never_shows_it(value: str) -> None:
    message = error(lambda: parse_link_keys(value))
    assert message.startswith("LINK_KEYS ")
    assert SECRET not in message


def test_secret_with_a_comma_is_split_and_refused_safely() -> None:
    # A ',' separates entries, so the secret's tail becomes an entry of its own.
    message = error(lambda: parse_link_keys("k1:" + "a" * 32 + "," + SECRET))
    assert SECRET not in message


# --- AMQP -----------------------------------------------------------------------------------

def test_broker_defaults() -> None:
    settings = broker({})
    assert settings == BrokerSettings(url=DEFAULT_AMQP_URL, exchange=DEFAULT_EXCHANGE)
    assert "guest" not in repr(settings)


def test_broker_custom() -> None:
    settings = broker({"AMQP_URL": f"amqps://u:{SECRET}@mq:5671/vh",
                       "AMQP_EXCHANGE": "test-1.a_b"})
    assert settings.exchange == "test-1.a_b"
    assert SECRET not in repr(settings)
    assert settings.safe_url == "amqps://u:***@mq:5671/vh"


def test_bad_amqp_scheme_names_the_setting_without_the_password() -> None:
    message = error(lambda: broker({"AMQP_URL": f"http://u:{SECRET}@mq/"}))
    assert message.startswith("AMQP_URL ")
    assert SECRET not in message


def test_unparseable_amqp_url_is_a_settings_error() -> None:
    message = error(lambda: broker({"AMQP_URL": f"amqp://u:{SECRET}@[::1/"}))
    assert message.startswith("AMQP_URL ")
    assert SECRET not in message


@pytest.mark.parametrize("exchange", ["has space", "a/b", "x" * 101, "ü"])
def test_bad_exchange(exchange: str) -> None:
    assert error(lambda: broker({"AMQP_EXCHANGE": exchange})).startswith("AMQP_EXCHANGE ")


# --- DATABASE_URL ---------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
    ("postgres://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
    ("postgresql+asyncpg://db/x", "postgresql+asyncpg://db/x"),
    ("sqlite:///var/t.db", "sqlite+aiosqlite:///var/t.db"),
    ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ("postgresql://db/x?sslmode=require", "postgresql+asyncpg://db/x?sslmode=require"),
])
def test_database_url_normalisation(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected
    assert database({"DATABASE_URL": url}) == DatabaseSettings(url=expected)


def test_database_default() -> None:
    assert database({}).url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize("url", [
    f"mysql://u:{SECRET}@db/x", f"postgresql+psycopg://u:{SECRET}@db/x",
    f"http://u:{SECRET}@db/x",
])
def test_unsupported_database_scheme(url: str) -> None:
    message = error(lambda: normalise_database_url(url))
    assert message.startswith("DATABASE_URL ")
    assert SECRET not in message


def test_database_url_without_scheme() -> None:
    assert error(lambda: normalise_database_url("var/t.db")).startswith("DATABASE_URL ")


@pytest.mark.parametrize("url", [f"postgresql:/u:{SECRET}@db/x", f"u:{SECRET}@db/x"])
def test_malformed_database_url_never_shows_the_password(url: str) -> None:
    message = error(lambda: normalise_database_url(url))
    assert message.startswith("DATABASE_URL ")
    assert SECRET not in message


def test_database_safe_url() -> None:
    settings = database({"DATABASE_URL": f"postgresql://app:{SECRET}@db:5432/t"})
    assert settings.safe_url == "postgresql+asyncpg://app:***@db:5432/t"
    assert SECRET not in repr(settings)


# --- redact_url -----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
    ("amqp://u:p%40ss@host/vh", "amqp://u:***@host/vh"),
    ("amqp://u:p@ss@host/", "amqp://u:***@host/"),
    ("amqp://:secret@host/", "amqp://:***@host/"),
    ("postgresql://u:pw@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
    ("amqp://user@host/", "amqp://user@host/"),
    ("amqp://host/", "amqp://host/"),
    ("sqlite+aiosqlite:///var/tracking.db", "sqlite+aiosqlite:///var/tracking.db"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize("url", [f"amqp://u:{SECRET}#x@host/", f"amqp://u:{SECRET}/x@host/",
                                 f"amqp://u:{SECRET}?x@host/"])
def test_redact_url_with_unescaped_delimiters_in_the_password(url: str) -> None:
    assert SECRET not in redact_url(url)


# --- TRUSTED_PROXIES ------------------------------------------------------------------------

def test_networks() -> None:
    networks = TRUSTED_PROXIES.read(
        {"TRUSTED_PROXIES": " 10.0.0.0/8, 192.168.1.7 ,,::1, 10.1.2.3/16"})
    assert networks == (ipaddress.ip_network("10.0.0.0/8"),
                        ipaddress.ip_network("192.168.1.7/32"),
                        ipaddress.ip_network("::1/128"),
                        ipaddress.ip_network("10.1.0.0/16"))


def test_no_networks() -> None:
    assert TRUSTED_PROXIES.read({}) == ()
    assert TRUSTED_PROXIES.read({"TRUSTED_PROXIES": " "}) == ()


@pytest.mark.parametrize("value", ["nonsense", "10.0.0.0/33", "10.0.0.1 10.0.0.2", "10.0.0.0/8,x",
                                   "300.1.1.1"])
def test_bad_networks(value: str) -> None:
    message = error(lambda: TRUSTED_PROXIES.read({"TRUSTED_PROXIES": value}))
    assert message.startswith("TRUSTED_PROXIES ")


# --- TRACKING_HOST --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("Click.Platform.TEST.", "click.platform.test"),
    ("localhost", "localhost"),
    ("bücher.example", "xn--bcher-kva.example"),
])
def test_tracking_host(value: str, expected: str) -> None:
    assert TRACKING_HOST.read({"TRACKING_HOST": value}) == expected


@pytest.mark.parametrize("value", ["", "127.0.0.1", "host:8080", "-bad-.example", "*.example"])
def test_bad_tracking_host(value: str) -> None:
    assert error(lambda: TRACKING_HOST.read({"TRACKING_HOST": value})).startswith(
        "TRACKING_HOST ")


# --- TRACKING_HOST_ALIASES ------------------------------------------------------------------

HOST = "click.new.test"


def aliases(value: str | None) -> tuple[str, ...]:
    environ = {} if value is None else {"TRACKING_HOST_ALIASES": value}
    return tracking_host_aliases(Env(environ), HOST)


@pytest.mark.parametrize(("value", "expected"), [
    (None, ()),
    ("", ()),
    (" , ", ()),
    ("click.old.test", ("click.old.test",)),
    (" Click.Old.TEST. ,click.older.test,", ("click.old.test", "click.older.test")),
    ("localhost", ("localhost",)),  # single labels, as TRACKING_HOST allows
    ("klick.bücher.test", ("klick.xn--bcher-kva.test",)),
])
def test_host_aliases_are_normalised_like_the_host(value: str | None,
                                                   expected: tuple[str, ...]) -> None:
    assert aliases(value) == expected


@pytest.mark.parametrize(("value", "says"), [
    ("click.old.test:443", "entry 'click.old.test:443' is not a valid host name"),
    ("https://click.old.test", "is not a valid host name"),
    ("click.old.test,192.0.2.1", "entry '192.0.2.1' is not a valid host name: "),
    ("*.old.test", "wildcard"),
    ("click..old.test", "empty label"),
    ("Click.New.Test.", "names TRACKING_HOST (click.new.test) itself"),
    ("click.old.test, CLICK.OLD.TEST", "names click.old.test twice"),
])
def test_malformed_host_aliases_name_the_setting(value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        aliases(value)
    message = str(caught.value)
    assert message.startswith("TRACKING_HOST_ALIASES ") and says in message
    assert "\n" not in message


# --- whole services: every bad setting is named ----------------------------------------------

def test_redirector_settings_load() -> None:
    settings = redirector_settings.load({**MINIMAL, "TRUSTED_PROXIES": "10.0.0.0/8",
                                         "REDIRECTOR_BIND": "0.0.0.0:9000",
                                         "TRACKING_HOST_ALIASES": "Click.Old.test., x.test"})
    assert settings.bind == ("0.0.0.0", 9000)
    assert settings.tracking_host_aliases == ("click.old.test", "x.test")
    assert redirector_settings.load(MINIMAL).tracking_host_aliases == ()
    assert settings.tracking_host == "click.platform.test"
    assert settings.link_keys == (LinkKey(kid="k1", secret=SECRET.encode()),)
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(("name", "value"), [
    ("REDIRECTOR_BIND", "nope"),
    ("TRACKING_HOST", ""),
    ("TRACKING_HOST", "1.2.3.4"),
    ("LINK_KEYS", ""),
    ("LINK_KEYS", f"k1:{SHORT}"),
    ("TRUSTED_PROXIES", "x"),
    ("AMQP_URL", "http://mq/"),
    ("AMQP_EXCHANGE", "a b"),
    ("DATABASE_URL", "mysql://db/x"),
    ("SPOOL_MAX_BYTES", "1024"),
    ("SPOOL_MAX_BYTES", "lots"),
    ("CLICK_BATCH_SIZE", "0"),
    ("CLICK_LINGER_MS", "soon"),
    ("DOMAIN_REFRESH_S", "0"),
    ("DRAIN_TIMEOUT_S", "-1"),
    ("TRACKING_HOST_ALIASES", "click.old.test:80"),
    ("TRACKING_HOST_ALIASES", "click.platform.test"),
])
def test_redirector_setting_errors_name_the_setting(name: str, value: str) -> None:
    message = error(lambda: redirector_settings.load({**MINIMAL, name: value}))
    assert message.startswith(f"{name} ")
    assert SECRET not in message
    assert SHORT not in message


def test_logger_settings_load() -> None:
    settings = logger_settings.load({"LOGGER_BATCH_ROWS": "10", "LOGGER_FLUSH_MS": "2.5"})
    assert (settings.batch_rows, settings.flush_ms) == (10, 2.5)


@pytest.mark.parametrize(("name", "value"), [
    ("LOGGER_BATCH_ROWS", "0"),
    ("LOGGER_FLUSH_MS", "x"),
    ("LOGGER_PREFETCH", "0"),
    ("LOGGER_MAX_BACKOFF_S", "0"),
    ("AMQP_URL", f"ftp://u:{SECRET}@mq/"),
    ("DATABASE_URL", f"oracle://u:{SECRET}@db/x"),
])
def test_logger_setting_errors_name_the_setting(name: str, value: str) -> None:
    message = error(lambda: logger_settings.load({name: value}))
    assert message.startswith(f"{name} ")
    assert SECRET not in message


# --- secrets in other spellings (issue 11) ----------------------------------------------------

URL_SAFE_SECRET = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA"  # 38 characters, kid-like
SHORT_KID_LIKE = "Zm9vYmFyYmF6cXV4"  # 16 characters that would pass as a key id


@pytest.mark.parametrize("value", [
    f"{URL_SAFE_SECRET}:k2026",  # written secret:kid
    f"{SECRET}:k2026",
    f"k1:{SECRET},{URL_SAFE_SECRET}:k2",
])
def test_link_keys_written_secret_colon_kid_never_show_the_secret(value: str) -> None:
    message = error(lambda: parse_link_keys(value))
    assert message.startswith("LINK_KEYS ")
    assert URL_SAFE_SECRET not in message
    assert SECRET not in message
    assert "kid:secret" in message


def test_a_short_secret_written_first_is_not_echoed_as_a_key_id() -> None:
    message = error(lambda: parse_link_keys(f"{SHORT_KID_LIKE}:k1"))
    assert "at least 32" in message
    assert SHORT_KID_LIKE not in message


def test_a_repeated_key_id_is_not_echoed() -> None:
    message = error(lambda: parse_link_keys(
        f"{SHORT_KID_LIKE}:{SECRET},{SHORT_KID_LIKE}:{'o' * 40}"))
    assert "entries 1 and 2" in message
    assert SHORT_KID_LIKE not in message


@pytest.mark.parametrize(("url", "expected"), [
    (f"postgresql://app@db/x?password={SECRET}", "postgresql://app@db/x?password=***"),
    (f"postgresql://db/x?sslmode=require&password={SECRET}&x=1",
     "postgresql://db/x?sslmode=require&password=***&x=1"),
    (f"postgresql://db/x?PassWord={SECRET}", "postgresql://db/x?PassWord=***"),
    (f"postgresql://db/x?pass%77ord={SECRET}", "postgresql://db/x?pass%77ord=***"),
    (f"postgresql://db/x?sslpassword={SECRET}#f", "postgresql://db/x?sslpassword=***#f"),
    (f"amqp://guest@mq/?password={SECRET}", "amqp://guest@mq/?password=***"),
    (f"amqp://u:{SECRET}@mq/?password={SECRET}", "amqp://u:***@mq/?password=***"),
])
def test_redact_url_hides_a_password_given_as_a_query_parameter(url: str,
                                                                expected: str) -> None:
    assert redact_url(url) == expected


def test_a_password_in_the_query_never_reaches_a_settings_error_or_safe_url() -> None:
    settings = database({"DATABASE_URL": f"postgresql://app@db/x?password={SECRET}"})
    assert SECRET not in settings.safe_url
    message = error(lambda: database({"DATABASE_URL": f"mysql://db/x?password={SECRET}"}))
    assert SECRET not in message
    message = error(lambda: broker({"AMQP_URL": f"http://mq/?password={SECRET}"}))
    assert SECRET not in message


def test_amqp_url_with_a_password_query_parameter_is_refused_without_showing_it() -> None:
    # aio-pika does not read a password from the query, and prints the query in its own
    # reconnect warnings: such a URL is refused, never used.
    message = error(lambda: broker({"AMQP_URL": f"amqp://guest@mq/?password={SECRET}"}))
    assert message.startswith("AMQP_URL ")
    assert SECRET not in message


@pytest.mark.parametrize("url", [
    f"amqp://u:{SECRET[:8]}/{SECRET[8:]}@mq:5672/",  # urlsplit's netloc ends at the '/'
    f"amqp://u:{SECRET}@mq:notaport/",
])
def test_an_amqp_url_urlsplit_misreads_never_echoes_the_password(url: str) -> None:
    try:
        broker({"AMQP_URL": url})
    except SettingsError as exc:
        assert SECRET[:8] not in str(exc) and SECRET[8:] not in str(exc)


@pytest.mark.parametrize("url", [
    "postgresql://app@db:notaport/x", "postgresql://db:5432x/x",
    "postgresql://app@db:99999/x", "postgresql://[::1]:x/db",
    f"postgresql://app:{SECRET}@db:port/x",
])
def test_a_database_url_with_a_bad_port_is_a_settings_error(url: str) -> None:
    message = error(lambda: database({"DATABASE_URL": url}))
    assert message.startswith("DATABASE_URL ")
    assert "port" in message
    assert SECRET not in message


@pytest.mark.parametrize("url", [
    "postgresql://app@db:5432/x", "postgresql://[::1]:5432/x", "postgresql://[::1]/x",
    f"postgresql://app:{SECRET[:5]}:/x{SECRET[5:]}@db:5432/x", "postgresql:///x?host=/run/pg",
    "sqlite:///var/t.db",
])
def test_database_urls_with_good_or_no_ports_are_accepted(url: str) -> None:
    assert database({"DATABASE_URL": url}).url.endswith(url.split("://", 1)[1])
