"""Where a tracking domain stands, and which status may follow which.

The five statuses are the strings `tracking_domains.status` stores, events and metric
labels carry, and trackctl prints; `DomainStatus` is a `StrEnum`, so each member *is* its
string and compares equal to what the database hands back.

Every status change is a conditional update by the service that owns it (the verifier
for DNS, the certifier for certificates). The stores take each update's `WHERE status IN
(...)` from `sources`, or check a move they are asked for with `transition`, so a move
not in `TRANSITIONS` never reaches the table (tests/integration/test_domain_transitions.py
tries every store method on every status). docs/architecture.md has the same table,
checked against this one (tests/unit/test_domain_status.py).

Deleting a domain removes its row, except while it is pending: its rechecks are still
parked in the broker's retry tiers, so the row stays as a *tombstone* (rejected, with
`check_due_at` holding when it may be purged) that those rechecks find and ignore,
until the verifier purges it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DomainStatus(StrEnum):
    """A tracking domain's status (`tracking_domains.status`); `meaning` says what it is."""

    # The order is the CHECK constraint's (shared/db/models.py, migration 0001).
    PENDING = "pending"
    VERIFIED = "verified"
    ACTIVE = "active"
    REJECTED = "rejected"
    LAPSED = "lapsed"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    def can_become(self, new: str) -> bool:
        """True if a domain in this status may move to `new` (`TRANSITIONS`)."""
        return (self, DomainStatus(new)) in _ALLOWED


_MEANINGS = {
    DomainStatus.PENDING: "DNS does not lead to the platform host yet; the verifier "
                          "rechecks it until the deadline",
    DomainStatus.VERIFIED: "DNS leads to the platform host and CAA allows the CA; no "
                           "certificate recorded yet",
    DomainStatus.ACTIVE: "a certificate is issued and in the certificate store, which every "
                         "edge serves once its agent installed it (`certificate.installed`, "
                         "per edge); redirectors serve the customer's links on it",
    DomainStatus.REJECTED: "DNS was still wrong at the deadline: not used until added "
                           "again (with `check_due_at` set: a tombstone)",
    DomainStatus.LAPSED: "DNS moved away after verification: links fall back to the "
                         "platform host; the edges stop serving its certificate, which "
                         "is not renewed",
}


@dataclass(frozen=True)
class Transition:
    """One allowed move: who makes it, and on what."""

    old: DomainStatus
    new: DomainStatus
    by: str
    when: str


# A new domain's status (the verifier inserts the row on `domain.created`).
INITIAL = DomainStatus.PENDING

# Short names for the table below; elsewhere the code spells them `DomainStatus.X`.
PENDING, VERIFIED, ACTIVE, REJECTED, LAPSED = (
    DomainStatus.PENDING, DomainStatus.VERIFIED, DomainStatus.ACTIVE, DomainStatus.REJECTED,
    DomainStatus.LAPSED)
TRANSITIONS: tuple[Transition, ...] = (
    Transition(PENDING, VERIFIED, "verifier",
               "DNS leads to the platform host and CAA allows the CA"),
    Transition(PENDING, REJECTED, "verifier",
               "the deadline passed with DNS still wrong; or `domain.deleted` (a tombstone)"),
    Transition(VERIFIED, ACTIVE, "certifier", "a certificate is issued and stored"),
    Transition(ACTIVE, ACTIVE, "certifier", "a renewed certificate is recorded"),
    Transition(VERIFIED, LAPSED, "verifier", "a periodic check finds DNS moved away"),
    Transition(ACTIVE, LAPSED, "verifier", "a periodic check finds DNS moved away"),
    Transition(LAPSED, VERIFIED, "verifier", "a periodic check finds DNS right again"),
    Transition(LAPSED, PENDING, "verifier", "`domain.created` again: verification restarts"),
    Transition(REJECTED, PENDING, "verifier",
               "`domain.created` again, or from another customer: verification restarts"),
)
_ALLOWED = frozenset((move.old, move.new) for move in TRANSITIONS)

# The status a tombstone has (see the module's docstring).
TOMBSTONE_STATUS = DomainStatus.REJECTED


class ForbiddenTransition(ValueError):
    """A store was asked for a status change `TRANSITIONS` does not allow."""


def transition(old: str, new: DomainStatus) -> DomainStatus:
    """`new`, once the move from `old` is known to be allowed; raises `ForbiddenTransition`
    otherwise (a programming error, never a data one)."""
    if not DomainStatus(old).can_become(new):
        raise ForbiddenTransition(f"a {old} domain cannot become {new}")
    return new


def sources(new: DomainStatus) -> tuple[DomainStatus, ...]:
    """Every status that may become `new`, in declaration order: the `WHERE status IN
    (...)` of the conditional update that makes the move."""
    return tuple(status for status in DomainStatus if status.can_become(new))


def is_tombstone(status: str, check_due_at: datetime | None) -> bool:
    """A domain deleted while pending, kept until its rechecks drain."""
    return status == TOMBSTONE_STATUS and check_due_at is not None


def tombstoned_when_deleted(status: str) -> bool:
    """Whether `domain.deleted` keeps the row as a tombstone (its rechecks are still in
    the retry tiers) rather than removing it."""
    return status == DomainStatus.PENDING
