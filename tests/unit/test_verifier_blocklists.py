"""DNS blocklists: what to ask each list, and what every documented answer means (pure)."""

from __future__ import annotations

import pytest

from services.verifier.reputation.blocklists import (
    DEFAULT_LISTS,
    NEGATIVE_CONTROL,
    POSITIVE_CONTROLS,
    BlockList,
    Kind,
    Status,
    Verdict,
    controls_pass,
    decode,
    parse_lists,
    redact_zone,
)
from shared.errors import SettingsError

DBL, SURBL, URIBL = Kind.DBL, Kind.SURBL, Kind.URIBL


@pytest.mark.parametrize(("kind", "name", "query"), [
    # DBL lists host names: the full name is asked.
    (DBL, "track.shop.example.com", "track.shop.example.com.dbl.spamhaus.org"),
    # SURBL and URIBL list registered domains only: host parts are stripped.
    (SURBL, "track.shop.example.com", "example.com.multi.surbl.org"),
    (URIBL, "Track.Shop.CO.UK.", "shop.co.uk.multi.uribl.com"),
    (URIBL, "cust1.alice.github.io", "alice.github.io.multi.uribl.com"),
    (SURBL, "track.bücher.de", "xn--bcher-kva.de.multi.surbl.org"),
    (DBL, "track.bücher.de", "track.xn--bcher-kva.de.dbl.spamhaus.org"),
])
def test_query_names(kind: Kind, name: str, query: str) -> None:
    zone = {DBL: "dbl.spamhaus.org", SURBL: "multi.surbl.org", URIBL: "multi.uribl.com"}[kind]
    assert BlockList(kind, zone).query_name(name) == query


LISTED, NOT_LISTED, REFUSED, ERROR = (Status.LISTED, Status.NOT_LISTED, Status.REFUSED,
                                      Status.ERROR)


@pytest.mark.parametrize(("kind", "rcode", "addresses", "status", "categories"), [
    # DBL listings, every documented code.
    (DBL, "NOERROR", ["127.0.1.2"], LISTED, ("spam",)),
    (DBL, "NOERROR", ["127.0.1.4"], LISTED, ("phishing",)),
    (DBL, "NOERROR", ["127.0.1.5"], LISTED, ("malware",)),
    (DBL, "NOERROR", ["127.0.1.6"], LISTED, ("botnet-cc",)),
    (DBL, "NOERROR", ["127.0.1.102"], LISTED, ("abused-legit-spam",)),
    (DBL, "NOERROR", ["127.0.1.103"], LISTED, ("abused-redirector",)),
    (DBL, "NOERROR", ["127.0.1.104"], LISTED, ("abused-legit-phishing",)),
    (DBL, "NOERROR", ["127.0.1.105"], LISTED, ("abused-legit-malware",)),
    (DBL, "NOERROR", ["127.0.1.106"], LISTED, ("abused-legit-botnet-cc",)),
    (DBL, "NOERROR", ["127.0.1.4", "127.0.1.2"], LISTED, ("spam", "phishing")),
    # DBL refusals: never a listing.
    (DBL, "NOERROR", ["127.0.1.255"], REFUSED, ()),
    (DBL, "NOERROR", ["127.255.255.252"], REFUSED, ()),
    (DBL, "NOERROR", ["127.255.255.254"], REFUSED, ()),
    (DBL, "NOERROR", ["127.255.255.255"], REFUSED, ()),
    (DBL, "NOERROR", ["127.0.1.2", "127.255.255.254"], REFUSED, ()),
    # DBL answers it does not document: an error, never a verdict.
    (DBL, "NOERROR", ["127.0.1.3"], ERROR, ()),
    (DBL, "NOERROR", ["127.0.0.2"], ERROR, ()),
    (DBL, "NOERROR", ["203.0.113.7"], ERROR, ()),  # an NXDOMAIN-rewriting resolver
    # SURBL bitmask.
    (SURBL, "NOERROR", ["127.0.0.8"], LISTED, ("ph",)),
    (SURBL, "NOERROR", ["127.0.0.16"], LISTED, ("mw",)),
    (SURBL, "NOERROR", ["127.0.0.64"], LISTED, ("abuse",)),
    (SURBL, "NOERROR", ["127.0.0.128"], LISTED, ("cr",)),
    (SURBL, "NOERROR", ["127.0.0.80"], LISTED, ("mw", "abuse")),
    (SURBL, "NOERROR", ["127.0.0.254"], LISTED,
     ("bit-2", "bit-4", "ph", "mw", "bit-32", "abuse", "cr")),
    (SURBL, "NOERROR", ["127.0.0.1"], REFUSED, ()),
    (SURBL, "NOERROR", ["127.0.0.9"], REFUSED, ()),  # bit 1 spoils any other bit
    (SURBL, "NOERROR", ["127.0.0.0"], ERROR, ()),
    (SURBL, "NOERROR", ["10.0.0.8"], ERROR, ()),
    # URIBL bitmask.
    (URIBL, "NOERROR", ["127.0.0.2"], LISTED, ("black",)),
    (URIBL, "NOERROR", ["127.0.0.4"], LISTED, ("grey",)),
    (URIBL, "NOERROR", ["127.0.0.8"], LISTED, ("red",)),
    (URIBL, "NOERROR", ["127.0.0.14"], LISTED, ("black", "grey", "red")),
    (URIBL, "NOERROR", ["127.0.0.1"], REFUSED, ()),
    (URIBL, "NOERROR", ["127.0.0.3"], REFUSED, ()),
    # Not listed, for every kind.
    (DBL, "NXDOMAIN", [], NOT_LISTED, ()),
    (SURBL, "NXDOMAIN", [], NOT_LISTED, ()),
    (URIBL, "nxdomain", [], NOT_LISTED, ()),
    (URIBL, "NOERROR", [], NOT_LISTED, ()),
    # Errors: retried, never a verdict.
    (DBL, "SERVFAIL", [], ERROR, ()),
    (SURBL, "TIMEOUT", [], ERROR, ()),
    (URIBL, "REFUSED", [], ERROR, ()),
])
def test_decode(kind: Kind, rcode: str, addresses: list[str], status: Status,
                categories: tuple[str, ...]) -> None:
    verdict = decode(kind, rcode, addresses)
    assert verdict.status == status
    assert verdict.categories == categories
    assert verdict.raw == (tuple(sorted(set(addresses))) if addresses else (rcode.upper(),))
    if status in (REFUSED, ERROR):
        assert verdict.detail


def test_a_refusal_says_why() -> None:
    assert "public or open resolver" in decode(DBL, "NOERROR", ["127.255.255.254"]).detail
    assert "no answer in time" in decode(DBL, "TIMEOUT").detail


@pytest.mark.parametrize(("kind", "name", "addresses"), [
    (DBL, "dbltest.com", ["127.0.1.2"]),
    (SURBL, "test.surbl.org", ["127.0.0.254"]),
    (URIBL, "test.uribl.com", ["127.0.0.14"]),
])
def test_controls(kind: Kind, name: str, addresses: list[str]) -> None:
    assert POSITIVE_CONTROLS[kind].name == name
    good = {name: decode(kind, "NOERROR", addresses),
            NEGATIVE_CONTROL.name: decode(kind, "NXDOMAIN")}
    assert controls_pass(kind, good)
    refused = decode(kind, "NOERROR", ["127.255.255.254" if kind == DBL else "127.0.0.1"])
    # A refused resolver fails the positive control: the list is unusable from here.
    assert not controls_pass(kind, {**good, name: refused})
    # A resolver that lists everything (or rewrites NXDOMAIN) fails the negative one.
    assert not controls_pass(kind, {**good, NEGATIVE_CONTROL.name: good[name]})
    assert not controls_pass(kind, {**good, name: decode(kind, "NXDOMAIN")})
    assert not controls_pass(kind, {name: good[name]})  # a control not asked


def test_uribl_control_needs_all_three_lists() -> None:
    answers = {"test.uribl.com": decode(URIBL, "NOERROR", ["127.0.0.2"]),
               "invalid": Verdict(Status.NOT_LISTED)}
    assert not controls_pass(URIBL, answers)


def test_parse_lists_defaults_and_off() -> None:
    assert parse_lists(None) == parse_lists(DEFAULT_LISTS) == (
        BlockList(DBL, "dbl.spamhaus.org"), BlockList(SURBL, "multi.surbl.org"),
        BlockList(URIBL, "multi.uribl.com"))
    assert parse_lists("") == ()
    assert parse_lists(" , ") == ()
    assert parse_lists(" DBL = DBL.Spamhaus.org. ") == (BlockList(DBL, "dbl.spamhaus.org"),)


def test_parse_lists_dqs_zone_keeps_its_key_out_of_logs() -> None:
    key = "abcdefghijklmnopqrstuvwxyz"
    (dqs,) = parse_lists(f"dbl={key}.dbl.dq.spamhaus.net")
    assert dqs.zone == f"{key}.dbl.dq.spamhaus.net"
    assert dqs.query_name("t.example.com") == f"t.example.com.{key}.dbl.dq.spamhaus.net"
    assert dqs.label == "<key>.dbl.dq.spamhaus.net"
    assert key not in repr(dqs)
    assert redact_zone("dbl.spamhaus.org") == "dbl.spamhaus.org"


@pytest.mark.parametrize(("value", "message"), [
    ("dbl.spamhaus.org", "must be kind=zone"),
    ("spamcop=bl.spamcop.net", "kind 'spamcop' is not one of dbl, surbl, uribl"),
    ("dbl=", "zone for dbl is not a valid DNS zone"),
    ("dbl=bad..zone", "zone for dbl is not a valid DNS zone"),
    ("dbl=dbl.spamhaus.org,dbl=x.dbl.dq.spamhaus.net", "names dbl twice"),
])
def test_parse_lists_errors(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match="REPUTATION_LISTS") as caught:
        parse_lists(value)
    assert message in str(caught.value)


def test_parse_lists_error_masks_a_dqs_key() -> None:
    key = "abcdefghijklmnopqrstuvwxyz"
    with pytest.raises(SettingsError) as caught:
        parse_lists(f"dbl={key}.dbl.dq.spamhaus.net:53")
    assert key not in str(caught.value)
