"""The classifier's windows: bursts, honeypots, settling, redeliveries, memory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.classifier.windows import Click, Windows
from shared.bot_verdict import Verdict

T0 = 1_800_000_000.0


def click(n: int, at: float, url: str | None = None, *, recipient: str = "r1",
          reasons: tuple[str, ...] = (), bot: bool | None = None) -> Click:
    return Click(event_id=f"e{n}-{recipient}", key=("c", "k", recipient),
                 url=url or f"https://shop.test/{n}", at=T0 + at,
                 clicked_at=datetime.fromtimestamp(T0 + at, UTC), reasons=tuple(reasons),
                 bot=Verdict().is_bot(list(reasons)) if bot is None else bot)


def feed(windows: Windows, *clicks: Click) -> list[str]:
    changed: list[str] = []
    for one in clicks:
        changed.extend(c.event_id for c in windows.add(one))
    return changed


def test_a_scanner_fetching_every_link_within_seconds_is_a_burst() -> None:
    windows = Windows(burst_links=3, burst_window_s=10)
    clicks = [click(n, n * 0.7, reasons=("soon-after-send",)) for n in range(5)]
    assert feed(windows, *clicks) == [c.event_id for c in clicks]
    assert all(c.bot and c.reasons == ("burst", "soon-after-send") for c in clicks)


def test_a_person_opening_two_links_minutes_apart_stays_a_person() -> None:
    windows = Windows()
    clicks = [click(1, 0), click(2, 240), click(3, 245, url="https://shop.test/2")]
    assert feed(windows, *clicks) == []
    assert not any(c.bot for c in clicks) and all(c.reasons == () for c in clicks)


def test_the_same_link_again_is_no_burst() -> None:
    windows = Windows(burst_links=3)
    assert feed(windows, *(click(n, n * 0.1, url="https://shop.test/same")
                           for n in range(6))) == []


def test_two_distinct_links_are_no_burst_at_three() -> None:
    assert feed(Windows(burst_links=3), click(1, 0), click(2, 1)) == []
    assert feed(Windows(burst_links=2), click(1, 0), click(2, 1)) == ["e1-r1", "e2-r1"]


def test_the_window_is_a_span_not_a_chain() -> None:
    # 0, 6, 12: no 10-second span holds three links.
    assert feed(Windows(burst_links=3, burst_window_s=10),
                click(1, 0), click(2, 6), click(3, 12)) == []


def test_clicks_of_other_recipients_never_mix() -> None:
    windows = Windows(burst_links=3)
    assert feed(windows, *(click(n, n * 0.1, recipient=f"r{n}") for n in range(5))) == []


def test_clicks_around_a_honeypot_click_whichever_comes_first() -> None:
    windows = Windows(honeypot_window_s=30)
    before = click(1, 0)
    trap = click(2, 5, reasons=("honeypot",))
    after = click(3, 20)
    much_later = click(4, 200)
    assert feed(windows, before, trap, after, much_later) == ["e1-r1", "e3-r1"]
    assert before.reasons == ("near-honeypot",) and after.reasons == ("near-honeypot",)
    assert trap.reasons == ("honeypot",) and not much_later.bot


def test_a_bot_that_gains_reasons_is_returned_once_when_it_settles() -> None:
    windows = Windows(burst_links=2, honeypot_window_s=30, settle_s=60)
    curl = click(1, 0, reasons=("user-agent:curl",))
    assert feed(windows, curl, click(2, 1)) == ["e2-r1"]  # its verdict changed: at once
    assert list(curl.reasons) == ["user-agent:curl", "burst"] and curl.pending
    # More reasons and many later clicks within the settle time: still nothing for it.
    assert feed(windows, click(3, 2, reasons=("honeypot",)),
                *(click(n, n / 10, reasons=("user-agent:curl",))
                  for n in range(40, 80))) == []
    assert curl.reasons == ("user-agent:curl", "burst", "near-honeypot")
    # It settles with its recipient's window, a settle time after the last click (7.9 s).
    assert windows.advance(T0 + 67) == []
    settled = windows.advance(T0 + 68)
    assert curl in settled and not curl.pending
    assert sum(one is curl for one in settled) == 1
    assert windows.advance(T0 + 200) == [] and windows.drain() == []


def test_a_click_whose_verdict_changed_is_returned_again_only_for_later_reasons() -> None:
    windows = Windows(burst_links=2, settle_s=60)
    first, second = click(1, 0), click(2, 1)
    assert feed(windows, first, second) == ["e1-r1", "e2-r1"]
    assert not first.pending  # burst was published with the verdict
    assert windows.advance(T0 + 100) == []
    windows = Windows(burst_links=2, settle_s=60)
    first = click(1, 0)
    assert feed(windows, first, click(2, 1), click(3, 2, reasons=("honeypot",))) == [
        "e1-r1", "e2-r1"]  # the honeypot click was a bot already: its burst waits too
    assert first.pending and first.reasons == ("burst", "near-honeypot")
    assert [c.event_id for c in windows.advance(T0 + 63)] == ["e1-r1", "e2-r1", "e3-r1"]


def test_a_person_gaining_a_weak_reason_only_keeps_it_too() -> None:
    windows = Windows(burst_links=2, verdict=Verdict(weak=frozenset({"burst"})))
    first = click(1, 0)
    assert feed(windows, first, click(2, 1)) == []
    assert not first.bot and first.reasons == ("burst",)
    # A click of another recipient, a minute later, moves the clock: both settle.
    assert sorted(feed(windows, click(9, 61.5, recipient="r9"))) == ["e1-r1", "e2-r1"]


def test_a_click_trimmed_from_a_long_window_settles_with_its_reasons() -> None:
    windows = Windows(burst_links=2, settle_s=60)
    curl = click(1, 0, reasons=("user-agent:curl",))
    feed(windows, curl, click(2, 1))
    assert feed(windows, click(3, 100, url="https://shop.test/1")) == ["e1-r1"]


def test_drain_returns_every_grown_click_not_returned_yet() -> None:
    windows = Windows(burst_links=2)
    curl = click(1, 0, reasons=("user-agent:curl",))
    feed(windows, curl, click(2, 1))
    assert windows.drain() == [curl] and windows.drain() == []


def test_a_weak_reason_counted_strong_by_setting_changes_nothing_else() -> None:
    windows = Windows(burst_links=2, verdict=Verdict(weak=frozenset({"burst",
                                                                     "soon-after-send"})))
    assert feed(windows, click(1, 0), click(2, 1)) == []
    assert feed(windows, click(3, 2, reasons=("soon-after-send",))) == ["e3-r1"]


def test_a_redelivered_click_is_taken_once() -> None:
    windows = Windows(burst_links=3)
    first = [click(1, 0), click(2, 1)]
    feed(windows, *first)
    assert feed(windows, click(1, 0), click(2, 1)) == []
    assert windows.held == 2


def test_clicks_settle_and_are_forgotten() -> None:
    windows = Windows(burst_links=2, burst_window_s=10, settle_s=60)
    feed(windows, click(1, 0, recipient="a"), click(2, 30, recipient="b"))
    assert len(windows) == 2
    feed(windows, click(3, 75, recipient="c"))
    assert len(windows) == 2 and windows.held == 2  # a's click is 75 s old: gone
    assert windows.advance(T0 + 10) == [] and windows.held == 2  # never backwards
    # A click older than the settle time behind the newest relates to nothing.
    assert feed(windows, click(4, 1, recipient="b")) == []


def test_a_long_clicking_recipient_keeps_only_the_settle_time() -> None:
    windows = Windows(settle_s=60)
    feed(windows, *(click(n, n * 50.0) for n in range(10)))
    assert windows.held == 2


def test_windows_must_fit_in_the_settle_time() -> None:
    with pytest.raises(ValueError):
        Windows(burst_window_s=90, settle_s=60)
