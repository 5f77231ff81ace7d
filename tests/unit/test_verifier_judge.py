"""The verifier's pure judgement: names, CNAME chains, flattening, CAA (RFC 8659)."""

from __future__ import annotations

import pytest

from shared.verification.judge import (
    CAA_FORBIDS,
    CHAIN_TOO_LONG,
    CNAME_LOOP,
    DNS_SERVFAIL,
    INVALID_NAME,
    NO_CNAME,
    NXDOMAIN,
    PLATFORM_HOST,
    WRONG_TARGET,
    CaaLevel,
    CaaRecord,
    DnsTrouble,
    NotYet,
    Observation,
    Rejection,
    Unsure,
    Verified,
    caa_allows,
    caa_owners,
    chain_of,
    decide_caa,
    judge,
    parse_issue_value,
    validate_name,
)

HOST = "click.platform.test"
CA = "letsencrypt.org"
NAME = "track.customer-a.test"


def issue(value: str, flags: int = 0, tag: str = "issue") -> CaaRecord:
    return CaaRecord(flags, tag, value)


def run(observation: Observation):
    return judge(observation, target=HOST, ca_identity=CA)


@pytest.mark.parametrize("raw, normal", [
    ("Track.Customer-A.TEST.", "track.customer-a.test"),
    ("  track.example.com ", "track.example.com"),
    ("tracking.bücher.example", "tracking.xn--bcher-kva.example"),
])
def test_names_are_normalised(raw: str, normal: str) -> None:
    assert validate_name(raw, HOST) == normal


@pytest.mark.parametrize("raw, words", [
    ("", "empty"),
    ("192.0.2.1", "IP address"),
    ("[2001:db8::1]", "bare host name"),
    ("10.0.0.1.", "IP address"),
    ("*.customer.test", "wildcard"),
    ("track..customer.test", "empty label"),
    ("a" * 64 + ".customer.test", "1-63"),
    (".".join(["abcdefghi"] * 26), "at most 253"),
    ("-bad.customer.test", "hyphen"),
    ("track.customer.test/path", "bare host name"),
    ("track.customer.test:443", "bare host name"),
    ("track.customer.test garbage", "bare host name"),
    ("localhost", "no dot"),
    ("under_score.customer.test", "letters, digits or hyphens"),
])
def test_bad_names_are_rejected_with_a_reason(raw: str, words: str) -> None:
    result = validate_name(raw, HOST)
    assert isinstance(result, Rejection)
    assert result.code == INVALID_NAME
    assert words in result.reason


@pytest.mark.parametrize("raw", [HOST, "CLICK.platform.test.", "x.click.platform.test"])
def test_the_platform_host_and_names_under_it_are_refused(raw: str) -> None:
    result = validate_name(raw, HOST)
    assert isinstance(result, Rejection) and result.code == PLATFORM_HOST
    assert HOST in result.reason


OLD = "click.old-platform.test"  # the platform host being moved away from


@pytest.mark.parametrize("raw", [OLD, "x.click.old-platform.test"])
def test_aliases_and_names_under_them_are_refused_too(raw: str) -> None:
    result = validate_name(raw, HOST, (OLD,))
    assert isinstance(result, Rejection) and result.code == PLATFORM_HOST
    assert OLD in result.reason and f"CNAME to {HOST}" in result.reason
    assert validate_name("old-platform.test", HOST, (OLD,)) == "old-platform.test"


def test_a_cname_to_an_alias_is_verified_and_names_the_alias() -> None:
    verdict = judge(Observation(NAME, (NAME, "edge.cdn.test", OLD)), target=HOST,
                    ca_identity=CA, aliases=(OLD,))
    assert verdict == Verified(
        "cname", (NAME, "edge.cdn.test", OLD),
        f"{NAME} -> edge.cdn.test -> {OLD} [{OLD} is an alias of {HOST} in "
        "TRACKING_HOST_ALIASES]", "no CAA records", alias=OLD)
    assert chain_of(verdict.description) == [NAME, "edge.cdn.test", OLD]


def test_a_chain_through_an_alias_to_the_host_does_not_depend_on_the_alias() -> None:
    # The old name chained to the new one (the move's step 2): the host itself is reached.
    verdict = judge(Observation(NAME, (NAME, OLD, HOST)), target=HOST, ca_identity=CA,
                    aliases=(OLD,))
    assert isinstance(verdict, Verified) and verdict.alias is None
    assert verdict.description == f"{NAME} -> {OLD} -> {HOST}"


def test_nothing_beyond_an_alias_can_fail_the_check() -> None:
    for chain in [(NAME, OLD, "lb.hosting.test", OLD),  # a loop behind the alias
                  (NAME, OLD, *(f"h{i}.hosting.test" for i in range(9)))]:  # too long
        verdict = judge(Observation(NAME, chain), target=HOST, ca_identity=CA,
                        aliases=(OLD,))
        assert isinstance(verdict, Verified) and verdict.chain == (NAME, OLD), chain
        assert verdict.alias == OLD
        assert isinstance(run(Observation(NAME, chain)), NotYet)  # without the alias


def test_an_alias_no_longer_listed_is_a_wrong_target() -> None:
    verdict = run(Observation(NAME, (NAME, OLD), addresses=frozenset({"192.0.2.9"}),
                              target_addresses=frozenset({"192.0.2.10"})))
    assert isinstance(verdict, NotYet) and verdict.code == WRONG_TARGET
    assert f"it should point to {HOST}" in verdict.reason


def test_caa_still_decides_for_a_chain_to_an_alias() -> None:
    verdict = judge(Observation(NAME, (NAME, OLD), caa=(CaaLevel(NAME),
                                CaaLevel("customer-a.test", (issue("digicert.com"),)))),
                    target=HOST, ca_identity=CA, aliases=(OLD,))
    assert isinstance(verdict, NotYet) and verdict.code == CAA_FORBIDS


def test_a_cname_to_the_host_is_verified() -> None:
    verdict = run(Observation(NAME, (NAME, HOST)))
    assert verdict == Verified("cname", (NAME, HOST), f"{NAME} -> {HOST}", "no CAA records")
    assert chain_of(verdict.description) == [NAME, HOST]


def test_a_multi_hop_chain_through_the_host_is_verified_up_to_the_host() -> None:
    verdict = run(Observation(NAME, (NAME, "a.cdn.test", "b.cdn.test", HOST, "lb.cloud.test")))
    assert isinstance(verdict, Verified)
    assert verdict.chain == (NAME, "a.cdn.test", "b.cdn.test", HOST)


def test_flattened_names_with_the_hosts_addresses_are_verified_by_address() -> None:
    addresses = frozenset({"192.0.2.10", "2001:db8::10"})
    verdict = run(Observation(NAME, (NAME,), addresses=addresses, target_addresses=addresses))
    assert isinstance(verdict, Verified)
    assert verdict.matched_by == "address"
    assert "192.0.2.10" in verdict.description and HOST in verdict.description
    assert chain_of(verdict.description) == [NAME]


def test_a_partial_address_match_is_not_enough() -> None:
    verdict = run(Observation(NAME, (NAME,), addresses=frozenset({"192.0.2.10"}),
                              target_addresses=frozenset({"192.0.2.10", "2001:db8::10"})))
    assert isinstance(verdict, NotYet) and verdict.code == NO_CNAME
    assert "192.0.2.10" in verdict.reason and "2001:db8::10" in verdict.reason


def test_nxdomain() -> None:
    verdict = run(Observation(NAME, (NAME,), exists=False))
    assert isinstance(verdict, NotYet) and verdict.code == NXDOMAIN
    assert f"{NAME} CNAME {HOST}" in verdict.reason


def test_no_cname_and_no_addresses() -> None:
    verdict = run(Observation(NAME, (NAME,), target_addresses=frozenset({"192.0.2.10"})))
    assert isinstance(verdict, NotYet) and verdict.code == NO_CNAME
    assert "has no CNAME record" in verdict.reason


def test_a_wrong_target_names_what_it_points_to_and_what_it_should() -> None:
    verdict = run(Observation(NAME, (NAME, "click.other-esp.test"),
                              addresses=frozenset({"198.51.100.7"}),
                              target_addresses=frozenset({"192.0.2.10"})))
    assert isinstance(verdict, NotYet) and verdict.code == WRONG_TARGET
    assert f"{NAME} points to click.other-esp.test" in verdict.reason
    assert f"should point to {HOST}" in verdict.reason


def test_a_chain_ending_in_nxdomain_is_a_wrong_target() -> None:
    verdict = run(Observation(NAME, (NAME, "clck.platform.test"), exists=False))
    assert isinstance(verdict, NotYet) and verdict.code == WRONG_TARGET
    assert "clck.platform.test does not exist" in verdict.reason


def test_a_chain_to_a_host_with_the_same_addresses_is_accepted_by_address() -> None:
    same = frozenset({"192.0.2.10"})
    verdict = run(Observation(NAME, (NAME, "alias.customer-a.test"), addresses=same,
                              target_addresses=same))
    assert isinstance(verdict, Verified) and verdict.matched_by == "address"
    assert verdict.chain == (NAME, "alias.customer-a.test")


def test_loops_and_long_chains_are_named() -> None:
    loop = run(Observation(NAME, (NAME, "a.test", "b.test", "a.test")))
    assert isinstance(loop, NotYet) and loop.code == CNAME_LOOP
    assert "a.test -> b.test -> a.test" in loop.reason
    long = run(Observation(NAME, (NAME, *(f"h{i}.test" for i in range(9)))))
    assert isinstance(long, NotYet) and long.code == CHAIN_TOO_LONG
    ok = run(Observation(NAME, (NAME, *(f"h{i}.test" for i in range(7)), HOST)))
    assert isinstance(ok, Verified)


def test_resolver_trouble_is_unsure() -> None:
    trouble = DnsTrouble(DNS_SERVFAIL, "127.0.0.1 answered SERVFAIL")
    verdict = run(Observation(NAME, (NAME,), trouble=trouble))
    assert verdict == Unsure(DNS_SERVFAIL, "127.0.0.1 answered SERVFAIL")


def test_caa_owners_climb_to_the_top_level() -> None:
    assert caa_owners("track.customer-a.test") == (
        "track.customer-a.test", "customer-a.test", "test")


@pytest.mark.parametrize("value, issuer, parameters", [
    ("letsencrypt.org", "letsencrypt.org", {}),
    ("  LetsEncrypt.org ; validationmethods=dns-01 ", "letsencrypt.org",
     {"validationmethods": "dns-01"}),
    (";", "", {}),
    ("ca.example; accounturi=https://ca.example/acct/1", "ca.example",
     {"accounturi": "https://ca.example/acct/1"}),
])
def test_issue_values_are_parsed(value: str, issuer: str, parameters: dict[str, str]) -> None:
    assert parse_issue_value(value) == (issuer, parameters)


@pytest.mark.parametrize("records, allowed", [
    ([issue("letsencrypt.org")], True),
    ([issue("LETSENCRYPT.ORG")], True),
    ([issue("digicert.com"), issue("letsencrypt.org")], True),
    ([issue("digicert.com")], False),
    ([issue(";")], False),
    ([issue("letsencrypt.org; validationmethods=dns-01")], False),
    ([issue("letsencrypt.org; validationmethods=dns-01,http-01")], True),
    # Only issuewild / iodef: a non-wildcard name is not restricted.
    ([issue("digicert.com", tag="issuewild")], True),
    ([issue("mailto:sec@customer.test", tag="iodef")], True),
    # Tags are case-insensitive.
    ([issue("digicert.com", tag="ISSUE")], False),
    # An unknown property flagged critical forbids issuance; not critical, it is ignored.
    ([issue("letsencrypt.org"), issue("x", flags=128, tag="tbs")], False),
    ([issue("letsencrypt.org"), issue("x", flags=0, tag="tbs")], True),
])
def test_caa_sets(records: list[CaaRecord], allowed: bool) -> None:
    assert caa_allows(records, CA)[0] is allowed


def test_the_closest_non_empty_caa_set_decides() -> None:
    levels = (CaaLevel(NAME), CaaLevel("customer-a.test", (issue("letsencrypt.org"),)),
              CaaLevel("test", (issue("digicert.com"),)))
    decision = decide_caa(levels, CA)
    assert not isinstance(decision, Unsure)
    assert decision.allowed and decision.owner == "customer-a.test"
    forbidding = (CaaLevel(NAME, (issue("digicert.com"),)),
                  CaaLevel("customer-a.test", (issue("letsencrypt.org"),)))
    decision = decide_caa(forbidding, CA)
    assert not isinstance(decision, Unsure)
    assert not decision.allowed and decision.owner == NAME


def test_a_failed_caa_lookup_below_the_deciding_set_is_unsure_but_above_it_is_ignored() -> None:
    trouble = DnsTrouble(DNS_SERVFAIL, "SERVFAIL")
    below = (CaaLevel(NAME, trouble=trouble), CaaLevel("customer-a.test", (issue(CA),)))
    assert isinstance(decide_caa(below, CA), Unsure)
    above = (CaaLevel(NAME, (issue(CA),)), CaaLevel("customer-a.test", trouble=trouble))
    decision = decide_caa(above, CA)
    assert not isinstance(decision, Unsure) and decision.allowed


def test_caa_forbidding_the_ca_keeps_a_good_chain_from_being_verified() -> None:
    levels = (CaaLevel(NAME), CaaLevel("customer-a.test", (issue("digicert.com"),)))
    verdict = run(Observation(NAME, (NAME, HOST), caa=levels))
    assert isinstance(verdict, NotYet) and verdict.code == CAA_FORBIDS
    assert "customer-a.test" in verdict.reason and 'issue "digicert.com"' in verdict.reason
    assert f'0 issue "{CA}"' in verdict.reason


def test_caa_is_not_consulted_when_the_chain_is_wrong() -> None:
    levels = (CaaLevel(NAME, trouble=DnsTrouble(DNS_SERVFAIL, "x")),)
    verdict = run(Observation(NAME, (NAME, "elsewhere.test"), caa=levels))
    assert isinstance(verdict, NotYet) and verdict.code == WRONG_TARGET
