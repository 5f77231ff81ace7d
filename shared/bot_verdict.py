"""Why a click looks automated (its reasons), and the one rule that turns reasons into `bot`.

The redirector finds a click's own reasons; the classifier adds the ones only several
clicks show (a burst, clicks beside a honeypot click). Both decide the verdict here, so
a click's `bot` means the same wherever it was decided (docs/classification.md).

A reason is a family, optionally `:detail` (`user-agent:curl`, `scanner-network:mimecast`).
Strong families make a click a bot alone; weak ones (by default `soon-after-send`: people
do sometimes click within a minute of the send) only together with another reason. The
rule is monotone: adding reasons never turns a bot back into a person, so reasons learnt
later can be merged in any order (the logger unions them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.settings.declare import Invalid, Setting
from shared.settings.parsers import items

# Per click (the redirector).
HEAD_REQUEST = "head-request"
NO_USER_AGENT = "no-user-agent"
USER_AGENT = "user-agent"  # user-agent:<name>
SCANNER_NETWORK = "scanner-network"  # scanner-network[:<label>]
HONEYPOT = "honeypot"
SOON_AFTER_SEND = "soon-after-send"
# Across clicks (the classifier).
BURST = "burst"
NEAR_HONEYPOT = "near-honeypot"

FAMILIES = (HEAD_REQUEST, NO_USER_AGENT, USER_AGENT, SCANNER_NETWORK, HONEYPOT, BURST,
            NEAR_HONEYPOT, SOON_AFTER_SEND)
# A click's reasons are kept in this order, so its first (`bot_reason`) is its strongest.
_RANK = {family: rank for rank, family in enumerate(FAMILIES)}


def _families(text: str) -> frozenset[str]:
    chosen = frozenset(items(text))
    unknown = sorted(chosen - set(FAMILIES))
    if unknown:
        raise Invalid(f"names unknown reasons {', '.join(unknown)}; known: "
                      f"{', '.join(FAMILIES)}")
    return chosen


BOT_WEAK_REASONS = Setting(
    "BOT_WEAK_REASONS", _families, SOON_AFTER_SEND,
    "Reasons that make a click a bot only together with another reason, comma-separated.")


def family(reason: str) -> str:
    return reason.split(":", 1)[0]


def ordered(reasons: Iterable[str]) -> list[str]:
    """Distinct reasons, strongest family first (unknown families last), stable otherwise."""
    unique = dict.fromkeys(reasons)
    return sorted(unique, key=lambda reason: _RANK.get(family(reason), len(_RANK)))


@dataclass(frozen=True)
class Verdict:
    """The rule: a strong reason alone, or a weak one with any other, makes a bot."""

    weak: frozenset[str] = frozenset({SOON_AFTER_SEND})

    def is_bot(self, reasons: Sequence[str]) -> bool:
        if len(reasons) >= 2:
            return True
        return bool(reasons) and family(reasons[0]) not in self.weak
