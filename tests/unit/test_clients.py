"""The client address: X-Forwarded-For is believed only from a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest

from services.redirector.clients import ClientAddress

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.fixture
def clients() -> ClientAddress:
    return ClientAddress(PROXIES)


def test_no_trusted_proxies_means_the_peer() -> None:
    clients = ClientAddress([])
    assert clients.resolve("10.0.0.1", "203.0.113.7") == "10.0.0.1"
    assert clients.resolve("198.51.100.1", "203.0.113.7") == "198.51.100.1"


def test_untrusted_peer_header_is_ignored(clients: ClientAddress) -> None:
    assert clients.resolve("198.51.100.1", "203.0.113.7") == "198.51.100.1"
    assert clients.resolve("198.51.100.1", "10.0.0.5") == "198.51.100.1"


def test_no_header_means_the_peer(clients: ClientAddress) -> None:
    assert clients.resolve("10.0.0.1", None) == "10.0.0.1"
    assert clients.resolve("10.0.0.1", "") == "10.0.0.1"


def test_no_peer() -> None:
    assert ClientAddress(PROXIES).resolve(None, "203.0.113.7") is None


def test_trusted_peer_one_hop(clients: ClientAddress) -> None:
    assert clients.resolve("10.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_right_most_untrusted_hop_wins(clients: ClientAddress) -> None:
    # The client can write anything on the left; only what our proxies appended counts.
    assert clients.resolve("10.0.0.1", "1.1.1.1, 203.0.113.7, 10.0.0.2") == "203.0.113.7"
    assert clients.resolve("10.0.0.1", "spoofed, 10.9.9.9, 203.0.113.7") == "203.0.113.7"


def test_all_hops_trusted_gives_the_left_most(clients: ClientAddress) -> None:
    assert clients.resolve("10.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"


def test_ipv6(clients: ClientAddress) -> None:
    assert clients.resolve("fd00::1", "2001:db8::7, fd00::2") == "2001:db8::7"
    assert clients.resolve("2001:db8::9", "203.0.113.7") == "2001:db8::9"


@pytest.mark.parametrize(("header", "expected"), [
    ("garbage", "10.0.0.1"),
    ("203.0.113.7, garbage", "10.0.0.1"),
    ("garbage, 203.0.113.7", "203.0.113.7"),
    ("203.0.113.7, 10.0.0.2, garbage", "10.0.0.1"),
    ("203.0.113.7:4711", "10.0.0.1"),
    ("[2001:db8::1]", "10.0.0.1"),
    ("unknown", "10.0.0.1"),
    (" , ,203.0.113.7, ", "203.0.113.7"),
    (",,,", "10.0.0.1"),
    ("999.1.1.1", "10.0.0.1"),
    ("203.0.113.7;rm -rf", "10.0.0.1"),
])
def test_garbage_stops_at_the_last_good_hop(clients: ClientAddress, header: str,
                                            expected: str) -> None:
    assert clients.resolve("10.0.0.1", header) == expected


def test_garbage_hop_after_trusted_hops(clients: ClientAddress) -> None:
    assert clients.resolve("10.0.0.1", "garbage, 10.0.0.2") == "10.0.0.2"


def test_peer_that_is_not_an_address(clients: ClientAddress) -> None:
    assert clients.resolve("not-an-ip", "203.0.113.7") == "not-an-ip"


def test_result_fits_the_event_field(clients: ClientAddress) -> None:
    # click.tracked's ip is at most 45 characters.
    longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    assert len(longest) == 45
    assert clients.resolve("10.0.0.1", longest) == longest
