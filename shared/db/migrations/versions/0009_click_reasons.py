"""tracking_logs: every reason of a click, and classifications waiting for their click;
click_reasons counts every reason, bot and human apart

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

`reasons` (comma-separated, strongest first) and `reclassified_at` are added nullable
without a default: no row is rewritten, however large (or partitioned) the table.

`click_reasons` keeps its `clicks` (bot clicks by `bot_reason`, `'unknown'` when none:
`trackctl clicks`' `bot_reasons`) and gains `bot_clicks` and `human_clicks`: the clicks
under each of their reasons (`reasons`, or `bot_reason` for rows older than it). The
triggers of 0007 are replaced by ones that also keep those, on insert and on every
change of `bot`, `bot_reason` or `reasons` (the logger's `apply_classification`). Rows
stored before this revision have no `reasons` and a `bot_reason` exactly when they are
bots, so their every-reason counts are their `clicks` (bar `'unknown'`): the backfill
reads the aggregate, never the raw clicks, and the migration takes no pause worth
measuring.
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# 0007's trigger SQL (the daily and recipient arithmetic is unchanged): its functions are
# replaced here, and put back on downgrade.
_v7 = importlib.import_module("shared.db.migrations.versions.0007_click_store")

_COUNTS = ("clicks", "bot_clicks", "human_clicks")
_UPSERT = f"""
INSERT INTO click_reasons AS c (campaign_id, customer_id, day, reason, {', '.join(_COUNTS)})
SELECT campaign_id, customer_id, day, reason, sum(clicks), sum(bot), sum(human)
FROM ({{reasons}}) s GROUP BY 1, 2, 3, 4
HAVING sum(clicks) <> 0 OR sum(bot) <> 0 OR sum(human) <> 0 ORDER BY 1, 2, 3, 4
ON CONFLICT (campaign_id, customer_id, day, reason) DO UPDATE SET
    {', '.join(f'{n} = c.{n} + excluded.{n}' for n in _COUNTS)}"""


def _contributions(row: str, sign: str, source: str, where: str) -> str:
    """PostgreSQL: what one row adds to click_reasons (`sign` 1) or takes back (-1): a
    `clicks` under its bot_reason if a bot, and a bot or human click under every reason."""
    day = f"({row}.clicked_at AT TIME ZONE 'UTC')::date AS day"
    key = f"{row}.campaign_id, {row}.customer_id, {day}"
    return (f"SELECT {key}, coalesce({row}.bot_reason, 'unknown') AS reason, {sign} AS clicks, "
            f"0 AS bot, 0 AS human FROM {source} WHERE {where} AND {row}.bot UNION ALL "
            f"SELECT {key}, r.reason, 0, {sign} * {row}.bot::int, {sign} * (NOT {row}.bot)::int "
            f"FROM {source} CROSS JOIN LATERAL unnest(string_to_array("
            f"coalesce({row}.reasons, {row}.bot_reason), ',')) AS r(reason) "
            f"WHERE {where} AND r.reason <> ''")


_CHANGED = ("(n.bot <> o.bot OR n.bot_reason IS DISTINCT FROM o.bot_reason "
            "OR n.reasons IS DISTINCT FROM o.reasons)")
_REASONS = {
    "click_aggregates_on_insert": _contributions("n", "1", "new_rows n", "true"),
    "click_aggregates_on_update": (_contributions("o", "-1", _v7._PAIRS, _CHANGED)
                                   + " UNION ALL "
                                   + _contributions("n", "1", _v7._PAIRS, _CHANGED)),
}

# SQLite: row triggers beside 0007's (which keep `clicks`); SQLite has no arrays and no
# WITH inside triggers, so a row's reasons become a JSON array for json_each.


def _s_reasons(row: str, sign: str) -> str:
    listed = f"coalesce({row}.reasons, {row}.bot_reason, '')"
    as_json = ("'[\"' || replace(replace(replace(" + listed
               + ", '\\', '\\\\'), '\"', '\\\"'), ',', '\",\"') || '\"]'")
    return (f"INSERT INTO click_reasons (campaign_id, customer_id, day, reason, clicks, "
            f"bot_clicks, human_clicks) SELECT {row}.campaign_id, {row}.customer_id, "
            f"date({row}.clicked_at), j.value, 0, {sign} * {row}.bot, {sign} * (NOT {row}.bot) "
            f"FROM json_each({as_json}) j WHERE j.value <> '' "
            "ON CONFLICT (campaign_id, customer_id, day, reason) DO UPDATE SET "
            "bot_clicks = bot_clicks + excluded.bot_clicks, "
            "human_clicks = human_clicks + excluded.human_clicks;")


_SQLITE_TRIGGERS = {
    "click_reasons_on_insert": "AFTER INSERT ON tracking_logs BEGIN "
                               f"{_s_reasons('NEW', '1')} END",
    "click_reasons_on_update": (
        "AFTER UPDATE OF bot, bot_reason, reasons ON tracking_logs WHEN OLD.bot IS NOT NEW.bot "
        "OR OLD.bot_reason IS NOT NEW.bot_reason OR OLD.reasons IS NOT NEW.reasons BEGIN "
        f"{_s_reasons('OLD', '-1')} {_s_reasons('NEW', '1')} END"),
}


def _replace_functions(reasons: dict[str, str], upsert: str) -> None:
    for name, _event, _transition, (changes, _old_reasons) in _v7._TRIGGERS:
        op.execute(f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql
AS $body$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN RETURN NULL; END IF;
    {_v7._APPLY.format(changes=changes)};
    {upsert.format(reasons=reasons[name])};
    RETURN NULL;
END $body$""")


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row, however large the table.
    op.add_column("tracking_logs", sa.Column("reasons", sa.Text()))
    op.add_column("tracking_logs", sa.Column("reclassified_at", sa.DateTime(timezone=True)))
    op.create_table(
        "click_classifications",
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("bot", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text()),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("event_id", name="pk_click_classifications"),
    )
    for name in ("bot_clicks", "human_clicks"):
        op.add_column("click_reasons", sa.Column(name, sa.BigInteger(), nullable=False,
                                                 server_default="0"))
    op.execute("UPDATE click_reasons SET bot_clicks = clicks WHERE reason <> 'unknown'")
    if op.get_bind().dialect.name == "sqlite":
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    _replace_functions(_REASONS, _UPSERT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    else:
        _replace_functions({name: reasons for name, _e, _t, (_c, reasons) in _v7._TRIGGERS},
                           _v7._APPLY_REASONS)
    # Plain DROP COLUMN (SQLite >= 3.35 too): a batch copy of the table would lose 0007's
    # triggers on SQLite.
    for table, column in (("click_reasons", "human_clicks"), ("click_reasons", "bot_clicks"),
                          ("tracking_logs", "reclassified_at"), ("tracking_logs", "reasons")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("click_classifications")
