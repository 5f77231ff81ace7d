"""trackctl's shared output helpers: tables, times, --since, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from trackctl.output import (
    USAGE,
    CliError,
    fields,
    fmt_relative,
    fmt_span,
    fmt_time,
    parse_since,
    shorten,
    table,
    to_json,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = table(("name", "clicks"), [("a.example", 5), ("bb", 120), ("c", None)],
                 right=("clicks",))
    assert text.splitlines() == [
        "name       clicks",
        "---------  ------",
        "a.example       5",
        "bb            120",
        "c               -",
    ]


def test_table_renders_times_booleans_and_empty_cells() -> None:
    text = table(("at", "ok", "note"), [(NOW, True, None)])
    assert text.splitlines()[2] == "2026-05-01 12:00:00Z  yes  -"


def test_fields_align_values() -> None:
    assert fields([("a", 1), ("longer", None)]).splitlines() == ["a:      1", "longer: -"]


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5 s"), (600, "10 min"), (5 * 3600, "5 h"), (89 * 86400, "89 d"), (-7200, "2 h")])
def test_fmt_span(seconds: float, text: str) -> None:
    assert fmt_span(seconds) == text


def test_fmt_relative_past_future_and_missing() -> None:
    assert fmt_relative(NOW + timedelta(days=89), NOW) == "2026-07-29 12:00:00Z (in 89 d)"
    assert fmt_relative(NOW - timedelta(hours=3), NOW) == "2026-05-01 09:00:00Z (3 h ago)"
    assert fmt_relative(None, NOW) == "-"


def test_naive_times_are_utc_and_offsets_are_converted() -> None:
    assert fmt_time(datetime(2026, 5, 1, 12, 0)) == "2026-05-01 12:00:00Z"
    plus2 = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert fmt_time(plus2) == "2026-05-01 12:00:00Z"


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", NOW - timedelta(hours=24)),
    ("7d", NOW - timedelta(days=7)),
    ("30m", NOW - timedelta(minutes=30)),
    ("90s", NOW - timedelta(seconds=90)),
    ("2w", NOW - timedelta(weeks=2)),
    ("1.5h", NOW - timedelta(minutes=90)),
    ("2026-04-30", datetime(2026, 4, 30, tzinfo=UTC)),
    ("2026-04-30T10:00", datetime(2026, 4, 30, 10, tzinfo=UTC)),
    ("2026-04-30T10:00Z", datetime(2026, 4, 30, 10, tzinfo=UTC)),
    ("2026-04-30T12:00+02:00", datetime(2026, 4, 30, 10, tzinfo=UTC)),
])
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "24 hours", "2026-13-01", "-5h"])
def test_parse_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_since(text, NOW)
    assert caught.value.status == USAGE
    assert "24h" in caught.value.message


def test_shorten_folds_lines_and_marks_the_cut() -> None:
    assert shorten("a\nb  c", 10) == "a b c"
    assert shorten("abcdefghij", 5) == "abcd…"
    assert shorten(None, 5) == "-"


def test_to_json_writes_utc_times_with_z() -> None:
    document = json.loads(to_json({"at": NOW, "naive": datetime(2026, 5, 1), "b": b"x",
                                   "s": {1}}))
    assert document == {"at": "2026-05-01T12:00:00Z", "naive": "2026-05-01T00:00:00Z",
                        "b": "x", "s": [1]}


def test_control_characters_are_escaped_and_everything_else_kept() -> None:
    from trackctl.output import escape_controls

    assert escape_controls("a\x1b[2Jb\x07\x9b\x7f\u202e") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\u202e"
    assert escape_controls("line\n\ttab café ✓") == "line\n\ttab café ✓"


def test_json_output_escapes_what_json_leaves_raw_and_stays_valid() -> None:
    text = to_json({"error": "\x1b[2J\x9b\x7f\u2066é"})
    assert "\x9b" not in text and "\x7f" not in text and "\u2066" not in text
    assert json.loads(text) == {"error": "\x1b[2J\x9b\x7f\u2066é"}
