"""What the kind of click id costs PostgreSQL as `tracking_logs` grows.

    .venv/bin/python -m bench.event_ids                    # 0 and 2,000,000 rows first
    .venv/bin/python -m bench.event_ids --sizes 0,6000000  # slower: the fill takes minutes

For each table size and each kind of id (random UUIDv4, `str(uuid.uuid4())`; and the
time-ordered UUIDv7 the redirector makes, `services.redirector.event_ids.EventIds`):
a fresh database migrated like production, filled with that many rows of that kind by
COPY, then 100 transactions of one 800-row COPY each, as the logger writes them. Prints
the rows/s and the CPU the PostgreSQL backend used per row (from /proc), which is what
the unique index on `event_id` makes grow with the table when ids are random.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from bench.cpu import process_cpu
from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database
from services.logger.database import COLUMNS
from services.redirector.event_ids import EventIds
from shared.settings import DatabaseSettings

FILL_CHUNK = 100_000
BATCH = 800
BATCHES = 100


def rows(count: int, first: int, make_id: Callable[[], str]) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    return [(make_id(), f"cust-{i % 20}", f"camp-{i % 200}", f"rcpt-{i:08d}",
             "click.bench.test", f"https://shop{i % 20}.example/products/{i}?utm_source=email",
             "192.0.2.1", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0", "GET", now, False,
             None) for i in range(first, first + count)]


def backend_cpu_s(pid: int) -> float:
    found = process_cpu(pid)  # the PostgreSQL backend is on this machine
    if found is None:
        raise RuntimeError(f"no /proc entry for the PostgreSQL backend {pid}")
    return found[2]


async def measure(database: DatabaseSettings, size: int,
                  make_id: Callable[[], str]) -> tuple[float, float]:
    connection = await asyncpg.connect(dsn(database))
    try:
        for first in range(0, size, FILL_CHUNK):
            await connection.copy_records_to_table(
                "tracking_logs", records=rows(min(FILL_CHUNK, size - first), first, make_id),
                columns=COLUMNS)
        await connection.execute("VACUUM ANALYZE tracking_logs")
        batches = [rows(BATCH, size + n * BATCH, make_id) for n in range(BATCHES)]
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        cpu, started = backend_cpu_s(pid), time.perf_counter()
        for batch in batches:
            async with connection.transaction():
                await connection.copy_records_to_table("tracking_logs", records=batch,
                                                       columns=COLUMNS)
        elapsed = time.perf_counter() - started
        used = backend_cpu_s(pid) - cpu
    finally:
        await connection.close()
    count = BATCH * BATCHES
    return count / elapsed, used / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,2000000",
                        help="comma-separated numbers of rows already in the table")
    args = parser.parse_args()
    kinds: dict[str, Callable[[], str]] = {
        "UUIDv4 (random)": lambda: str(uuid.uuid4()), "UUIDv7 (EventIds)": EventIds().next}
    servers = Servers.from_environment()
    for size in (int(s) for s in args.sizes.split(",")):
        for kind, make_id in kinds.items():
            with fresh_database(servers, "event_ids") as database:
                rate, cpu_us = asyncio.run(measure(database, size, make_id))
            say(f"{size:>11,} rows, {kind:18s}: {rate:>8,.0f} rows/s, PostgreSQL "
                f"{cpu_us:5.1f} µs of CPU per row ({BATCHES} x {BATCH}-row COPY "
                "transactions)")


if __name__ == "__main__":
    main()
