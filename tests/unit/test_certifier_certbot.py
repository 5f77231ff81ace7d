"""Reading certbot's answers: failure classes from its debug log, certificate files, the hook."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.certifier import challenge_hook
from services.certifier import settings as certifier_settings
from services.certifier.certbot import (
    MAX_RETRY_AFTER,
    Certbot,
    CertbotError,
    CertbotFailure,
    CertificateInfo,
    FailureKind,
    Stopping,
    classify_log,
    read_certificate,
)
from services.certifier.handlers import explain
from services.certifier.issuance import renew_at, renewal_due
from shared.errors import SettingsError

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# The shape of certbot's debug log: request and response bodies as indented JSON.
_REQUEST = """\
2026-11-26 23:05:26,392:DEBUG:acme.client:Sending POST request to https://ca/authZ/1:
{
  "protected": "eyJhbGciOiAiUlMyNTYifQ",
  "payload": ""
}
"""
_CHALLENGE_FAILED = _REQUEST + """\
2026-11-26 23:05:26,395:DEBUG:acme.client:Received response:
HTTP 200
Content-Type: application/json; charset=utf-8

{
   "status": "invalid",
   "identifier": {"type": "dns", "value": "track.customer-a.test"},
   "challenges": [
      {
         "type": "http-01",
         "status": "invalid",
         "error": {
            "type": "urn:ietf:params:acme:error:%s",
            "detail": "%s",
            "status": 403
         }
      }
   ]
}
2026-11-26 23:05:26,395:INFO:certbot._internal.auth_handler:Challenge failed for domain
"""
_RATE_LIMITED = _REQUEST + """\
2026-11-26 23:05:26,395:DEBUG:acme.client:Received response:
HTTP 429
Content-Type: application/problem+json
Retry-After: 3600

{
  "type": "urn:ietf:params:acme:error:rateLimited",
  "detail": "%s",
  "status": 429
}
"""


def challenge_failed(kind: str, detail: str = "it went wrong") -> str:
    return _CHALLENGE_FAILED % (kind, detail)


@pytest.mark.parametrize(("urn", "kind"), [
    ("unauthorized", FailureKind.VALIDATION),
    ("incorrectResponse", FailureKind.VALIDATION),
    ("connection", FailureKind.VALIDATION),
    ("dns", FailureKind.VALIDATION),
    ("tls", FailureKind.VALIDATION),
    ("caa", FailureKind.REFUSED),
    ("rejectedIdentifier", FailureKind.REFUSED),
    ("accountDoesNotExist", FailureKind.ACCOUNT),
    ("invalidContact", FailureKind.CONFIGURATION),
    ("serverInternal", FailureKind.CA_ERROR),
    ("badNonce", FailureKind.CA_ERROR),
])
def test_failure_class_comes_from_the_acme_problem_type(urn: str, kind: FailureKind) -> None:
    failure = classify_log(challenge_failed(urn, "Non-200 status code: 404"), NOW)
    assert failure is not None
    assert failure.kind is kind and failure.acme_error == urn
    assert failure.detail == "Non-200 status code: 404"


def test_a_log_without_a_problem_document_is_not_classified() -> None:
    assert classify_log(_REQUEST + "requests.exceptions.ConnectionError: refused\n", NOW) is None
    assert classify_log("", NOW) is None


def test_the_last_specific_problem_wins_over_compound_and_earlier_ones() -> None:
    compound = """\
{
  "type": "urn:ietf:params:acme:error:compound",
  "detail": "several",
  "subproblems": [
    {"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids"}
  ]
}
"""
    failure = classify_log(challenge_failed("badNonce") + compound, NOW)
    assert failure is not None and failure.acme_error == "caa"


def test_rate_limit_retry_after_from_the_detail_or_the_header() -> None:
    detail = ("too many certificates (5) already issued for this exact set of identifiers in "
              "the last 168h0m0s, retry after 2026-11-28 10:30:00 UTC: see https://letsencrypt")
    failure = classify_log(_RATE_LIMITED % detail, NOW)
    assert failure is not None and failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after == datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
    failure = classify_log(_RATE_LIMITED % "too many new orders recently", NOW)
    assert failure is not None and failure.retry_after == NOW + timedelta(hours=1)


@pytest.mark.parametrize("depth", [900, 990, 100_000])
def test_a_problem_document_nested_absurdly_deep_is_still_classified(depth: int) -> None:
    """A CA (or whatever answers in its place) can nest JSON as deep as it likes: the
    failure is still classified from the problem types, never a RecursionError."""
    nested = "[" * depth + "]" * depth
    text = _REQUEST + (
        "2026-11-26 23:05:26,395:DEBUG:acme.client:Received response:\nHTTP 403\n\n"
        '{\n  "type": "urn:ietf:params:acme:error:caa",\n  "detail": "CAA forbids",\n'
        f'  "subproblems": {nested}\n}}\n')
    failure = classify_log(text, NOW)
    assert failure is not None
    assert failure.kind is FailureKind.REFUSED and failure.acme_error == "caa"


def test_subproblems_nested_deep_inside_a_parsed_document_are_found() -> None:
    inner = '{"type": "urn:ietf:params:acme:error:dns", "detail": "NXDOMAIN"}'
    depth = 480  # parses (within json's own limit), then walked without recursion
    text = ('{\n"type": "urn:ietf:params:acme:error:compound", "subproblems": '
            + '[{"x": ' * depth + inner + "}]" * depth + "}\n")
    failure = classify_log(text, NOW)
    assert failure is not None and failure.acme_error == "dns"


@pytest.mark.parametrize("seconds", ["99999999999999999999", "9" * 5000, "315360000000"])
def test_a_retry_after_too_large_to_represent_is_a_classified_rate_limit(
        seconds: str) -> None:
    text = (_RATE_LIMITED % "too many new orders recently").replace(
        "Retry-After: 3600", f"Retry-After: {seconds}")
    failure = classify_log(text, NOW)
    assert failure is not None and failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after == NOW + MAX_RETRY_AFTER


def test_a_retry_after_date_beyond_the_cap_is_capped() -> None:
    detail = "too many certificates, retry after 9999-12-31 23:59:59 UTC: see https://x"
    failure = classify_log(_RATE_LIMITED % detail, NOW)
    assert failure is not None and failure.retry_after == NOW + MAX_RETRY_AFTER


def test_problem_types_are_found_even_in_one_line_bodies() -> None:
    text = 'DEBUG body: {"type": "urn:ietf:params:acme:error:dns", "detail": "NXDOMAIN"}'
    failure = classify_log(text, NOW)
    assert failure is not None and failure.kind is FailureKind.VALIDATION


def test_reasons_tell_the_customer_what_to_fix() -> None:
    name = "track.customer-a.test"
    caa = explain(name, CertbotFailure(FailureKind.REFUSED, "CAA record forbids", "caa"),
                  "click.platform.test")
    assert "CAA record" in caa and 'issue "letsencrypt.org"' in caa
    assert caa.endswith("The certificate authority said: CAA record forbids")
    wrong = explain(name, CertbotFailure(FailureKind.VALIDATION, "404", "unauthorized"),
                    "click.platform.test")
    assert f"{name} is a CNAME to click.platform.test" in wrong
    local = explain(name, CertbotFailure(FailureKind.CA_UNREACHABLE, "refused"), None)
    assert local == f"No certificate could be obtained for {name}: refused"


def make_certificate(path: Path, not_before: datetime, days: int, serial: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "track.customer-a.test")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_before + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_certificate_dates_and_serial_are_read_from_the_file(tmp_path: Path) -> None:
    make_certificate(tmp_path / "cert.pem", NOW, 90, 0x0ABCDEF)
    info = read_certificate(tmp_path / "cert.pem")
    assert info == CertificateInfo(not_before=NOW, not_after=NOW + timedelta(days=90),
                                   serial="abcdef")


def test_renewal_starts_when_a_third_of_the_lifetime_remains_jittered_earlier() -> None:
    info = CertificateInfo(not_before=NOW, not_after=NOW + timedelta(days=90), serial="1")
    assert renewal_due(info) == NOW + timedelta(days=60)
    rng = random.Random(7)
    times = [renew_at(info, rng) for _ in range(200)]
    assert all(NOW + timedelta(days=57) <= t <= NOW + timedelta(days=60) for t in times)
    assert len(set(times)) > 150  # spread out, not all at one moment


def test_challenge_hook_writes_atomically_and_cleans_up(tmp_path: Path) -> None:
    env = {"ACME_CHALLENGE_DIR": str(tmp_path / "acme"), "CERTBOT_TOKEN": "tok_EN-1",
           "CERTBOT_VALIDATION": "tok_EN-1.thumbprint"}
    assert challenge_hook.main(["hook", "auth"], env) == 0
    assert (tmp_path / "acme" / "tok_EN-1").read_text() == "tok_EN-1.thumbprint"
    assert [p.name for p in (tmp_path / "acme").iterdir()] == ["tok_EN-1"]
    assert challenge_hook.main(["hook", "cleanup"], env) == 0
    assert challenge_hook.main(["hook", "cleanup"], env) == 0  # idempotent
    assert list((tmp_path / "acme").iterdir()) == []
    assert challenge_hook.main(["hook", "auth"], {**env, "CERTBOT_TOKEN": "../../etc"}) == 2
    assert challenge_hook.main(["hook", "bogus"], env) == 2


KEYS = {"CERT_STORE_KEYS": "c1:" + "c" * 40}


def test_settings_defaults_and_errors(tmp_path: Path) -> None:
    settings = certifier_settings.load(KEYS)
    assert settings.challenge_dir is None and settings.acme_profile is None
    assert settings.acme_directory_url == certifier_settings.LETS_ENCRYPT
    assert settings.drain_timeout_s == 60.0
    settings = certifier_settings.load({
        **KEYS, "ACME_PROFILE": "shortlived",
        "ACME_DIRECTORY_URL": certifier_settings.LETS_ENCRYPT_STAGING,
        "CERTIFIER_RETRY_DELAYS_MS": "200,400"})
    assert settings.retry_delays_ms == (200, 400)
    assert settings.acme_profile == "shortlived"
    for name, value in [("ACME_DIRECTORY_URL", "http://insecure/dir"),
                        ("ACME_EMAIL", "not-an-address"),
                        ("ACME_CA_BUNDLE", str(tmp_path / "missing.pem")),
                        ("CERTIFIER_RETRY_DELAYS_MS", "400,200"),
                        ("CERTIFIER_DRAIN_TIMEOUT_S", "-1"),
                        ("ACME_PROFILE", "short lived"),
                        ("CERT_STORE_KEYS", "c1:short")]:
        with pytest.raises(SettingsError, match=name):
            certifier_settings.load({**KEYS, name: value})
    with pytest.raises(SettingsError, match="CERT_STORE_KEYS"):
        certifier_settings.load({})


def certbot_in(base: Path, lock_timeout_s: float | None = None) -> Certbot:
    return Certbot(command="certbot", base_dir=base, server="https://ca.test/dir", email=None,
                   ca_bundle=None, challenge_dir=base / "challenges",
                   lock_timeout_s=lock_timeout_s)


async def test_two_certifiers_on_one_directory_take_turns(tmp_path: Path) -> None:
    # Two adapters stand for two processes: separate asyncio locks, one flock file.
    first, second = certbot_in(tmp_path), certbot_in(tmp_path)
    order: list[str] = []

    async def hold(certbot: Certbot, name: str) -> None:
        async with certbot.exclusive():
            order.append(f"{name} in")
            await asyncio.sleep(0.1)
            order.append(f"{name} out")

    await asyncio.gather(hold(first, "a"), hold(second, "b"), hold(first, "c"))
    pairs = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert all(p[0].endswith(" in") and p[1] == p[0].replace(" in", " out") for p in pairs)


async def test_a_lock_held_too_long_is_a_local_failure(tmp_path: Path) -> None:
    holder, waiter = certbot_in(tmp_path), certbot_in(tmp_path, lock_timeout_s=0.2)
    async with holder.exclusive():
        with pytest.raises(CertbotError) as caught:
            async with waiter.exclusive():
                pass
    assert caught.value.failure.kind is FailureKind.LOCAL
    async with waiter.exclusive():  # free again once the holder is done
        pass


async def test_once_stopping_the_holder_finishes_and_everyone_else_is_refused(
        tmp_path: Path) -> None:
    # `here` is the stopping certifier; `there` another process on the same directory.
    here, there = certbot_in(tmp_path), certbot_in(tmp_path)
    events: list[str] = []
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(certbot: Certbot, name: str) -> None:
        try:
            async with certbot.exclusive():
                events.append(f"{name} in")
                holding.set()
                await release.wait()
                events.append(f"{name} out")
        except Stopping:
            events.append(f"{name} refused")

    # Here: one holds the directory, one waits behind it in this process.
    holder = asyncio.create_task(hold(here, "holder"))
    await holding.wait()
    waiter = asyncio.create_task(hold(here, "waiter"))
    await asyncio.sleep(0.05)
    here.refuse_new_work()
    with pytest.raises(Stopping) as refused:
        async with here.exclusive():
            pass
    assert refused.value.delay_s == 0.0 and "stopping" in refused.value.reason
    release.set()
    await asyncio.gather(holder, waiter)
    assert events == ["holder in", "holder out", "waiter refused"]

    # While another process holds it, a stopping certifier stops waiting for the flock.
    events.clear()
    holding.clear()
    release.clear()
    elsewhere = asyncio.create_task(hold(there, "elsewhere"))
    await holding.wait()
    late = certbot_in(tmp_path)
    waiting = asyncio.create_task(hold(late, "late"))
    await asyncio.sleep(0.1)
    late.refuse_new_work()
    await asyncio.wait_for(waiting, 1)
    release.set()
    await elsewhere
    assert events == ["elsewhere in", "late refused", "elsewhere out"]


def test_challenge_hook_fails_unless_the_certifier_confirms(tmp_path: Path) -> None:
    env = {"CERTIFIER_HOOK_SOCKET": str(tmp_path / "absent.sock"), "CERTBOT_TOKEN": "tok-1",
           "CERTBOT_VALIDATION": "tok-1.thumbprint", "CERTBOT_DOMAIN": "a.test"}
    assert challenge_hook.main(["hook", "auth"], env) == 1
    assert challenge_hook.main(["hook", "auth"], {"CERTBOT_TOKEN": "tok-1"}) == 2
