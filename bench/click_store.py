"""The click store as it grows: today's one table beside the monthly partitions with their
aggregates (migration 0007), filled side by side, measured at each size in the same run.

    .venv/bin/python -m bench.click_store                              # 1M, 4M rows
    .venv/bin/python -m bench.click_store --sizes 0,5000000,20000000   # the issue's 20M: long
    .venv/bin/python -m bench.click_store --migrate 1000000,4000000    # migration 0007's time

Four fresh databases: `today` (migrated to revision 0006: one table, reports scan it) and
`partitioned` (head), each once to fill and once kept empty. At each size, in 3 rounds,
each design in turn:
- logger rate: the logger's own ClickStore writing 5000-row batches of new clicks (time-
  ordered ids, now, 200 campaigns new to each run) for `--seconds`, rows per second of
  store time,
  on the empty twin (emptied again first) and then on the filled one: the ratio of the
  two medians is the figure, both taken under the same load of the shared machine;
- campaign report: `trackctl clicks` for one campaign of the filled store (today: the
  raw-table queries it ran before 0007; partitioned: `trackctl.clicks.campaign_report`
  on the aggregates), median of 15 after one warm-up;
- disk: clicks and aggregates, total relation sizes (indexes included), per million rows.
The filled stores grow to each size by INSERT ... SELECT generate_series in
500,000-row statements (not through the services): each step's clicks spread in time
order over the last 360 days (so every month, the current one too, holds its share at
every size), 1 in 7 a bot, campaigns of 10,000 clicks (at the largest size) on 5,000
recipients.

`--migrate N,...` instead times `trackctl db upgrade` from 0006 to 0007 (the pause the
loggers take) on a one-table store of N rows filled the same way, and checks the count.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database
from services.logger.database import ClickStore, Row, click_store
from services.redirector.event_ids import EventIds
from shared.db.click_partitions import maintain, month_start
from shared.db.engine import create_engine
from shared.db.migrate import downgrade, upgrade
from shared.settings import DatabaseSettings
from trackctl.clicks import campaign_report

CHUNK = 500_000
BATCH = 5000
SPAN_DAYS = 360
PER_CAMPAIGN = 10_000
ROUNDS = 3
_RUNS = itertools.count()
REPORT_RUNS = 15

_FILL = """
INSERT INTO tracking_logs (event_id, customer_id, campaign_id, recipient_id, domain, url, ip,
                           user_agent, method, clicked_at, bot, bot_reason)
SELECT lpad(to_hex(ms), 12, '0') || '-7000-8000-' || lpad(to_hex(j), 12, '0'),
       'cust-' || (c % 200), 'camp-' || c, 'rcpt-' || ((j * 31) % 5000), 'click.bench.test',
       'https://shop.example/products/' || (j % 1000) || '?utm_source=email', '192.0.2.1',
       'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0', 'GET', to_timestamp(ms / 1000.0),
       j % 7 = 0, CASE WHEN j % 7 = 0 THEN 'user-agent:bench' END
FROM (SELECT $1::bigint + r AS j, floor(r::float8 / $2 * $3)::bigint AS c,
             $4::bigint + (r::float8 / $2 * $5)::bigint AS ms
      FROM generate_series($6::bigint, $7::bigint) r) t
"""
# What `trackctl clicks` asked of the one table before 0007 (its three queries).
_TODAY_REPORT = (
    "SELECT count(*), count(*) FILTER (WHERE NOT bot), count(*) FILTER (WHERE bot), "
    "count(DISTINCT CASE WHEN NOT bot THEN recipient_id END), count(DISTINCT recipient_id), "
    "min(clicked_at), max(clicked_at), count(DISTINCT customer_id) FROM tracking_logs "
    "WHERE campaign_id = $1 AND customer_id = $2",
    "SELECT domain, count(*) FILTER (WHERE NOT bot), count(*) FILTER (WHERE bot), "
    "count(DISTINCT CASE WHEN NOT bot THEN recipient_id END), max(clicked_at) "
    "FROM tracking_logs WHERE campaign_id = $1 AND customer_id = $2 GROUP BY domain",
    "SELECT bot_reason, count(*) FROM tracking_logs WHERE campaign_id = $1 "
    "AND customer_id = $2 AND bot GROUP BY bot_reason",
)
_SIZES = {
    "today": ("SELECT pg_total_relation_size('tracking_logs')", "SELECT 0"),
    "partitioned": (
        "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('tracking_logs')",
        "SELECT pg_total_relation_size('click_daily') + pg_total_relation_size('click_reasons')"
        " + (SELECT sum(pg_total_relation_size(relid)) "
        "FROM pg_partition_tree('click_recipients'))"),
}


@dataclass
class Store:
    database: DatabaseSettings
    engine: AsyncEngine
    store: ClickStore
    rows: int = 0


@dataclass
class Design:
    name: str
    filled: Store
    empty: Store


@dataclass
class Figures:
    size: int
    design: str
    empty_rate: float
    rate: float
    report_ms: float
    report_clicks: int
    clicks_mb_per_m: float
    aggregates_mb_per_m: float


def live_rows(ids: EventIds, count: int, offset: int, run: int) -> list[Row]:
    """New clicks on 200 campaigns of their own per measurement (`run`), so no measurement
    meets the recipients of an earlier one (the empty twin never would)."""
    now = datetime.now(UTC)
    return [(ids.next(), f"cust-{n % 200}", f"live-{run}-{n % 200}",
             f"rcpt-{(n * 7919) % 50_000}",
             "click.bench.test", f"https://shop.example/products/{n % 1000}?utm_source=email",
             "192.0.2.1", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0", "GET", now,
             n % 7 == 0, "user-agent:bench" if n % 7 == 0 else None,
             "user-agent:bench" if n % 7 == 0 else None)
            for n in range(offset, offset + count)]


async def logger_rate(target: Store, seconds: float) -> float:
    """Rows per second of ClickStore.insert time (building the rows is not counted)."""
    ids, spent, written, run = EventIds(), 0.0, 0, next(_RUNS)
    while spent < seconds:
        batch = live_rows(ids, BATCH, written, run)
        started = time.perf_counter()
        written += await target.store.insert(batch)
        spent += time.perf_counter() - started
    target.rows += written
    return written / spent


async def emptied(target: Store) -> Store:
    connection = await asyncpg.connect(dsn(target.database))
    try:
        tables = [row[0] for row in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename IN ('tracking_logs', "
            "'click_daily', 'click_recipients', 'click_reasons')")]
        await connection.execute(f"TRUNCATE {', '.join(tables)}")
    finally:
        await connection.close()
    target.rows = 0
    return target


async def timed(run: Callable[[], Awaitable[object]]) -> float:
    await run()  # warm-up
    times = []
    for _ in range(REPORT_RUNS):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def report_ms(design: Design, campaign: int) -> tuple[float, int]:
    name, customer = f"camp-{campaign}", f"cust-{campaign % 200}"
    if design.name == "partitioned":
        async def run_new() -> object:
            return await campaign_report(design.filled.engine, campaign=name, customer=customer,
                                         since=None, until=None)
        report = await run_new()
        assert isinstance(report, dict)
        return await timed(run_new), int(report["clicks"])
    connection = await asyncpg.connect(dsn(design.filled.database))
    try:
        async def run_today() -> object:
            return [await connection.fetch(query, name, customer) for query in _TODAY_REPORT]
        clicks = (await connection.fetchrow(_TODAY_REPORT[0], name, customer) or [0])[0]
        return await timed(run_today), int(clicks)
    finally:
        await connection.close()


async def disk_mb_per_million(design: Design) -> tuple[float, float]:
    clicks_sql, aggregates_sql = _SIZES[design.name]
    connection = await asyncpg.connect(dsn(design.filled.database))
    try:
        await connection.execute("VACUUM ANALYZE")
        clicks, aggregates = (await connection.fetchval(clicks_sql),
                              await connection.fetchval(aggregates_sql))
    finally:
        await connection.close()
    per_m = 1e6 / max(design.filled.rows, 1) / 2**20
    return float(clicks) * per_m, float(aggregates) * per_m


async def fill(target: Store, first: int, last: int, total: int) -> None:
    """Rows [first, last) of a `total`-row store, in CHUNK-row statements, spread in time
    order over the last SPAN_DAYS days."""
    start = datetime.now(UTC) - timedelta(days=SPAN_DAYS)
    start_ms = int(start.timestamp() * 1000)
    count, campaigns = last - first, max(total // PER_CAMPAIGN, 1)
    connection = await asyncpg.connect(dsn(target.database))
    try:
        if await connection.fetchval("SELECT relkind::text FROM pg_class "
                                     "WHERE relname = 'tracking_logs'") == "p":
            # The year's months, as the logger would have made them one by one.
            months = {month_start(start.date() + timedelta(days=n))
                      for n in range(SPAN_DAYS + 1)}
            async with target.engine.begin() as sa_connection:
                await sa_connection.run_sync(lambda sync: maintain(
                    sync, today=datetime.now(UTC).date(), retention_days=None,
                    extra_months=months))
        for low in range(0, count, CHUNK):
            high = min(low + CHUNK, count) - 1
            await connection.execute(_FILL, first, count, campaigns, start_ms,
                                     SPAN_DAYS * 86_400_000, low, high, timeout=3600)
        target.rows += count
        await connection.execute("VACUUM ANALYZE", timeout=3600)
    finally:
        await connection.close()


async def measure(designs: list[Design], sizes: list[int], seconds: float) -> list[Figures]:
    total = max(max(sizes), PER_CAMPAIGN)
    found: list[Figures] = []
    filled = 0
    for size in sizes:
        for design in designs:
            if size > filled:
                started = time.monotonic()
                await fill(design.filled, filled, size, total)
                say(f"  {design.name}: filled to {size:,} rows in "
                    f"{time.monotonic() - started:.0f} s")
        filled = max(filled, size)
        rates: dict[tuple[str, str], list[float]] = {}
        for _round in range(ROUNDS):
            for design in designs:
                rates.setdefault((design.name, "empty"), []).append(
                    await logger_rate(await emptied(design.empty), seconds))
                rates.setdefault((design.name, "filled"), []).append(
                    await logger_rate(design.filled, seconds))
        for design in designs:
            empty, full = (statistics.median(rates[design.name, state])
                           for state in ("empty", "filled"))
            ms, clicks = await report_ms(design, total // PER_CAMPAIGN // 2)
            clicks_mb, aggregates_mb = await disk_mb_per_million(design)
            found.append(Figures(design.filled.rows, design.name, empty, full, ms, clicks,
                                 clicks_mb, aggregates_mb))
            say(f"  {design.filled.rows:>11,} {design.name:<12} logger {full:9,.0f} rows/s "
                f"({full / empty:.2f} of {empty:,.0f} on an empty table), report "
                f"{ms:7.1f} ms ({clicks:,} clicks), disk {clicks_mb:5.0f} + "
                f"{aggregates_mb:4.0f} MB per million")
    return found


def table(found: list[Figures]) -> str:
    lines = ["| rows stored | design | logger rows/s, filled / empty twin | ratio | "
             "campaign report (its clicks) | disk per million clicks: clicks + aggregates |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for f in found:
        lines.append(f"| {f.size:,} | {f.design} | {f.rate:,.0f} / {f.empty_rate:,.0f} | "
                     f"{f.rate / f.empty_rate:.2f} | {f.report_ms:.1f} ms "
                     f"({f.report_clicks:,}) | {f.clicks_mb_per_m:.0f} + "
                     f"{f.aggregates_mb_per_m:.0f} MB |")
    return "\n".join(lines)


async def open_store(name: str, database: DatabaseSettings, *, for_logger: bool = True) -> Store:
    if name == "today":
        await downgrade(database, "0006")
    engine = create_engine(database, pool_size=2, pre_ping=False)
    if name == "today" and for_logger:
        # Today's one table with the (nullable) column today's logger writes (0009).
        async with engine.begin() as connection:
            await connection.exec_driver_sql("ALTER TABLE tracking_logs ADD COLUMN reasons text")
    return Store(database, engine, click_store(engine))


async def migration_s(database: DatabaseSettings, rows: int) -> float:
    """Seconds to migrate a store of `rows` clicks at 0006 to head; every row kept."""
    target = await open_store("today", database, for_logger=False)
    try:
        await fill(target, 0, rows, rows)
    finally:
        await target.engine.dispose()
    started = time.monotonic()
    await upgrade(database)
    elapsed = time.monotonic() - started
    connection = await asyncpg.connect(dsn(database))
    try:
        stored = await connection.fetchval("SELECT count(*) FROM tracking_logs")
    finally:
        await connection.close()
    if stored != rows:
        raise SystemExit(f"migration lost rows: {rows:,} before, {stored:,} after")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,4000000",
                        help="rows stored at each measurement, ascending (default 1M,4M)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="store time per logger-rate measurement (default 4)")
    parser.add_argument("--migrate", help="instead: time migration 0007 on these row counts")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    servers = Servers.from_environment()
    servers.preflight()
    if args.migrate:
        print("| rows | migration 0007 | rows/s |\n| ---: | ---: | ---: |")
        for rows in (int(size) for size in args.migrate.split(",")):
            with fresh_database(servers, "migrate") as database:
                seconds = asyncio.run(migration_s(database, rows))
            print(f"| {rows:,} | {seconds:.1f} s | {rows / seconds:,.0f} |", flush=True)
        return
    with fresh_database(servers, "today") as today, \
            fresh_database(servers, "today0") as today_empty, \
            fresh_database(servers, "partitioned") as partitioned, \
            fresh_database(servers, "partitioned0") as partitioned_empty:
        async def run() -> list[Figures]:
            designs = [
                Design("today", await open_store("today", today),
                       await open_store("today", today_empty)),
                Design("partitioned", await open_store("partitioned", partitioned),
                       await open_store("partitioned", partitioned_empty))]
            try:
                return await measure(designs, sizes, args.seconds)
            finally:
                for design in designs:
                    await design.filled.engine.dispose()
                    await design.empty.engine.dispose()

        found = asyncio.run(run())
    print(table(found))


if __name__ == "__main__":
    main()
