"""`trackctl clicks --campaign K`: a campaign's clicks, people and bots apart.

Everything is counted in the database (one aggregate query per table), so a
campaign with millions of clicks costs a few index scans, not a download.
Bot clicks (link scanners, previews, HEAD requests: docs/classification.md) are
stored with `bot = true` and all their `reasons`; they are shown, never mixed in.
Reasons are counted per distinct combination in the database (a handful per
campaign), then per reason here: a click counts under each of its reasons.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import TrackingLog
from trackctl import connections
from trackctl.output import (
    OK,
    USAGE,
    CliError,
    as_utc,
    emit_json,
    fields,
    parse_since,
    table,
    utc_now,
)

L = TrackingLog.__table__.c
DOCTOR_CAMPAIGN = "trackctl-doctor"


def _human() -> Any:
    return case((L.bot.is_(False), 1), else_=0)


def _botc() -> Any:
    return case((L.bot.is_(True), 1), else_=0)


async def campaign_report(engine: AsyncEngine, *, campaign: str, customer: str | None,
                          since: datetime | None, until: datetime | None) -> dict[str, Any]:
    conditions = [L.campaign_id == campaign]
    if customer is not None:
        conditions.append(L.customer_id == customer)
    if since is not None:
        conditions.append(L.clicked_at >= since)
    if until is not None:
        conditions.append(L.clicked_at < until)
    where = and_(*conditions)
    human_recipient = case((L.bot.is_(False), L.recipient_id), else_=None)
    totals_query = select(
        func.count().label("clicks"),
        func.coalesce(func.sum(_human()), 0).label("human"),
        func.coalesce(func.sum(_botc()), 0).label("bot"),
        func.count(distinct(human_recipient)).label("human_recipients"),
        func.count(distinct(L.recipient_id)).label("recipients"),
        func.min(L.clicked_at).label("first_click"),
        func.max(L.clicked_at).label("last_click"),
        func.count(distinct(L.customer_id)).label("customers"),
    ).where(where)
    domains_query = (select(
        L.domain, func.coalesce(func.sum(_human()), 0).label("human"),
        func.coalesce(func.sum(_botc()), 0).label("bot"),
        func.count(distinct(human_recipient)).label("human_recipients"),
        func.max(L.clicked_at).label("last_click"))
        .where(where).group_by(L.domain).order_by(func.count().desc(), L.domain))
    reasons_query = (select(L.bot_reason.label("reason"), func.count().label("clicks"))
                     .where(where, L.bot.is_(True)).group_by(L.bot_reason)
                     .order_by(func.count().desc(), L.bot_reason))
    # Rows older than `reasons` have at most their bot_reason.
    every_reason = func.coalesce(L.reasons, L.bot_reason)
    combinations_query = (select(every_reason.label("reasons"), L.bot,
                                 func.count().label("clicks"))
                          .where(where, every_reason.is_not(None))
                          .group_by(every_reason, L.bot))
    async with engine.connect() as connection:
        totals = dict((await connection.execute(totals_query)).one()._mapping)
        domains = [dict(r._mapping) for r in (await connection.execute(domains_query)).all()]
        reasons = [{"reason": r.reason or "unknown", "clicks": r.clicks}
                   for r in (await connection.execute(reasons_query)).all()]
        combinations = (await connection.execute(combinations_query)).all()
    for key in ("first_click", "last_click"):
        totals[key] = as_utc(totals[key])
    for row in domains:
        row["last_click"] = as_utc(row["last_click"])
    return {
        "campaign_id": campaign, "customer_id": customer, "since": since, "until": until,
        **{key: int(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
           else value for key, value in totals.items()},
        "domains": [{**row, "human": int(row["human"]), "bot": int(row["bot"])}
                    for row in domains],
        "bot_reasons": reasons,
        "reasons": by_reason((r.reasons, r.bot, r.clicks) for r in combinations),
    }


def by_reason(combinations: Iterable[tuple[str, bool, int]]) -> list[dict[str, Any]]:
    """Each reason's bot and human clicks (a weak reason alone leaves a click human)."""
    counts: dict[str, dict[str, int]] = {}
    for reasons, bot, clicks in combinations:
        for reason in filter(None, reasons.split(",")):
            entry = counts.setdefault(reason, {"bot": 0, "human": 0})
            entry["bot" if bot else "human"] += int(clicks)
    return [{"reason": reason, **entry} for reason, entry in sorted(
        counts.items(), key=lambda item: (-item[1]["bot"] - item[1]["human"], item[0]))]


def render(report: Mapping[str, Any]) -> str:
    scope = f"campaign {report['campaign_id']}"
    if report["customer_id"] is not None:
        scope += f" of customer {report['customer_id']}"
    if report["since"] is not None:
        scope += f", since {as_utc(report['since']):%Y-%m-%d %H:%M:%SZ}"
    if report["until"] is not None:
        scope += f", until {as_utc(report['until']):%Y-%m-%d %H:%M:%SZ}"
    if not report["clicks"]:
        return f"no clicks for {scope}"
    pairs: list[tuple[str, object]] = [
        ("clicks", f"{report['clicks']} ({report['human']} human, {report['bot']} bot)"),
        ("unique recipients", f"{report['human_recipients']} human "
                              f"({report['recipients']} counting bot clicks)"),
        ("first click", report["first_click"]),
        ("last click", report["last_click"]),
    ]
    if report["customer_id"] is None and report["customers"] > 1:
        pairs.append(("customers", f"{report['customers']} (campaign ids are per customer: "
                                   "add --customer)"))
    text = f"{scope}\n\n" + fields(pairs)
    text += "\n\n" + table(
        ("domain", "human", "bot", "human recipients", "last click"),
        [(d["domain"], d["human"], d["bot"], d["human_recipients"], d["last_click"])
         for d in report["domains"]], right=("human", "bot", "human recipients"))
    if report["reasons"]:
        text += "\n\n" + table(("reason", "bot", "human"),
                               [(r["reason"], r["bot"], r["human"]) for r in report["reasons"]],
                               right=("bot", "human"))
    return text


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    now = utc_now()
    since = parse_since(args.since, now) if args.since else None
    until = parse_since(args.until, now) if args.until else None
    if since is not None and until is not None and until <= since:
        raise CliError("--until must be later than --since", USAGE)
    if not args.campaign.strip():
        raise CliError("--campaign must not be empty", USAGE)
    async with connections.database(environ) as engine:
        report = await campaign_report(engine, campaign=args.campaign, customer=args.customer,
                                       since=since, until=until)
    if args.json:
        emit_json(report)
    else:
        print(render(report))
    return OK
