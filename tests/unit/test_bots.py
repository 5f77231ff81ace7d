"""Bot flagging: HEAD, no user agent, and known scanners get a reason; people get None."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus import BROWSERS
from services.redirector.bots import (
    ClickReasons,
    ScannerNetworks,
    ScannerNetworksError,
    request_reasons,
)
from shared.bot_verdict import BOT_WEAK_REASONS, Verdict, ordered
from shared.errors import SettingsError
from shared.links import Link

PEOPLE = [
    *BROWSERS,  # the ones the corpus's people use (bench/corpus.py)
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
]

SCANNERS = [
    ("Mozilla/5.0 (compatible; Proofpoint URL Defense)", "user-agent:proofpoint"),
    ("Mimecast Link Scanner", "user-agent:mimecast"),
    ("Barracuda Sentinel (EE)", "user-agent:barracuda"),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
     "user-agent:microsoft office"),
    ("Mozilla/5.0 (compatible; SafeLinks)", "user-agent:safelinks"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
     "user-agent:googlebot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
     "user-agent:bingbot"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
     "user-agent:facebookexternalhit"),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "user-agent:slackbot"),
    ("WhatsApp/2.23.20.0", "user-agent:whatsapp"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/124.0.0.0 Safari/537.36", "user-agent:headlesschrome"),
    ("python-requests/2.32.3", "user-agent:python-requests"),
    ("Python-urllib/3.12", "user-agent:python-urllib"),
    ("curl/8.5.0", "user-agent:curl"),
    ("Wget/1.21.4", "user-agent:wget"),
    ("Go-http-client/1.1", "user-agent:go-http-client"),
    ("okhttp/4.12.0", "user-agent:okhttp"),
    ("Java/17.0.2", "user-agent:java"),
    ("Apache-HttpClient/4.5.14 (Java/17)", "user-agent:apache-httpclient"),
    ("axios/1.6.8", "user-agent:axios"),
    ("Mozilla/5.0 (compatible; SomeCrawler/1.0)", "user-agent:crawler"),
    ("AcmeSecurity link scanner 3", "user-agent:scanner"),
    ("Mozilla/5.0 (compatible; ExampleBot/1.0)", "user-agent:bot"),
    ("LinkPreview/2.0", "user-agent:preview"),
]


@pytest.mark.parametrize("user_agent", PEOPLE)
def test_browsers_are_people(user_agent: str) -> None:
    assert request_reasons("GET", user_agent) == ()


@pytest.mark.parametrize(("user_agent", "reason"), SCANNERS)
def test_scanners_are_flagged_with_their_name(user_agent: str, reason: str) -> None:
    assert request_reasons("GET", user_agent) == (reason,)


def test_matching_ignores_case() -> None:
    assert request_reasons("GET", "PROOFPOINT") == ("user-agent:proofpoint",)
    assert request_reasons("GET", "CURL/8") == ("user-agent:curl",)


def test_head_is_flagged_whatever_the_agent_and_keeps_the_agents_reason() -> None:
    assert request_reasons("HEAD", PEOPLE[0]) == ("head-request",)
    assert request_reasons("HEAD", None) == ("head-request", "no-user-agent")
    assert request_reasons("HEAD", "curl/8") == ("head-request", "user-agent:curl")


@pytest.mark.parametrize("user_agent", [None, ""])
def test_missing_user_agent(user_agent: str | None) -> None:
    assert request_reasons("GET", user_agent) == ("no-user-agent",)


def test_reasons_fit_the_event_field() -> None:
    # click.tracked's bot_reason is at most 100 characters.
    for user_agent, _ in SCANNERS:
        (reason,) = request_reasons("GET", user_agent)
        assert len(reason) <= 100


def test_words_containing_bot_are_not_bots() -> None:
    # "bot" only counts as a word ending: "robotics" or "Botanic" in a UA is not a bot.
    assert request_reasons("GET", "Mozilla/5.0 BotanicGardenApp/1.0") == ()


# --- one click's other reasons, and the verdict --------------------------------------------

NETWORKS = """\
# Microsoft's and Mimecast's published ranges, say (docs/classification.md)
40.92.0.0/15 microsoft
40.93.0.0/16 microsoft-inner   # nested in the one above
205.139.110.0/24 mimecast
2a01:111:f400::/48 microsoft
198.51.100.7
"""


def networks(tmp_path: Path, text: str = NETWORKS) -> ScannerNetworks:
    path = tmp_path / "scanners.cidr"
    path.write_text(text)
    return ScannerNetworks.from_file(path)


@pytest.mark.parametrize(("address", "reason"), [
    ("40.92.1.2", "scanner-network:microsoft"),
    ("40.93.200.1", "scanner-network:microsoft-inner"),
    ("40.93.255.255", "scanner-network:microsoft-inner"),
    ("40.91.255.255", None),
    ("40.94.0.0", None),
    ("205.139.110.99", "scanner-network:mimecast"),
    ("205.139.111.1", None),
    ("2a01:111:f400:1::5", "scanner-network:microsoft"),
    ("2a01:111:f401::5", None),
    ("198.51.100.7", "scanner-network"),
    ("198.51.100.8", None),
    ("not an address", None),
    (None, None),
])
def test_scanner_networks_by_address(tmp_path: Path, address: str | None,
                                     reason: str | None) -> None:
    assert networks(tmp_path).label(address) == reason


def test_a_wide_range_is_found_beyond_a_narrower_one_after_it(tmp_path: Path) -> None:
    found = networks(tmp_path, "10.0.0.0/8 wide\n10.1.0.0/16 narrow\n10.2.0.0/16 other\n")
    assert found.label("10.1.2.3") == "scanner-network:narrow"
    assert found.label("10.3.0.1") == "scanner-network:wide"
    assert found.label("11.0.0.1") is None


@pytest.mark.parametrize("text", ["10.0.0.0/33\n", "10.0.0.0/8 Bad Label\n", "nonsense\n"])
def test_a_bad_line_names_its_number(tmp_path: Path, text: str) -> None:
    with pytest.raises(ScannerNetworksError, match=r"scanners.cidr:1"):
        networks(tmp_path, text)


def test_a_missing_file_is_an_error_and_no_file_lists_nothing(tmp_path: Path) -> None:
    with pytest.raises(ScannerNetworksError):
        ScannerNetworks.from_file(tmp_path / "absent")
    assert ScannerNetworks.from_file(None).label("40.92.1.2") is None


def _link(minted_at: int | None = None, honeypot: bool = False) -> Link:
    return Link(customer_id="c", campaign_id="k", recipient_id="r", url="https://e.test/",
                kid="k1", minted_at=minted_at, honeypot=honeypot)


def test_every_reason_of_a_click_strongest_first(tmp_path: Path) -> None:
    reasons = ClickReasons(networks=networks(tmp_path), soon_after_send_s=60)
    now = 1_800_000_000.0
    assert reasons.of("GET", PEOPLE[0], "192.0.2.1", _link(), now) == ()
    assert reasons.of("GET", PEOPLE[0], "192.0.2.1", _link(int(now) - 3600), now) == ()
    assert reasons.of("HEAD", "curl/8", "40.92.1.2", _link(int(now) - 5, honeypot=True),
                      now) == ("head-request", "user-agent:curl", "scanner-network:microsoft",
                               "honeypot", "soon-after-send")
    assert reasons.of("GET", PEOPLE[0], None, _link(int(now) - 60), now) == (
        "soon-after-send",)
    assert reasons.of("GET", PEOPLE[0], None, _link(int(now) - 61), now) == ()
    # A minting clock ahead of ours is still "soon".
    assert reasons.of("GET", PEOPLE[0], None, _link(int(now) + 30), now) == (
        "soon-after-send",)


def test_weak_reasons_make_a_bot_only_with_another() -> None:
    verdict = Verdict()
    assert not verdict.is_bot([])
    assert not verdict.is_bot(["soon-after-send"])
    assert verdict.is_bot(["burst", "soon-after-send"])
    for strong in ("head-request", "no-user-agent", "user-agent:curl", "scanner-network:x",
                   "scanner-network", "honeypot", "burst", "near-honeypot"):
        assert verdict.is_bot([strong])
    stricter = Verdict(weak=frozenset({"soon-after-send", "burst"}))
    assert not stricter.is_bot(["burst"])
    assert stricter.is_bot(["burst", "soon-after-send"])


def test_weak_reasons_setting_names_only_known_families() -> None:
    assert BOT_WEAK_REASONS.read({}) == frozenset({"soon-after-send"})
    assert BOT_WEAK_REASONS.read({"BOT_WEAK_REASONS": "soon-after-send,burst"}) == frozenset(
        {"soon-after-send", "burst"})
    with pytest.raises(SettingsError, match="BOT_WEAK_REASONS names unknown reasons soon"):
        BOT_WEAK_REASONS.read({"BOT_WEAK_REASONS": "soon"})


def test_reasons_are_ordered_strongest_first_without_repeats() -> None:
    assert ordered(["soon-after-send", "burst", "user-agent:curl", "burst", "odd"]) == [
        "user-agent:curl", "burst", "soon-after-send", "odd"]
