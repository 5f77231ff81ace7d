"""The pure parts of `trackctl doctor`: verdicts per check, fixes, HTTP parsing, rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.verification import judge
from trackctl.doctor import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    CertFacts,
    Check,
    HttpAnswer,
    Route,
    TlsAnswer,
    click_check,
    database_check,
    fix_for,
    isolation_check,
    location_of,
    parse_head,
    parse_redirector,
    redirect_check,
    render,
    skipped,
    split_error,
    tls_check,
)
from trackctl.output import USAGE, CliError

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NAME, HOST = "track.customer.test", "click.platform.test"
VERIFIER_CODES = [judge.INVALID_NAME, judge.PLATFORM_HOST, judge.OWNED_BY_OTHER_CUSTOMER,
                  judge.NXDOMAIN, judge.NO_CNAME, judge.WRONG_TARGET, judge.CNAME_LOOP,
                  judge.CHAIN_TOO_LONG, judge.CAA_FORBIDS, judge.DNS_SERVFAIL,
                  judge.DNS_TIMEOUT, judge.DNS_ERROR]


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": NAME, "customer_id": "cust-a", "status": "active", "verified": True,
        "matched_by": "cname", "dns_chain": f"{NAME} -> {HOST}", "last_error": None,
        "check_due_at": None, "certificate_serial": "abc123",
        "certificate_expires_at": NOW + timedelta(days=60), "updated_at": NOW,
    }
    base.update(overrides)
    return base


def facts(serial: str = "abc123", days_left: int = 60) -> CertFacts:
    return CertFacts(subject=f"CN={NAME}", issuer="CN=Test CA", serial=serial,
                     not_before=NOW - timedelta(days=30),
                     not_after=NOW + timedelta(days=days_left), names=(NAME,))


@pytest.mark.parametrize("code", VERIFIER_CODES)
def test_every_verifier_code_has_a_fix_pointing_at_its_docs_section(code: str) -> None:
    fix = fix_for(code, NAME, HOST, "letsencrypt.org")
    assert fix.endswith(f"(docs/troubleshooting.md: `{code}`)")
    docs = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert f"### `{code}`" in docs


def test_fix_wording_names_the_record_to_set() -> None:
    assert f"{NAME}. CNAME {HOST}." in fix_for("nxdomain", NAME, HOST, "x")
    assert '0 issue "pebble.test"' in fix_for("caa_forbids", NAME, HOST, "pebble.test")
    assert fix_for(None, NAME, HOST, "x") == ""
    assert "docs/certificates.md" in fix_for("unauthorized", NAME, HOST, "x")


def test_split_error() -> None:
    assert split_error("wrong_target: it points elsewhere") == ("wrong_target",
                                                                "it points elsewhere")
    assert split_error("deleted by the customer") == (None, "deleted by the customer")
    assert split_error(None) == (None, "")


def test_database_check_per_status() -> None:
    check = database_check(row(), name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert check.status == PASS and "certificate abc123 expires" in check.summary
    assert database_check(None, name=NAME, host=HOST, ca_identity="x",
                          now=NOW).code == "missing"
    pending = database_check(row(status="pending", verified=False,
                                 last_error="nxdomain: no such name"),
                             name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert pending.status == FAIL and pending.code == "nxdomain"
    assert pending.summary == "pending: no such name"
    assert "trackctl domain recheck" in (pending.fix or "")
    verified = database_check(row(status="verified", last_error="unauthorized: 404"),
                              name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert verified.status == FAIL and "no certificate in service" in verified.summary
    assert "dlq list certifier" in (verified.fix or "")
    rejected = database_check(row(status="rejected", verified=False,
                                  last_error="wrong_target: elsewhere"),
                              name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert rejected.code == "wrong_target" and "new deadline" in (rejected.fix or "")
    tombstone = database_check(row(status="rejected", verified=False, check_due_at=NOW,
                                   last_error="deleted by the customer"),
                               name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert tombstone.code == "deleted" and "domain add" in (tombstone.fix or "")
    lapsed = database_check(row(status="lapsed", verified=False,
                                last_error="no_cname: A record"),
                            name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert lapsed.status == FAIL and lapsed.code == "no_cname"
    warned = database_check(row(last_error="caa_forbids: CAA at customer.test"),
                            name=NAME, host=HOST, ca_identity="x", now=NOW)
    assert warned.status == WARN and "CAA" in (warned.fix or "")


def test_tls_check_pass_warn_and_failures() -> None:
    ok = tls_check(TlsAnswer(None, "verified", facts()), name=NAME, where="192.0.2.1:443",
                   row=row(), ca_bundle=None, now=NOW)
    assert ok.status == PASS and "expiring 2026-06-30 12:00:00Z (in 60 d)" in ok.summary
    assert ok.data["certificate"]["serial"] == "abc123"
    soon = tls_check(TlsAnswer(None, "verified", facts(days_left=5)), name=NAME, where="x",
                     row=row(), ca_bundle=None, now=NOW)
    assert soon.status == WARN and soon.code == "expiring_soon"
    other = tls_check(TlsAnswer(None, "verified", facts(serial="def")), name=NAME, where="x",
                      row=row(), ca_bundle=None, now=NOW)
    assert other.status == WARN and other.code == "serial_mismatch"
    for problem, words in (("refused", "start nginx"), ("rejected", "certifier"),
                           ("untrusted", "--ca-bundle"), ("timeout", "firewall")):
        failed = tls_check(TlsAnswer(problem, f"{problem}!"), name=NAME, where="x", row=None,
                           ca_bundle=Path("/ca.pem"), now=NOW)
        assert failed.status == FAIL and failed.code == problem
        assert failed.summary == f"{problem}!" and words in (failed.fix or "")
        assert "trusting /ca.pem" in failed.details[0]


def test_parse_head_and_location() -> None:
    status, headers = parse_head(b"HTTP/1.1 302 Found\r\nLocation: https://x.example/\xc3\xa4"
                                 b"\r\nCache-Control: no-store\r\n\r\n")
    assert status == 302 and headers["cache-control"] == "no-store"
    assert location_of(headers) == "https://x.example/ä"
    assert location_of({}) is None
    with pytest.raises(ValueError):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


ROUTE = Route("127.0.0.1", 443, True, NAME, None, f"https://{NAME}:443 at 127.0.0.1")


def test_redirect_check() -> None:
    dest = "https://example.com/"
    ok = redirect_check(HttpAnswer(302, {"location": dest}, 3.2), None, name=NAME,
                        destination=dest, route=ROUTE, recipient="doctor-1")
    assert ok.status == PASS and ok.summary == f"302 to {dest} in 3 ms"
    refused = redirect_check(HttpAnswer(404, {}, 1), None, name=NAME, destination=dest,
                             route=ROUTE, recipient="doctor-1")
    assert refused.code == "http_404" and "LINK_KEYS" in (refused.fix or "")
    moved = redirect_check(HttpAnswer(302, {"location": "https://elsewhere/"}, 1), None,
                           name=NAME, destination=dest, route=ROUTE, recipient="doctor-1")
    assert moved.code == "wrong_location"
    silent = redirect_check(None, "connection refused", name=NAME, destination=dest,
                            route=ROUTE, recipient="doctor-1")
    assert silent.status == FAIL and "connection refused" in silent.summary


def test_click_check() -> None:
    stored = click_check({"event_id": "e1", "bot": True, "bot_reason": "user-agent:bot"}, 0.4,
                         None, recipient="doctor-1", timeout_s=10)
    assert stored.status == PASS and "bot (user-agent:bot)" in stored.summary
    missing = click_check(None, 10, None, recipient="doctor-1", timeout_s=10)
    assert missing.status == FAIL and "dlq list logger" in (missing.fix or "")


def test_parse_redirector() -> None:
    assert parse_redirector("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_redirector("http://redirector") == ("redirector", 80)
    for bad in ("https://x:1", "127.0.0.1:8080", "http://:80", "http://x:99999"):
        with pytest.raises(CliError) as caught:
            parse_redirector(bad)
        assert caught.value.status == USAGE


def test_render_shows_fixes_only_for_failures_and_counts() -> None:
    checks = [Check("dns", PASS, "ok", ["resolver: r"]),
              Check("tls", FAIL, "refused", fix="start nginx"),
              skipped("redirect", "HTTPS does not work"),
              Check("database", WARN, "caa", fix="add CAA")]
    text = render(NAME, HOST, checks)
    assert text.splitlines()[2:] == [
        "PASS  dns       ok",
        "                resolver: r",
        "FAIL  tls       refused",
        "                fix: start nginx",
        "SKIP  redirect  skipped: HTTPS does not work",
        "WARN  database  caa",
        "                fix: add CAA",
        "",
        f"1 passed, 1 warned, 1 failed, 1 skipped: {NAME} does not work yet",
    ]
    assert SKIP == "skipped"


def test_render_names_the_aliases_of_the_platform_host() -> None:
    checks = [Check("dns", PASS, "ok")]
    assert render(NAME, HOST, checks).splitlines()[0] == (
        f"doctor {NAME} (platform host {HOST})")
    assert render(NAME, HOST, checks, ("click.old.test",)).splitlines()[0] == (
        f"doctor {NAME} (platform host {HOST}, aliases click.old.test)")


def test_isolation_check_warns_with_the_consequence_and_the_fix() -> None:
    warning = ("track-b.shop-builder.test shares its registered domain shop-builder.test "
               "with another customer's tracking domain: ...")
    check = isolation_check({"registered_domain": "shop-builder.test",
                             "isolation_warning": warning}, name="track-b.shop-builder.test")
    assert (check.status, check.code) == (WARN, "shared_registered_domain")
    assert check.details[0] == warning
    assert "SURBL and URIBL list registered domains" in check.details[1]
    assert check.fix is not None and "under a registered domain of their own" in check.fix
    assert "`shared_registered_domain`" in (ROOT / "docs/troubleshooting.md").read_text()
    isolated = isolation_check({"registered_domain": None, "isolation_warning": None},
                               name="track.shop.co.uk")
    assert (isolated.status, isolated.data["registered_domain"]) == (PASS, "shop.co.uk")
    assert isolation_check(None, name="track.shop.co.uk").status == SKIP
