"""`trackctl clicks --campaign K`: a campaign's clicks, people and bots apart.

Read from the per-day aggregates the database keeps as clicks are committed or
reclassified (`click_daily`, `click_recipients`, `click_reasons`: migrations 0007 and
0009), never from the raw clicks, so a report costs the same with a billion clicks
stored. Hence `--since`/`--until` select whole UTC days: from the day of `--since` up to
the day of `--until` (included when `--until` is not midnight). Bot clicks (link
scanners, previews, HEAD requests: docs/classification.md) are shown, never mixed in,
and each reason's bot and human clicks (a click counts under each of its reasons).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import ClickDaily, ClickReason, ClickRecipient
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

D = ClickDaily.__table__.c
R = ClickRecipient.__table__.c
C = ClickReason.__table__.c
DOCTOR_CAMPAIGN = "trackctl-doctor"


def day_range(since: datetime | None, until: datetime | None) -> tuple[date | None, date | None]:
    """The whole UTC days a report covers: first day, and the day after the last."""
    first = as_utc(since).date() if since is not None else None
    end = None
    if until is not None:
        until = as_utc(until)
        end = until.date() + timedelta(days=0 if until.time() == time(0) else 1)
    return first, end


def _recipients_by(domain: Any, where: ColumnElement[bool]) -> Any:
    """Distinct recipients (with a human click; at all), per domain or (None) overall,
    counted by grouping (a hash) rather than count(DISTINCT) (a sort): twice as fast."""
    keys = [R.recipient_id] if domain is None else [domain, R.recipient_id]
    each = (select(*keys, (func.max(R.human_clicks) > 0).label("human"))
            .where(where).group_by(*keys).subquery())
    counts = (func.count().filter(each.c.human).label("human_recipients"),
              func.count().label("recipients"))
    if domain is None:
        return select(*counts)
    return select(each.c.domain, *counts).group_by(each.c.domain)


def _after(day: date | None) -> date | None:
    return None if day is None else day + timedelta(days=1)


def _where(columns: Any, campaign: str, customer: str | None, first: date | None,
           end: date | None) -> ColumnElement[bool]:
    conditions = [columns.campaign_id == campaign]
    if customer is not None:
        conditions.append(columns.customer_id == customer)
    if first is not None:
        conditions.append(columns.day >= first)
    if end is not None:
        conditions.append(columns.day < end)
    return and_(*conditions)


async def campaign_report(engine: AsyncEngine, *, campaign: str, customer: str | None,
                          since: datetime | None, until: datetime | None) -> dict[str, Any]:
    first, end = day_range(since, until)
    daily = _where(D, campaign, customer, first, end)
    totals_query = select(
        func.coalesce(func.sum(D.clicks), 0).label("clicks"),
        func.coalesce(func.sum(D.human_clicks), 0).label("human"),
        func.min(D.first_click).label("first_click"),
        func.max(D.last_click).label("last_click"),
        func.count(distinct(D.customer_id)).label("customers"),
        func.min(D.day).label("first_day"), func.max(D.day).label("last_day"),
    ).where(daily)
    domains_query = (select(
        D.domain, func.sum(D.human_clicks).label("human"),
        func.sum(D.clicks - D.human_clicks).label("bot"),
        func.max(D.last_click).label("last_click"))
        .where(daily).group_by(D.domain).order_by(func.sum(D.clicks).desc(), D.domain))
    # One row per reason: its bot clicks by first reason (`bot_reasons`) and its bot and
    # human clicks under every reason (`reasons`).
    reasons_query = (select(C.reason, func.sum(C.clicks).label("clicks"),
                            func.sum(C.bot_clicks).label("bot"),
                            func.sum(C.human_clicks).label("human"))
                     .where(_where(C, campaign, customer, first, end)).group_by(C.reason))
    async with engine.connect() as connection:
        totals = dict((await connection.execute(totals_query)).one()._mapping)
        # The days the campaign has clicks on bound the recipient sets' scan, so only
        # their months' partitions are read (not a year of them).
        recipients = _where(R, campaign, customer, totals.pop("first_day"),
                            _after(totals.pop("last_day")))
        per_domain = {r.domain: r for r in (await connection.execute(
            _recipients_by(R.domain, recipients))).all()}
        if len(per_domain) > 1:  # a recipient may have clicked on several: count again
            per_domain[None] = (await connection.execute(
                _recipients_by(None, recipients))).one()
        everyone = per_domain.get(None) or next(iter(per_domain.values()), None)
        totals["human_recipients"] = everyone.human_recipients if everyone else 0
        totals["recipients"] = everyone.recipients if everyone else 0
        domains = [{**r._mapping, "human_recipients": per_domain[r.domain].human_recipients
                    if r.domain in per_domain else 0}
                   for r in (await connection.execute(domains_query)).all()]
        by_reason = (await connection.execute(reasons_query)).all()
    clicks, human = int(totals.pop("clicks")), int(totals.pop("human"))
    return {
        "campaign_id": campaign, "customer_id": customer, "since": since, "until": until,
        "first_day": first, "end_day": end, "clicks": clicks, "human": human,
        "bot": clicks - human, "human_recipients": int(totals["human_recipients"]),
        "recipients": int(totals["recipients"]), "customers": int(totals["customers"]),
        "first_click": as_utc(totals["first_click"]), "last_click": as_utc(totals["last_click"]),
        "domains": [{"domain": d["domain"], "human": int(d["human"]), "bot": int(d["bot"]),
                     "human_recipients": int(d["human_recipients"]),
                     "last_click": as_utc(d["last_click"])} for d in domains],
        "reasons": [{"reason": r.reason, "bot": int(r.bot), "human": int(r.human)}
                    for r in sorted(by_reason, key=lambda r: (-r.bot - r.human, r.reason))
                    if r.bot or r.human],
        "bot_reasons": [{"reason": r.reason, "clicks": int(r.clicks)}
                        for r in sorted(by_reason, key=lambda r: (-r.clicks, r.reason))
                        if r.clicks > 0],
    }


def render(report: Mapping[str, Any]) -> str:
    scope = f"campaign {report['campaign_id']}"
    if report["customer_id"] is not None:
        scope += f" of customer {report['customer_id']}"
    if report["first_day"] is not None:
        scope += f", from {report['first_day']:%Y-%m-%d}"
    if report["end_day"] is not None:
        scope += f", up to {report['end_day'] - timedelta(days=1):%Y-%m-%d} (UTC days)"
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
