"""Verifier settings: nameservers, retry tiers, deadline and pacing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.verifier.settings import VERIFIER_RETRY_DELAYS_MS, VerifyPolicy, load
from shared.broker.names import RETRY_DELAYS_MS
from shared.errors import SettingsError
from shared.lifecycle import load_or_exit
from shared.verification.settings import DNS_NAMESERVERS


def test_defaults() -> None:
    settings = load({"TRACKING_HOST": "Click.Platform.TEST"})
    assert settings.policy.tracking_host == "click.platform.test"
    assert settings.policy.caa_identity == "letsencrypt.org"
    assert settings.policy.deadline_s == 48 * 3600
    assert settings.policy.recheck_interval_s == 3600
    assert settings.nameservers == ()
    assert settings.prefetch == 256
    assert settings.retry_delays_ms == RETRY_DELAYS_MS
    # Rechecks wait between the shortest and the longest tier.
    assert settings.policy.min_recheck_delay_s == 1.0
    assert settings.policy.max_recheck_delay_s == 3600.0
    assert settings.policy.tombstone_s > settings.policy.max_recheck_delay_s
    assert settings.policy.tracking_host_aliases == ()


def test_tracking_host_aliases() -> None:
    settings = load({"TRACKING_HOST": "click.new.test",
                     "TRACKING_HOST_ALIASES": "Click.Old.TEST., click.older.test"})
    assert settings.policy.tracking_host == "click.new.test"
    assert settings.policy.tracking_host_aliases == ("click.old.test", "click.older.test")


def test_a_malformed_alias_stops_the_verifier_with_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load_or_exit("verifier", load, {"TRACKING_HOST": "click.new.test",
                                        "TRACKING_HOST_ALIASES": "click.old.test:80"})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("verifier: configuration error: TRACKING_HOST_ALIASES entry "
                          "'click.old.test:80' is not a valid host name")


@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1", (("127.0.0.1", 53),)),
    ("127.0.0.1:5353, 10.0.0.2", (("127.0.0.1", 5353), ("10.0.0.2", 53))),
    ("::1", (("::1", 53),)),
    ("[::1]:5353", (("::1", 5353),)),
    ("[2001:db8::1]", (("2001:db8::1", 53),)),
])
def test_nameservers(value: str, parsed: tuple[tuple[str, int], ...]) -> None:
    assert DNS_NAMESERVERS.parse(value) == parsed


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:0", "127.0.0.1:x",
                                   "[::1]x", "127.0.0.1:70000"])
def test_bad_nameservers_name_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match="DNS_NAMESERVERS"):
        DNS_NAMESERVERS.parse(value)


def test_retry_delays() -> None:
    assert VERIFIER_RETRY_DELAYS_MS.parse("200, 400") == (200, 400)
    for bad in ("400,200", "0", "a", ","):
        with pytest.raises(SettingsError, match="VERIFIER_RETRY_DELAYS_MS"):
            VERIFIER_RETRY_DELAYS_MS.parse(bad)


def test_other_bad_settings_name_themselves() -> None:
    with pytest.raises(SettingsError, match="TRACKING_HOST"):
        load({})
    with pytest.raises(SettingsError, match="ACME_CAA_IDENTITY"):
        load({"TRACKING_HOST": "click.platform.test", "ACME_CAA_IDENTITY": 'a"b'})
    with pytest.raises(SettingsError, match="VERIFY_DEADLINE_S"):
        load({"TRACKING_HOST": "click.platform.test", "VERIFY_DEADLINE_S": "soon"})


def test_recheck_delay_grows_with_age_within_bounds() -> None:
    policy = VerifyPolicy("click.platform.test", min_recheck_delay_s=1,
                          max_recheck_delay_s=3600)
    delays = [policy.recheck_delay_s(age) for age in (0, 2, 60, 600, 3600, 86400)]
    assert delays == sorted(delays)
    assert delays[0] == 1 and delays[-1] == 3600


def test_periodic_checks_are_jittered_around_the_interval() -> None:
    policy = VerifyPolicy("click.platform.test", recheck_interval_s=3600, recheck_jitter=0.1,
                          rng=random.Random(7))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    dues = {policy.next_periodic_check(now) for _ in range(50)}
    assert len(dues) > 40
    assert all(timedelta(seconds=3240) <= due - now <= timedelta(seconds=3960) for due in dues)
