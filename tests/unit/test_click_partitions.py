"""The month arithmetic behind the click partitions, and the days a report covers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from shared.db.click_partitions import add_months, is_partition, month_start, partition_name
from trackctl.clicks import day_range


def test_months_step_across_year_ends_both_ways() -> None:
    assert add_months(date(2026, 11, 1), 2) == date(2027, 1, 1)
    assert add_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert add_months(date(2026, 12, 1), -12) == date(2025, 12, 1)
    assert month_start(date(2026, 2, 28)) == date(2026, 2, 1)


def test_partition_names_sort_by_month_and_are_told_from_tables() -> None:
    assert partition_name("tracking_logs", date(2026, 3, 1)) == "tracking_logs_y2026m03"
    assert is_partition("tracking_logs_y2026m03")
    assert is_partition("click_recipients_default")
    assert not is_partition("tracking_logs")
    assert not is_partition("click_daily")
    assert not is_partition("other_table_y2026m03")


def test_a_report_covers_whole_utc_days() -> None:
    since = datetime(2026, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))  # 05-02 01:30Z
    assert day_range(since, None) == (date(2026, 5, 2), None)
    midnight = datetime(2026, 5, 4, tzinfo=UTC)
    assert day_range(None, midnight) == (None, date(2026, 5, 4))  # the 4th not included
    assert day_range(None, midnight + timedelta(minutes=1)) == (None, date(2026, 5, 5))
