"""tracking_logs partitioned by month (PostgreSQL); per-campaign click aggregates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

PostgreSQL: the unpartitioned table is renamed aside, a partitioned `tracking_logs`
(monthly RANGE partitions of `clicked_at` plus a DEFAULT one) takes its name, every row
is copied over with its id, then the old table is dropped: all in the migration's one
transaction, so it either happens whole or not at all. The loggers must be stopped for
it (docs/operations.md#the-click-store: how long, measured); clicks wait in the queue.

Both databases: `click_daily`, `click_recipients` and `click_reasons` are filled from the
existing rows, then kept by triggers on `tracking_logs` (statement triggers with
transition tables on PostgreSQL, row triggers on SQLite), so every insert (the logger's
COPY included) and every change of `bot`/`bot_reason` updates them in its own
transaction, and a row skipped as a duplicate counts nothing.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.db import click_partitions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = (("ix_tracking_logs_campaign_id_clicked_at", "campaign_id, clicked_at"),
            ("ix_tracking_logs_customer_id_clicked_at", "customer_id, clicked_at"))
_KEY = "campaign_id, customer_id, day, domain"

# PostgreSQL: one statement per aggregate, over a set of changes (new rows, or verdicts
# that changed). Rows are upserted in key order, so concurrent loggers lock in the same
# order. A recipient counts once a day: the daily `human_recipients` moves by how many
# recipient rows crossed zero human clicks ((total > 0) - (total before > 0)).
_APPLY = f"""
WITH changes AS ({{changes}}),
grouped AS (
    SELECT {_KEY}, recipient_id, sum(clicks) AS clicks, sum(human) AS human,
           min(clicked_at) AS first_click, max(clicked_at) AS last_click
    FROM changes GROUP BY {_KEY}, recipient_id),
recipients AS (
    INSERT INTO click_recipients AS r ({_KEY}, recipient_id, clicks, human_clicks)
    SELECT {_KEY}, recipient_id, clicks, human FROM grouped ORDER BY {_KEY}, recipient_id
    ON CONFLICT ({_KEY}, recipient_id) DO UPDATE
    SET clicks = r.clicks + excluded.clicks, human_clicks = r.human_clicks + excluded.human_clicks
    RETURNING {_KEY}, recipient_id, human_clicks AS total)
INSERT INTO click_daily AS d
    ({_KEY}, clicks, human_clicks, human_recipients, first_click, last_click)
SELECT g.campaign_id, g.customer_id, g.day, g.domain, sum(g.clicks), sum(g.human),
       sum((r.total > 0)::int - (r.total - g.human > 0)::int),
       min(g.first_click), max(g.last_click)
FROM grouped g JOIN recipients r USING ({_KEY}, recipient_id)
GROUP BY g.campaign_id, g.customer_id, g.day, g.domain
ORDER BY g.campaign_id, g.customer_id, g.day, g.domain
ON CONFLICT ({_KEY}) DO UPDATE SET
    clicks = d.clicks + excluded.clicks, human_clicks = d.human_clicks + excluded.human_clicks,
    human_recipients = d.human_recipients + excluded.human_recipients,
    first_click = least(d.first_click, excluded.first_click),
    last_click = greatest(d.last_click, excluded.last_click)"""
_APPLY_REASONS = """
INSERT INTO click_reasons AS c (campaign_id, customer_id, day, reason, clicks)
SELECT campaign_id, customer_id, day, reason, sum(clicks) FROM ({reasons}) s
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (campaign_id, customer_id, day, reason)
DO UPDATE SET clicks = c.clicks + excluded.clicks"""
_DAY = "(clicked_at AT TIME ZONE 'UTC')::date"
_ON_INSERT = (
    f"SELECT campaign_id, customer_id, {_DAY} AS day, domain, recipient_id, clicked_at, "
    "1 AS clicks, (NOT bot)::int AS human FROM new_rows",
    f"SELECT campaign_id, customer_id, {_DAY} AS day, coalesce(bot_reason, 'unknown') AS "
    "reason, 1 AS clicks FROM new_rows WHERE bot")
_PAIRS = "new_rows n JOIN old_rows o ON o.event_id = n.event_id AND o.clicked_at = n.clicked_at"
_ON_UPDATE = (
    "SELECT n.campaign_id, n.customer_id, (n.clicked_at AT TIME ZONE 'UTC')::date AS day, "
    "n.domain, n.recipient_id, NULL::timestamptz AS clicked_at, 0 AS clicks, "
    f"(NOT n.bot)::int - (NOT o.bot)::int AS human FROM {_PAIRS} WHERE n.bot <> o.bot",
    "SELECT o.campaign_id, o.customer_id, (o.clicked_at AT TIME ZONE 'UTC')::date AS day, "
    f"coalesce(o.bot_reason, 'unknown') AS reason, -1 AS clicks FROM {_PAIRS} "
    "WHERE o.bot AND (NOT n.bot OR n.bot_reason IS DISTINCT FROM o.bot_reason) UNION ALL "
    "SELECT n.campaign_id, n.customer_id, (n.clicked_at AT TIME ZONE 'UTC')::date AS day, "
    f"coalesce(n.bot_reason, 'unknown') AS reason, 1 AS clicks FROM {_PAIRS} "
    "WHERE n.bot AND (NOT o.bot OR n.bot_reason IS DISTINCT FROM o.bot_reason)")
_TRIGGERS = (("click_aggregates_on_insert", "INSERT", "NEW TABLE AS new_rows", _ON_INSERT),
             ("click_aggregates_on_update", "UPDATE",
              "OLD TABLE AS old_rows NEW TABLE AS new_rows", _ON_UPDATE))

# SQLite: row triggers, the same arithmetic one click at a time.


def _s_key(table: str) -> str:
    return (f"{table}.campaign_id = NEW.campaign_id AND {table}.customer_id = NEW.customer_id "
            f"AND {table}.day = date(NEW.clicked_at) AND {table}.domain = NEW.domain AND "
            f"{table}.recipient_id = NEW.recipient_id")


_S_KEY = _s_key("r")
_S_DELTA = "((NOT NEW.bot) - (NOT OLD.bot))"


def _s_reason(row: str, sign: int) -> str:
    return (f"INSERT INTO click_reasons (campaign_id, customer_id, day, reason, clicks) "
            f"SELECT {row}.campaign_id, {row}.customer_id, date({row}.clicked_at), "
            f"coalesce({row}.bot_reason, 'unknown'), {sign} WHERE {row}.bot "
            "ON CONFLICT (campaign_id, customer_id, day, reason) "
            "DO UPDATE SET clicks = clicks + excluded.clicks;")


_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER click_aggregates_on_insert AFTER INSERT ON tracking_logs BEGIN
    INSERT INTO click_daily ({_KEY}, clicks, human_clicks, human_recipients, first_click,
                             last_click)
    SELECT NEW.campaign_id, NEW.customer_id, date(NEW.clicked_at), NEW.domain, 1, NOT NEW.bot,
           NOT NEW.bot AND NOT EXISTS (SELECT 1 FROM click_recipients r
                                       WHERE {_S_KEY} AND r.human_clicks > 0),
           NEW.clicked_at, NEW.clicked_at WHERE true
    ON CONFLICT ({_KEY}) DO UPDATE SET clicks = clicks + 1,
        human_clicks = human_clicks + excluded.human_clicks,
        human_recipients = human_recipients + excluded.human_recipients,
        first_click = min(first_click, excluded.first_click),
        last_click = max(last_click, excluded.last_click);
    INSERT INTO click_recipients ({_KEY}, recipient_id, clicks, human_clicks)
    VALUES (NEW.campaign_id, NEW.customer_id, date(NEW.clicked_at), NEW.domain,
            NEW.recipient_id, 1, NOT NEW.bot)
    ON CONFLICT ({_KEY}, recipient_id) DO UPDATE SET clicks = clicks + 1,
        human_clicks = human_clicks + excluded.human_clicks;
    {_s_reason("NEW", 1)}
END""",
    f"""CREATE TRIGGER click_aggregates_on_update AFTER UPDATE OF bot, bot_reason
    ON tracking_logs WHEN OLD.bot IS NOT NEW.bot OR OLD.bot_reason IS NOT NEW.bot_reason BEGIN
    UPDATE click_daily SET human_clicks = human_clicks + {_S_DELTA},
        human_recipients = human_recipients + coalesce((
            SELECT (r.human_clicks + {_S_DELTA} > 0) - (r.human_clicks > 0)
            FROM click_recipients r WHERE {_S_KEY}), 0)
    WHERE campaign_id = NEW.campaign_id AND customer_id = NEW.customer_id
      AND day = date(NEW.clicked_at) AND domain = NEW.domain;
    UPDATE click_recipients SET human_clicks = human_clicks + {_S_DELTA}
    WHERE {_s_key("click_recipients")};
    {_s_reason("OLD", -1)}
    {_s_reason("NEW", 1)}
END""")


def _key() -> list[sa.Column[object]]:
    return [sa.Column("campaign_id", sa.String(256), nullable=False),
            sa.Column("customer_id", sa.String(256), nullable=False),
            sa.Column("day", sa.Date(), nullable=False)]


def _aggregate_tables(partitioned: bool) -> None:
    op.create_table(
        "click_daily", *_key(), sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("human_clicks", sa.BigInteger(), nullable=False),
        sa.Column("human_recipients", sa.BigInteger(), nullable=False),
        sa.Column("first_click", sa.DateTime(timezone=True)),
        sa.Column("last_click", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("campaign_id", "customer_id", "day", "domain",
                                name="pk_click_daily"))
    op.create_table(
        "click_recipients", *_key(),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("recipient_id", sa.String(256), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("human_clicks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "customer_id", "day", "domain", "recipient_id",
                                name="pk_click_recipients"),
        postgresql_partition_by="RANGE (day)" if partitioned else None)
    op.create_table(
        "click_reasons", *_key(),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "customer_id", "day", "reason",
                                name="pk_click_reasons"))


def _backfill(day: str) -> None:
    """The aggregates of the rows already stored, in one pass per table."""
    human = "CASE WHEN bot THEN 0 ELSE 1 END"
    op.execute(f"INSERT INTO click_recipients ({_KEY}, recipient_id, clicks, human_clicks) "
               f"SELECT campaign_id, customer_id, {day}, domain, recipient_id, count(*), "
               f"sum({human}) FROM tracking_logs GROUP BY 1, 2, 3, 4, 5")
    op.execute(f"INSERT INTO click_daily ({_KEY}, clicks, human_clicks, human_recipients, "
               f"first_click, last_click) SELECT campaign_id, customer_id, {day}, domain, "
               f"count(*), sum({human}), "
               "count(DISTINCT CASE WHEN bot THEN NULL ELSE recipient_id END), "
               "min(clicked_at), max(clicked_at) FROM tracking_logs GROUP BY 1, 2, 3, 4")
    op.execute("INSERT INTO click_reasons (campaign_id, customer_id, day, reason, clicks) "
               f"SELECT campaign_id, customer_id, {day}, coalesce(bot_reason, 'unknown'), "
               "count(*) FROM tracking_logs WHERE bot GROUP BY 1, 2, 3, 4")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("tracking_logs") as table:
            table.drop_constraint("uq_tracking_logs_event_id", type_="unique")
            table.create_unique_constraint("uq_tracking_logs_event_id_clicked_at",
                                           ["event_id", "clicked_at"])
        _aggregate_tables(partitioned=False)
        _backfill("date(clicked_at)")
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)
        return
    _aggregate_tables(partitioned=True)
    op.execute("CREATE TABLE click_recipients_default PARTITION OF click_recipients DEFAULT")
    _partition_tracking_logs()
    _backfill(_DAY)
    for name, event, transition, (changes, reasons) in _TRIGGERS:
        op.execute(f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN RETURN NULL; END IF;
    {_APPLY.format(changes=changes)};
    {_APPLY_REASONS.format(reasons=reasons)};
    RETURN NULL;
END $body$""")
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON tracking_logs "
                   f"REFERENCING {transition} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")


def _partition_tracking_logs() -> None:
    """Today's table aside, the partitioned one in its place with every row and id."""
    op.execute("LOCK TABLE tracking_logs IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE tracking_logs RENAME TO tracking_logs_unpartitioned")
    op.execute("ALTER TABLE tracking_logs_unpartitioned DROP CONSTRAINT pk_tracking_logs, "
               "DROP CONSTRAINT uq_tracking_logs_event_id")
    for index, _columns in _INDEXES:
        op.execute(f"DROP INDEX {index}")
    # LIKE: the same columns, in order, with their defaults (the id's sequence too),
    # whatever columns earlier revisions added.
    op.execute("CREATE TABLE tracking_logs (LIKE tracking_logs_unpartitioned "
               "INCLUDING DEFAULTS) PARTITION BY RANGE (clicked_at)")
    op.execute("ALTER SEQUENCE tracking_logs_id_seq OWNED BY tracking_logs.id")
    op.execute("CREATE TABLE tracking_logs_default PARTITION OF tracking_logs DEFAULT")
    connection = op.get_bind()
    months = set(connection.execute(sa.text(
        f"SELECT DISTINCT date_trunc('month', {_DAY})::date "
        "FROM tracking_logs_unpartitioned")).scalars())
    click_partitions.maintain(connection, today=datetime.now(UTC).date(),
                              retention_days=None, extra_months=months)
    # Rows first, then the indexes: one sorted build per partition beats row-by-row.
    op.execute("INSERT INTO tracking_logs SELECT * FROM tracking_logs_unpartitioned")
    op.execute("ALTER TABLE tracking_logs ADD CONSTRAINT uq_tracking_logs_event_id_clicked_at "
               "UNIQUE (event_id, clicked_at)")
    for index, columns in _INDEXES:
        op.execute(f"CREATE INDEX {index} ON tracking_logs ({columns})")
    op.execute("DROP TABLE tracking_logs_unpartitioned")


def downgrade() -> None:
    for name in ("click_reasons", "click_recipients", "click_daily"):
        op.drop_table(name)  # on PostgreSQL, with its partitions
    if op.get_bind().dialect.name == "sqlite":
        for name, _event, _transition, _sources in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        with op.batch_alter_table("tracking_logs") as table:
            table.drop_constraint("uq_tracking_logs_event_id_clicked_at", type_="unique")
            table.create_unique_constraint("uq_tracking_logs_event_id", ["event_id"])
        return
    for name, _event, _transition, _sources in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON tracking_logs")
        op.execute(f"DROP FUNCTION {name}()")
    op.execute("ALTER TABLE tracking_logs RENAME TO tracking_logs_partitioned")
    op.execute("ALTER TABLE tracking_logs_partitioned "
               "DROP CONSTRAINT uq_tracking_logs_event_id_clicked_at")
    for index, _columns in _INDEXES:
        op.execute(f"DROP INDEX {index}")
    op.execute("CREATE TABLE tracking_logs (LIKE tracking_logs_partitioned INCLUDING DEFAULTS, "
               "CONSTRAINT pk_tracking_logs PRIMARY KEY (id), "
               "CONSTRAINT uq_tracking_logs_event_id UNIQUE (event_id))")
    op.execute("ALTER SEQUENCE tracking_logs_id_seq OWNED BY tracking_logs.id")
    op.execute("INSERT INTO tracking_logs SELECT * FROM tracking_logs_partitioned "
               "ON CONFLICT (event_id) DO NOTHING")
    for index, columns in _INDEXES:
        op.execute(f"CREATE INDEX {index} ON tracking_logs ({columns})")
    op.execute("DROP TABLE tracking_logs_partitioned")
