"""The domain statuses and their transition rules (shared/domain_status.py), and the table
of them in docs/architecture.md."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, create_engine, insert, select

from shared.db.models import TrackingDomain, tombstone_condition
from shared.domain_status import (
    INITIAL,
    TOMBSTONE_STATUS,
    TRANSITIONS,
    DomainStatus,
    ForbiddenTransition,
    is_tombstone,
    sources,
    tombstoned_when_deleted,
    transition,
)

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {(move.old, move.new) for move in TRANSITIONS}
FORBIDDEN = sorted(set(itertools.product(DomainStatus, repeat=2)) - ALLOWED)
WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def test_the_values_are_the_strings_stored_and_sent() -> None:
    # Stored in tracking_domains.status, carried by metric labels and trackctl's JSON:
    # renaming one is a migration, not a refactoring.
    assert [status.value for status in DomainStatus] == [
        "pending", "verified", "active", "rejected", "lapsed"]
    stored: str = "active"  # typed as what the database hands back
    assert stored == DomainStatus.ACTIVE and f"{DomainStatus.LAPSED}" == "lapsed"
    assert json.dumps({"status": DomainStatus.PENDING}) == '{"status": "pending"}'
    assert DomainStatus("rejected") is DomainStatus.REJECTED


def test_the_check_constraint_lists_every_status_as_the_first_migration_does() -> None:
    constraint = next(c for c in TrackingDomain.__table__.constraints
                      if isinstance(c, CheckConstraint))
    expected = "status IN ('pending', 'verified', 'active', 'rejected', 'lapsed')"
    assert str(constraint.sqltext) == expected
    migration = (ROOT / "shared/db/migrations/versions/0001_initial.py").read_text()
    assert expected in migration  # a new status needs a new migration as well


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED), ids=lambda s: str(s))
def test_every_allowed_transition(old: DomainStatus, new: DomainStatus) -> None:
    assert old.can_become(new)
    assert transition(old, new) is new
    assert transition(str(old.value), new) is new  # a plain string read from a row
    assert old in sources(new)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN, ids=lambda s: str(s))
def test_every_other_transition_is_forbidden(old: DomainStatus, new: DomainStatus) -> None:
    assert not old.can_become(new)
    with pytest.raises(ForbiddenTransition, match=f"a {old} domain cannot become {new}"):
        transition(old, new)
    assert old not in sources(new)


def test_a_sample_of_forbidden_moves() -> None:
    # The ones a careless change would most likely make.
    for old, new in [("active", "verified"), ("active", "pending"), ("verified", "pending"),
                     ("rejected", "verified"), ("lapsed", "active"), ("pending", "active"),
                     ("rejected", "rejected"), ("pending", "lapsed")]:
        assert (old, new) in FORBIDDEN
    with pytest.raises(ValueError):
        transition("deleted", DomainStatus.PENDING)  # not a status at all


def test_sources_are_the_where_clauses_of_the_moves() -> None:
    assert sources(DomainStatus.ACTIVE) == (DomainStatus.VERIFIED, DomainStatus.ACTIVE)
    assert sources(DomainStatus.LAPSED) == (DomainStatus.VERIFIED, DomainStatus.ACTIVE)
    assert sources(DomainStatus.PENDING) == (DomainStatus.REJECTED, DomainStatus.LAPSED)
    assert sources(DomainStatus.VERIFIED) == (DomainStatus.PENDING, DomainStatus.LAPSED)
    assert sources(DomainStatus.REJECTED) == (DomainStatus.PENDING,)


def test_every_status_is_reachable_from_the_first_and_none_is_a_dead_end() -> None:
    reached, frontier = {INITIAL}, [INITIAL]
    while frontier:
        status = frontier.pop()
        for old, new in ALLOWED:
            if old == status and new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(DomainStatus)
    assert all(any(old == status and new != status for old, new in ALLOWED)
               for status in DomainStatus)


def test_each_transition_names_who_makes_it() -> None:
    assert {move.by for move in TRANSITIONS} == {"verifier", "certifier"}
    # The certifier only ever activates; every other move is the verifier's.
    assert {move.new for move in TRANSITIONS if move.by == "certifier"} == {
        DomainStatus.ACTIVE}
    assert len(ALLOWED) == len(TRANSITIONS)  # no move listed twice


@pytest.mark.parametrize("status", list(DomainStatus), ids=str)
def test_tombstones(status: DomainStatus) -> None:
    assert is_tombstone(status, WHEN) == (status is TOMBSTONE_STATUS)
    assert not is_tombstone(status, None)
    assert tombstoned_when_deleted(status) == (status is DomainStatus.PENDING)
    if tombstoned_when_deleted(status):
        assert status.can_become(TOMBSTONE_STATUS)


def test_the_sql_tombstone_condition_agrees_with_the_predicate() -> None:
    engine = create_engine("sqlite://")
    TrackingDomain.__table__.create(engine)
    cases = [(status, due) for status in DomainStatus for due in (None, WHEN)]
    rows = [{"name": f"{status}-{bool(due)}.test", "customer_id": "c", "status": status,
             "verified": False, "check_due_at": due, "created_at": WHEN, "updated_at": WHEN}
            for status, due in cases]
    with engine.begin() as connection:
        connection.execute(insert(TrackingDomain), rows)
        found = set(connection.execute(
            select(TrackingDomain.name).where(tombstone_condition())).scalars())
    engine.dispose()
    assert found == {f"{status}-{bool(due)}.test" for status, due in cases
                     if is_tombstone(status, due)}
    assert found == {f"{TOMBSTONE_STATUS}-True.test"}


# --- docs/architecture.md ---------------------------------------------------------------------

BEGIN = "<!-- domain statuses: generated from shared/domain_status.py, checked by " \
        "tests/unit/test_domain_status.py -->"
END = "<!-- end of domain statuses -->"


def rendered_tables() -> str:
    lines = ["| status | means |", "| --- | --- |"]
    lines += [f"| `{status}` | {status.meaning} |" for status in DomainStatus]
    lines += ["", "| from | to | by | when |", "| --- | --- | --- | --- |"]
    lines += [f"| `{move.old}` | `{move.new}` | {move.by} | {move.when} |"
              for move in TRANSITIONS]
    return "\n".join(lines)


def test_the_architecture_doc_has_the_table_of_statuses_and_transitions() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert BEGIN in doc and END in doc, f"docs/architecture.md lacks {BEGIN}"
    documented = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == rendered_tables(), (
        "docs/architecture.md's status tables differ from shared/domain_status.py; "
        f"replace them with:\n{rendered_tables()}")
