"""What several clicks of one recipient in one campaign show: a burst, or a honeypot.

A mail scanner fetches every link of a message within seconds, the hidden honeypot
link among them; a person opens one or two links, minutes or days apart, and never
the hidden one. So the clicks of a recipient (in a campaign) are kept for
`settle_s` seconds, and each new click is looked at with the ones around it:

- `burst`: `burst_links` or more distinct links within `burst_window_s` seconds: every
  click of that window gets it;
- `near-honeypot`: the clicks within `honeypot_window_s` seconds of a honeypot click.

A click's verdict can change only while it is in a window, so it settles within
`settle_s` of the newest click time seen (the clock here is the clicks' own time, so
a backlog after an outage is judged as it happened, not by when it is read).
Pure logic: no I/O, no wall clock (tests/unit/test_classifier_windows.py).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from shared.bot_verdict import BURST, HONEYPOT, NEAR_HONEYPOT, Verdict, ordered

Key = tuple[str, str, str]  # customer, campaign, recipient


@dataclass(eq=False)
class Click:
    """One tracked click as the windows hold it; `reasons` and `bot` are its current ones."""

    event_id: str
    key: Key
    url: str
    at: float  # the click's time, Unix seconds
    clicked_at: datetime
    reasons: list[str]
    bot: bool

    @property
    def honeypot(self) -> bool:
        return HONEYPOT in self.reasons


@dataclass
class _Window:
    clicks: list[Click] = field(default_factory=list)  # by `at`
    ids: set[str] = field(default_factory=set)
    honeypots: int = 0  # honeypot clicks among `clicks`


@dataclass
class Windows:
    burst_links: int = 3
    burst_window_s: float = 10.0
    honeypot_window_s: float = 30.0
    settle_s: float = 60.0
    verdict: Verdict = field(default_factory=Verdict)
    # Least recently touched first, so expiry stops at the first key still live.
    _windows: OrderedDict[Key, _Window] = field(default_factory=OrderedDict)
    _newest: float = float("-inf")
    held: int = 0  # clicks in memory

    def __post_init__(self) -> None:
        if max(self.burst_window_s, self.honeypot_window_s) > self.settle_s:
            raise ValueError("the burst and honeypot windows must fit in the settle time")

    def add(self, click: Click) -> list[Click]:
        """Take a click; return the clicks whose verdict it changed (it may be one)."""
        if click.at > self._newest:
            self._newest = click.at
            self.expire()
        if click.at < self._newest - self.settle_s:
            return []  # older than anything it could still be related to
        window = self._windows.get(click.key)
        if window is None:
            window = self._windows[click.key] = _Window()
        else:
            self._windows.move_to_end(click.key)
        if click.event_id in window.ids:
            return []  # a redelivery
        window.ids.add(click.event_id)
        bisect.insort(window.clicks, click, key=lambda c: c.at)
        self.held += 1
        horizon = self._newest - self.settle_s
        if click.honeypot:
            window.honeypots += 1
        while window.clicks[0].at < horizon:  # a recipient clicking for hours keeps a minute
            gone = window.clicks.pop(0)
            window.ids.discard(gone.event_id)
            window.honeypots -= gone.honeypot
            self.held -= 1
        if len(window.clicks) < min(self.burst_links, 2) or (
                len(window.clicks) < self.burst_links and not window.honeypots):
            return []  # most recipients: one click, nothing to relate it to
        found: dict[int, set[str]] = {}
        if len(window.clicks) >= self.burst_links:
            self._bursts(window.clicks, click, found)
        if window.honeypots:
            self._honeypots(window.clicks, click, found)
        changed = []
        for one in window.clicks:
            extra = found.get(id(one))
            if not extra or extra <= set(one.reasons):
                continue
            one.reasons = ordered([*one.reasons, *extra])
            bot = self.verdict.is_bot(one.reasons)
            if bot != one.bot:
                one.bot = bot
                changed.append(one)
        return changed

    def _bursts(self, clicks: list[Click], new: Click, found: dict[int, set[str]]) -> None:
        """Every span of `burst_window_s` holding the new click and `burst_links` links."""
        span = self.burst_window_s
        near = [c for c in clicks if abs(c.at - new.at) <= span]
        for start, first in enumerate(near):
            if first.at > new.at:
                break
            inside = [c for c in near[start:] if c.at - first.at <= span]
            if len({c.url for c in inside}) >= self.burst_links:
                for one in inside:
                    found.setdefault(id(one), set()).add(BURST)

    def _honeypots(self, clicks: list[Click], new: Click, found: dict[int, set[str]]) -> None:
        span = self.honeypot_window_s
        traps = [new] if new.honeypot else [c for c in clicks if c.honeypot
                                             and abs(c.at - new.at) <= span]
        for trap in traps:
            for one in clicks:
                if one is not trap and not one.honeypot and abs(one.at - trap.at) <= span:
                    found.setdefault(id(one), set()).add(NEAR_HONEYPOT)

    def expire(self) -> int:
        """Forget the recipients with no click within `settle_s` of the newest click."""
        horizon = self._newest - self.settle_s
        gone = 0
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.clicks[-1].at >= horizon:
                break
            del self._windows[key]
            gone += len(window.clicks)
        self.held -= gone
        return gone

    def __len__(self) -> int:
        return len(self._windows)
