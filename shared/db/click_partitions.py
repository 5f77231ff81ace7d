"""Monthly partitions of the click tables on PostgreSQL: made ahead of time, dropped whole.

`tracking_logs` is partitioned by the month of `clicked_at` (UTC) and `click_recipients`
(the per-recipient, per-day aggregate) by the month of `day`. Each also has a DEFAULT
partition, so a click whose month has no partition yet (a clock far off, a replay of
old clicks) is stored there rather than refused. `maintain` (run by the logger at start
and hourly, and by the migration) makes the partitions of this month and the next
`MONTHS_AHEAD`, moves any month found in a DEFAULT partition into a partition of its
own, and drops every partition whose month ended more than the retention ago: old
clicks go a month at a time (`DROP TABLE`), never row by row. SQLite keeps one table
and no retention.

Works on a synchronous SQLAlchemy connection (Alembic's; the logger's through
`run_sync`) inside the caller's transaction; an advisory lock lets several loggers run
it at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Connection, text

# (table, partition key, the key's SQL type)
PARTITIONED = (("tracking_logs", "clicked_at", "timestamptz"),
               ("click_recipients", "day", "date"))
MONTHS_AHEAD = 2
_LOCK_KEY = 0x7472_6b70  # any constant: "trkp"
_NAME = re.compile(r"^(?P<table>[a-z_]+)_y(?P<year>\d{4})m(?P<month>\d{2})$")


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def default_partition(table: str) -> str:
    return f"{table}_default"


def is_partition(name: str) -> bool:
    """True for a partition's name (the schema's tables are the partitioned parents)."""
    match = _NAME.match(name)
    parents = {table for table, _key, _type in PARTITIONED}
    return (match is not None and match["table"] in parents) or name in {
        default_partition(table) for table in parents}


def _bound(month: date, key_type: str) -> str:
    # Timestamps bound at UTC midnight, whatever the session's time zone.
    return f"'{month.isoformat()}'" if key_type == "date" else f"'{month.isoformat()} 00:00+00'"


@dataclass
class Maintenance:
    """What one `maintain` did: partitions created and dropped, rows moved out of DEFAULT."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_rows: int = 0


def existing_months(connection: Connection, table: str) -> set[date]:
    names = connection.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table"),
        {"table": table}).scalars()
    months = set()
    for name in names:
        match = _NAME.match(name)
        if match and match["table"] == table:
            months.add(date(int(match["year"]), int(match["month"]), 1))
    return months


def create_month(connection: Connection, table: str, key: str, key_type: str,
                 month: date) -> int:
    """Attach `month`'s partition of `table`, first moving that month's rows (if any) out
    of the DEFAULT partition (ATTACH refuses while DEFAULT holds rows of the range).
    Returns how many rows were moved."""
    name, low, high = (partition_name(table, month), _bound(month, key_type),
                       _bound(add_months(month, 1), key_type))
    connection.execute(text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
    moved = connection.execute(text(
        f"WITH moved AS (DELETE FROM {default_partition(table)} "
        f"WHERE {key} >= {low} AND {key} < {high} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved")).rowcount
    connection.execute(text(
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"))
    return moved


def maintain(connection: Connection, *, today: date, retention_days: int | None,
             extra_months: set[date] | None = None) -> Maintenance:
    """Bring every partitioned click table up to date (see the module's docstring);
    `retention_days=None` drops nothing; `extra_months` are made too (the migration's
    months of existing rows)."""
    done = Maintenance()
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    this_month = month_start(today)
    cutoff = None if retention_days is None else today - timedelta(days=retention_days)
    for table, key, key_type in PARTITIONED:
        have = existing_months(connection, table)
        strays = connection.execute(text(
            f"SELECT DISTINCT date_trunc('month', {key} AT TIME ZONE 'UTC')::date "
            f"FROM {default_partition(table)}" if key_type != "date" else
            f"SELECT DISTINCT date_trunc('month', {key})::date "
            f"FROM {default_partition(table)}")).scalars()
        wanted = {add_months(this_month, n) for n in range(MONTHS_AHEAD + 1)}
        wanted |= set(strays) | (extra_months or set())
        for month in sorted(wanted - have):
            done.moved_rows += create_month(connection, table, key, key_type, month)
            done.created.append(partition_name(table, month))
            have.add(month)
        if cutoff is None:
            continue
        for month in sorted(have):
            if add_months(month, 1) <= cutoff:  # its last day is older than the retention
                connection.execute(text(f"DROP TABLE {partition_name(table, month)}"))
                done.dropped.append(partition_name(table, month))
    return done
