"""The reputation watch's full round: N active tracking domains on 3 lists, against a DNS
server that answers every question after a fixed latency.

    .venv/bin/python -m bench.reputation [--domains 10000] [--latency-ms 50]
                                         [--concurrency 32] [--shared 2000]

One pass of the real watch (services/verifier/reputation: store on a scratch PostgreSQL
database, engine, dnspython adapter) over every row, all due at once, as after a fresh
start: controls, lookups, verdicts written. `--shared` of the domains sit under 400
registered domains that several customers share (`t<i>.hosted-<k>.bench`), the rest each
under its own, so SURBL and URIBL are asked fewer questions than DBL.

Figures, measured in the same run:
- the round against the latency, and the same round against a DNS server that answers at
  once (the baseline: what the database, the decoding and Python cost without the wait);
- the floor the concurrency allows: questions / concurrency * latency;
- questions sent per list against the deduplicated count (distinct query names + the 2
  controls), and the most questions in flight at once.

Reads `TEST_DATABASE_URL` (an admin URL: a scratch database is created and dropped),
defaulting to the local PostgreSQL. The DNS server (demo/dns.py) runs in this process.
Exits non-zero when a round does not fit the 30-minute schedule, asks more questions than
the deduplicated count, or exceeds the concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.progress import say
from bench.scratch import Servers, fresh_database
from demo.blocklists import ListZones
from demo.databases import execute, fetch
from demo.dns import DnsServer
from services.verifier.reputation.blocklists import parse_lists
from services.verifier.reputation.dnspython import DnspythonListResolver, RawAnswer
from services.verifier.reputation.engine import ReputationEngine
from services.verifier.reputation.store import ReputationStore
from services.verifier.reputation.watch import ReputationWatch
from services.verifier.settings import ReputationPolicy
from shared.db.engine import create_engine
from shared.domains import registered_domain
from shared.events import EventData
from shared.settings import DatabaseSettings

HOST = "click.platform.bench"
INTERVAL_S = 1800.0
SHARED_REGISTERED = 400


def domain_names(count: int, shared: int) -> list[str]:
    """`count` tracking domains, `shared` of them under 400 shared registered domains."""
    own = [f"track.cust{i}.bench" for i in range(count - shared)]
    return own + [f"t{i}.hosted-{i % SHARED_REGISTERED}.bench" for i in range(shared)]


class Counting:
    """The adapter, counting questions in flight (the engine must bound them)."""

    def __init__(self, inner: DnspythonListResolver) -> None:
        self.inner = inner
        self.out = 0
        self.most = 0

    async def ask(self, qname: str) -> RawAnswer:
        self.out += 1
        self.most = max(self.most, self.out)
        try:
            return await self.inner.ask(qname)
        finally:
            self.out -= 1


class Recorded:
    """domain.listed / delisted, kept instead of published (no broker in this bench)."""

    def __init__(self) -> None:
        self.events: list[EventData] = []

    async def announce(self, data: EventData) -> str | None:
        self.events.append(data)
        return None


@dataclass
class Round:
    seconds: float
    questions: dict[str, int]
    deduplicated: dict[str, int]
    most_in_flight: int
    results: Counter[str]
    listed_events: int


async def seed(database: DatabaseSettings, names: list[str]) -> None:
    await execute(database, "DELETE FROM domain_reputation")
    await execute(database, "DELETE FROM tracking_domains")
    rows = [(name, f"cust-{i}", "active", True, registered_domain(name))
            for i, name in enumerate(names)]
    for start in range(0, len(rows), 2000):
        values = ", ".join(f"(${5 * k + 1}, ${5 * k + 2}, ${5 * k + 3}, ${5 * k + 4}, "
                           f"${5 * k + 5})" for k in range(len(rows[start:start + 2000])))
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                                f"verified, registered_domain) VALUES {values}",
                      *[v for row in rows[start:start + 2000] for v in row])


async def one_round(database: DatabaseSettings, names: list[str], *, latency_s: float,
                    concurrency: int) -> Round:
    await seed(database, names)
    with DnsServer(delay_s=latency_s) as dns:
        zones = ListZones(dns)
        zones.list("dbl", names[0], "phishing")
        zones.list("surbl", registered_domain(names[-1]), "ph")
        policy = ReputationPolicy(lists=parse_lists(zones.setting), interval_s=INTERVAL_S,
                                  daily_budget=100_000, concurrency=concurrency)
        resolver = Counting(DnspythonListResolver((("127.0.0.1", dns.port),), timeout_s=5))
        lookups = ReputationEngine(resolver, policy.lists, daily_budget=policy.daily_budget,
                                   concurrency=concurrency)
        engine = create_engine(database, pool_size=5)
        announcer = Recorded()
        try:
            watch = ReputationWatch(store=ReputationStore(engine), engine=lookups,
                                    announcer=announcer, policy=policy,
                                    platform_hosts=(HOST,),
                                    clock=lambda: datetime.now(UTC))
            started = time.perf_counter()
            rounds = await watch.run_once()
            seconds = time.perf_counter() - started
        finally:
            await engine.dispose()
        watched = [*names, HOST]
        return Round(
            seconds=seconds,
            questions={b.kind.value: lookups.stats.queries[b.kind] for b in lookups.lists},
            deduplicated={b.kind.value: len(lookups.query_names(b, watched)) + 2
                          for b in lookups.lists},
            most_in_flight=resolver.most,
            results=sum((r.results for r in rounds), Counter()),
            listed_events=len(announcer.events))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reputation")
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--shared", type=int, default=2_000,
                        help="of them under 400 shared registered domains")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    servers = Servers.from_environment()
    servers.preflight()
    names = domain_names(args.domains, args.shared)
    latency_s = args.latency_ms / 1000
    with fresh_database(servers, "reputation") as database:
        say(f"baseline: {len(names)} domains, 3 lists, DNS answering at once")
        baseline = asyncio.run(one_round(database, names, latency_s=0.0,
                                         concurrency=args.concurrency))
        say(f"  {baseline.seconds:.1f} s")
        say(f"round: the same, every answer after {args.latency_ms:g} ms")
        measured = asyncio.run(one_round(database, names, latency_s=latency_s,
                                         concurrency=args.concurrency))
        checked = asyncio.run(fetch(database, "SELECT status, count(*) AS n FROM "
                                              "domain_reputation GROUP BY status"))
    total = sum(measured.questions.values())
    floor_s = total / args.concurrency * latency_s
    say(f"  {measured.seconds:.1f} s; results {dict(measured.results)}; "
        f"rows {[(r['status'], r['n']) for r in checked]}")
    say("")
    say(f"full round, {len(names)} domains (+ the platform host), 3 lists, "
        f"{args.latency_ms:g} ms per answer, concurrency {args.concurrency}:")
    say(f"  round                 {measured.seconds:8.1f} s  = {measured.seconds / INTERVAL_S:.3f}"
        f" of the {INTERVAL_S / 60:g}-minute schedule")
    say(f"  baseline (no latency) {baseline.seconds:8.1f} s  round/baseline "
        f"{measured.seconds / baseline.seconds:.2f}")
    say(f"  floor (questions/concurrency x latency) {floor_s:.1f} s  round/floor "
        f"{measured.seconds / floor_s:.2f}")
    say(f"  most questions in flight {measured.most_in_flight} (limit {args.concurrency})")
    for kind, sent in measured.questions.items():
        say(f"  {kind:5} questions {sent:6}  deduplicated count {measured.deduplicated[kind]:6}")
    say(f"  domain.listed announced: {measured.listed_events}")
    failures = []
    if measured.seconds >= INTERVAL_S:
        failures.append("the round does not fit the schedule")
    if any(sent > measured.deduplicated[k] for k, sent in measured.questions.items()):
        failures.append("more questions than the deduplicated count")
    if measured.most_in_flight > args.concurrency:
        failures.append("concurrency exceeded")
    if failures:
        sys.exit("bench.reputation: " + "; ".join(failures))


if __name__ == "__main__":
    main()
