"""One normal form for host names: lower-case A-labels, no trailing dot; and the Host header."""

from __future__ import annotations

import pytest

from shared.domains import (
    InvalidDomain,
    host_from_header,
    normalise_domain,
    platform_host_of,
)


@pytest.mark.parametrize(("name", "expected"), [
    ("track.example.com", "track.example.com"),
    ("Track.Example.COM", "track.example.com"),
    ("track.example.com.", "track.example.com"),
    ("  Track.Example.COM.  ", "track.example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("BÜCHER.Example.", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
    ("track.münchen.de", "track.xn--mnchen-3ya.de"),
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("example\u3002com", "example.com"),  # ideographic full stop
    ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # full-width letters
    ("123.example", "123.example"),
    ("a-b--c.example", "a-b--c.example"),
    ("a.b.c.d.e.f.example", "a.b.c.d.e.f.example"),
    ("x.co", "x.co"),
])
def test_normal_form(name: str, expected: str) -> None:
    assert normalise_domain(name) == expected


def test_normal_form_is_idempotent() -> None:
    for name in ("Track.Example.COM.", "bücher.example", "例え.テスト"):
        once = normalise_domain(name)
        assert normalise_domain(once) == once


@pytest.mark.parametrize(("name", "says"), [
    ("", "empty"),
    ("   ", "empty"),
    (".", "dot"),
    ("1.2.3.4", "IP address"),
    ("1.2.3.4.", "IP address"),
    ("::1", "bare host name"),
    ("[::1]", "bare host name"),
    ("[2001:db8::1]", "bare host name"),
    ("1.2.3", "number"),
    ("example.123", "number"),
    ("\uff11.\uff12.\uff13.\uff14", "number"),  # full-width digits: an IP in disguise
    ("*.example.com", "wildcard"),
    ("*", "wildcard"),
    ("track.*.com", "wildcard"),
    ("a..b", "empty label"),
    (".example.com", "empty label"),
    ("example.com..", "empty label"),
    ("a" * 64 + ".com", "1-63"),
    ("-a.com", "hyphen"),
    ("a-.com", "hyphen"),
    ("a_b.example.com", "1-63"),
    ("example.com:443", "ports"),
    ("example.com/path", "paths"),
    ("https://example.com", "bare host name"),
    ("exa mple.com", "spaces"),
    ("example\t.com", "spaces"),
    ("example.com?x", None),
    ("example.com#frag", None),
    ("user@example.com", None),
    ("example.com\x00", None),
    ("example.com;", None),
    ("example.com,", None),
    ("☃.com", "internationalised"),
    ("localhost", "no dot"),
    ("com", "no dot"),
])
def test_refused(name: str, says: str | None) -> None:
    with pytest.raises(InvalidDomain) as info:
        normalise_domain(name)
    if says:
        assert says in str(info.value)


def test_length_limits() -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "b" * 61])
    assert len(longest) == 253
    assert normalise_domain(longest) == longest
    assert normalise_domain(longest + ".") == longest  # the trailing dot does not count
    with pytest.raises(InvalidDomain, match="253"):
        normalise_domain(longest + "b")
    assert normalise_domain(label + ".com") == label + ".com"


def test_length_is_measured_in_a_labels() -> None:
    # 'ü' is one character but its A-label is longer: the A-label form is what must fit.
    name = ".".join(["ü" * 25] * 8) + ".example"
    assert len(name) <= 253
    with pytest.raises(InvalidDomain):
        normalise_domain(name)


def test_single_label_only_when_allowed() -> None:
    assert normalise_domain("LocalHost.", allow_single_label=True) == "localhost"
    assert normalise_domain("click.platform.test", allow_single_label=True) == (
        "click.platform.test")
    with pytest.raises(InvalidDomain):
        normalise_domain("localhost")
    with pytest.raises(InvalidDomain):
        normalise_domain("1.2.3.4", allow_single_label=True)
    with pytest.raises(InvalidDomain):
        normalise_domain("8080", allow_single_label=True)


def test_error_messages_quote_the_name_as_given() -> None:
    with pytest.raises(InvalidDomain, match=r"Example\.com:8080"):
        normalise_domain("Example.com:8080")


@pytest.mark.parametrize("name", ["xn--zz.example", "xn--.example"])
def test_invalid_a_labels_are_refused(name: str) -> None:
    with pytest.raises(InvalidDomain):
        normalise_domain(name)


# --- host_from_header -----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("track.example.com", "track.example.com"),
    ("Track.Example.COM", "track.example.com"),
    ("track.example.com:443", "track.example.com"),
    ("track.example.com:8080", "track.example.com"),
    ("track.example.com.", "track.example.com"),
    ("Track.Example.COM.:443", "track.example.com"),
    ("track.example.com:", "track.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("127.0.0.1:8080", "127.0.0.1"),
    ("[::1]:8080", "[::1]"),
    ("[::1]", "[::1]"),
    ("localhost", "localhost"),
    ("", ""),
])
def test_host_from_header(header: str, expected: str) -> None:
    assert host_from_header(header) == expected


@pytest.mark.parametrize("header", [
    "track.example.com", "Track.Example.COM.:443", "TRACK.EXAMPLE.COM:8080",
])
def test_host_header_matches_the_normal_form(header: str) -> None:
    assert host_from_header(header) == normalise_domain("track.example.com")


def test_unicode_host_header_matches_nothing_normalised() -> None:
    # Cheap on purpose: no IDNA. Browsers send A-labels, so a U-label simply matches no domain.
    assert host_from_header("bücher.example") != normalise_domain("bücher.example")


# --- TRACKING_HOST_ALIASES ----------------------------------------------------------------------

HOST = "click.new.test"


def test_platform_host_of_names_the_host_a_name_is_or_is_under() -> None:
    hosts = (HOST, "click.old.test")
    assert platform_host_of(HOST, hosts) == HOST
    assert platform_host_of("a.click.old.test", hosts) == "click.old.test"
    assert platform_host_of("old.test", hosts) is None
    assert platform_host_of("xclick.old.test", hosts) is None


def test_the_redirector_serves_every_customer_on_the_platform_host_under_any_name() -> None:
    from services.redirector.active_domains import DomainDirectory

    directory = DomainDirectory("click.new.test", ("click.old.test",))
    directory.replace({"track.a.test": "cust-a"})
    for customer in ("cust-a", "cust-b"):
        assert directory.allows("click.new.test", customer)
        assert directory.allows("click.old.test", customer)
    assert directory.allows("track.a.test", "cust-a")
    assert not directory.allows("track.a.test", "cust-b")
    assert not directory.allows("click.other.test", "cust-a")
    assert not DomainDirectory("click.new.test").allows("click.old.test", "cust-a")
