"""Bot flagging: HEAD, no user agent, and known scanners get a reason; people get None."""

from __future__ import annotations

import pytest

from services.redirector.bots import classify

PEOPLE = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
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
    assert classify("GET", user_agent) is None


@pytest.mark.parametrize(("user_agent", "reason"), SCANNERS)
def test_scanners_are_flagged_with_their_name(user_agent: str, reason: str) -> None:
    assert classify("GET", user_agent) == reason


def test_matching_ignores_case() -> None:
    assert classify("GET", "PROOFPOINT") == "user-agent:proofpoint"
    assert classify("GET", "CURL/8") == "user-agent:curl"


def test_head_is_flagged_whatever_the_agent() -> None:
    assert classify("HEAD", PEOPLE[0]) == "head-request"
    assert classify("HEAD", None) == "head-request"


@pytest.mark.parametrize("user_agent", [None, ""])
def test_missing_user_agent(user_agent: str | None) -> None:
    assert classify("GET", user_agent) == "no-user-agent"


def test_reasons_fit_the_event_field() -> None:
    # click.tracked's bot_reason is at most 100 characters.
    for user_agent, _ in SCANNERS:
        reason = classify("GET", user_agent)
        assert reason is not None
        assert len(reason) <= 100


def test_words_containing_bot_are_not_bots() -> None:
    # "bot" only counts as a word ending: "robotics" or "Botanic" in a UA is not a bot.
    assert classify("GET", "Mozilla/5.0 BotanicGardenApp/1.0") is None
