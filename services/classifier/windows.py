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

What is returned to publish: a click whose verdict changed, at once (the upstream may
have to undo something); a click whose reasons grew but whose verdict did not (a bot
that was also in a burst), once, when it settles (leaves the windows), with every
reason it gathered by then. So a click is published at most twice (the verdict only
ever goes from person to bot), and a burst of many later clicks adds nothing per click.
Pure logic: no I/O, no wall clock (tests/unit/test_classifier_windows.py).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from shared.bot_verdict import BURST, HONEYPOT, NEAR_HONEYPOT, Verdict, ordered

Key = tuple[str, str, str]  # customer, campaign, recipient


class Click(msgspec.Struct, eq=False, gc=False):
    """One tracked click as the windows hold it; `reasons` and `bot` are its current ones,
    `pending` says its reasons grew since it was last returned (its verdict did not).
    Not tracked by the garbage collector (nothing in it refers back to it): a minute of
    clicks walked at every collection cost more than classifying them."""

    event_id: str
    key: Key
    url: str
    at: float  # the click's time, Unix seconds
    clicked_at: datetime
    reasons: tuple[str, ...]
    bot: bool
    pending: bool = False

    @property
    def honeypot(self) -> bool:
        return HONEYPOT in self.reasons


def _at(click: Click) -> float:
    return click.at


class _Window(msgspec.Struct, gc=False):
    clicks: list[Click]  # by `at`; a few (a recipient's minute), so no set of their ids
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
        """Take a click; return the clicks to publish: those whose verdict it changed (it
        may be one), and those with grown reasons that settled as its time came."""
        settled = self.advance(click.at)
        if click.at < self._newest - self.settle_s:
            return settled  # older than anything it could still be related to
        window = self._windows.get(click.key)
        if window is None:
            window = self._windows[click.key] = _Window([click])
        else:
            self._windows.move_to_end(click.key)
            if any(one.event_id == click.event_id for one in window.clicks):
                return settled  # a redelivery
            bisect.insort(window.clicks, click, key=_at)
        self.held += 1
        horizon = self._newest - self.settle_s
        if click.honeypot:
            window.honeypots += 1
        while window.clicks[0].at < horizon:  # a recipient clicking for hours keeps a minute
            gone = window.clicks.pop(0)
            window.honeypots -= gone.honeypot
            self.held -= 1
            if gone.pending:
                gone.pending = False
                settled.append(gone)
        if len(window.clicks) < min(self.burst_links, 2) or (
                len(window.clicks) < self.burst_links and not window.honeypots):
            return settled  # most recipients: one click, nothing to relate it to
        found: dict[int, set[str]] = {}
        if len(window.clicks) >= self.burst_links:
            self._bursts(window.clicks, click, found)
        if window.honeypots:
            self._honeypots(window.clicks, click, found)
        for one in window.clicks:
            extra = found.get(id(one))
            if not extra or extra.issubset(one.reasons):
                continue
            one.reasons = tuple(ordered([*one.reasons, *extra]))
            bot = self.verdict.is_bot(one.reasons)
            if bot != one.bot:
                one.bot = bot
                one.pending = False
                settled.append(one)
            else:
                one.pending = True  # returned once, when it settles
        return settled

    def _bursts(self, clicks: list[Click], new: Click, found: dict[int, set[str]]) -> None:
        """Every span of `burst_window_s` holding the new click and `burst_links` links."""
        span = self.burst_window_s
        near = clicks[bisect.bisect_left(clicks, new.at - span, key=_at):
                      bisect.bisect_right(clicks, new.at + span, key=_at)]
        end = 0
        for start, first in enumerate(near):
            if first.at > new.at:
                break
            while end < len(near) and near[end].at - first.at <= span:
                end += 1
            inside = near[start:end]
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

    def advance(self, now: float) -> list[Click]:
        """Move the clock to `now` (a click's time; or, with no click coming, the wall
        clock's), if later; return the clicks with grown reasons that settled."""
        if now <= self._newest:
            return []
        self._newest = now
        return self.expire()

    def expire(self) -> list[Click]:
        """Forget the recipients with no click within `settle_s` of the newest click;
        return their clicks with grown reasons (settled now)."""
        horizon = self._newest - self.settle_s
        settled = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.clicks[-1].at >= horizon:
                break
            del self._windows[key]
            self.held -= len(window.clicks)
            settled.extend(self._take_pending(window.clicks))
        return settled

    def drain(self) -> list[Click]:
        """Every click with grown reasons not returned yet (at stop: publish them now)."""
        return [one for window in self._windows.values()
                for one in self._take_pending(window.clicks)]

    @staticmethod
    def _take_pending(clicks: list[Click]) -> list[Click]:
        taken = [one for one in clicks if one.pending]
        for one in taken:
            one.pending = False
        return taken

    def __len__(self) -> int:
        return len(self._windows)
