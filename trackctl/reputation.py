"""`trackctl reputation`: what the DNS blocklists list now, as the verifier's watch found it.

Reads `domain_reputation` (written by the verifier's reputation watch, docs/reputation.md)
with each row's customer from `tracking_domains`. `domain show` and `doctor` show one
domain's rows through `fetch_reputation` and `describe`. `--destinations`: the
destinations customers' links lead to that a list has listed (trackctl/destinations.py).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import DomainReputation, TrackingDomain
from trackctl import connections, destinations
from trackctl.output import OK, as_utc, emit_json, fmt_relative, jsonable, table, utc_now

R = DomainReputation.__table__.c
D = TrackingDomain.__table__.c
LISTED = "listed"
COLUMNS = (R.name, D.customer_id, R.blocklist, R.zone, R.status, R.categories, R.raw,
           R.fix_url, R.first_listed_at, R.last_checked_at, R.last_changed_at,
           R.next_check_at)


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    found = jsonable(dict(row))
    found["categories"] = [c for c in (row["categories"] or "").split(",") if c]
    found["platform_host"] = row["customer_id"] is None
    return found


async def fetch_reputation(engine: AsyncEngine, name: str | None = None, *,
                           listed_only: bool = False) -> list[dict[str, Any]]:
    """Rows of `domain_reputation` (one name's, or all), with their customer (None for
    the platform host), ordered by name and list."""
    query = (select(*COLUMNS).select_from(DomainReputation.__table__.outerjoin(
        TrackingDomain.__table__, D.name == R.name)).order_by(R.name, R.blocklist))
    if name is not None:
        query = query.where(R.name == name)
    if listed_only:
        query = query.where(R.status == LISTED)
    async with engine.connect() as connection:
        return [_document(row._asdict()) for row in (await connection.execute(query)).all()]


async def fetch_summary(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Per list: rows by status, and the latest lookup."""
    query = (select(R.blocklist, R.zone, R.status, func.count(), func.max(R.last_checked_at))
             .group_by(R.blocklist, R.zone, R.status).order_by(R.blocklist))
    summary: dict[str, dict[str, Any]] = {}
    async with engine.connect() as connection:
        for kind, zone, status, count, latest in (await connection.execute(query)).all():
            entry = summary.setdefault(kind, {"zone": zone, "watched": 0, "listed": 0,
                                              "not_listed": 0, "unchecked": 0,
                                              "last_checked_at": None})
            entry[status] = int(count)
            entry["watched"] += int(count)
            latest = as_utc(latest)
            if latest is not None and (entry["last_checked_at"] is None
                                       or latest > entry["last_checked_at"]):
                entry["last_checked_at"] = latest
    return summary


def describe(row: Mapping[str, Any], now: datetime) -> str:
    """One row in a line: `dbl (dbl.spamhaus.org): listed (phishing) since ...`."""
    where = f"{row['blocklist']} ({row['zone']})"
    checked = (f"checked {fmt_relative(row['last_checked_at'], now)}"
               if row["last_checked_at"] else "not looked up yet")
    if row["status"] == LISTED:
        categories = ", ".join(row["categories"]) or "no category given"
        return (f"{where}: LISTED ({categories}) since {row['first_listed_at']}, {checked}; "
                f"why and removal: {row['fix_url']}")
    if row["status"] == "not_listed":
        return f"{where}: not listed, {checked}"
    return f"{where}: {checked}"


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.destinations:
        return await destinations.run(args, environ)
    async with connections.database(environ) as engine:
        listed = await fetch_reputation(engine, listed_only=True)
        summary = await fetch_summary(engine)
    if args.json:
        emit_json({"listed": listed, "lists": summary})
        return OK
    print(render(listed, summary, utc_now()))
    return OK


def render(listed: list[dict[str, Any]], summary: Mapping[str, Mapping[str, Any]],
           now: datetime) -> str:
    if not summary:
        return ("nothing looked up yet: the verifier's reputation watch has no rows (it is "
                "off when REPUTATION_LISTS is empty; docs/reputation.md)")
    lines = [table(("list", "zone", "watched", "listed", "not listed", "not looked up yet",
                    "last lookup"),
                   [(kind, entry["zone"], entry["watched"], entry["listed"],
                     entry["not_listed"], entry["unchecked"], entry["last_checked_at"])
                    for kind, entry in summary.items()])]
    if not listed:
        lines.append("\nnothing is listed now")
        return "\n".join(lines)
    lines.append("\nlisted now:")
    lines.append(table(
        ("domain", "customer", "list", "categories", "since", "last checked", "why and removal"),
        [(row["name"], row["customer_id"] or "(platform host)", row["blocklist"],
          ", ".join(row["categories"]), row["first_listed_at"],
          fmt_relative(row["last_checked_at"], now), row["fix_url"]) for row in listed]))
    per_list = Counter(row["blocklist"] for row in listed)
    lines.append("\n" + ", ".join(f"{count} on {kind}" for kind, count in per_list.items()))
    return "\n".join(lines)
