"""CPU cost per click of the verifier's destination watch in its steady state (every
destination's verdict in memory): `decode_click_destinations` and `DestinationWatch.handle`
on a batched message of CLICKS clicks (default 500, the redirector's largest), beside
`decode_message` (what the logger spends decoding the same message) for scale.

    .venv/bin/python -m bench.destination_cost

The clicks go to 20 customers' 20 destinations, as bench/links.py mints them. CPU time of
this process only (`time.process_time`), ROUNDS rounds (default 7) of N messages (default
50); prints the median microseconds per click of each. No broker, no database, no DNS:
what a click costs the watch once its destinations are known (a new destination costs a
lookup once per DESTINATION_RECHECK_S, not per click).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

import shared.events as events
from bench.links import USER_AGENT, make_links
from services.verifier.destination_store import DestinationStore
from services.verifier.destinations import DestinationWatch, Known
from services.verifier.reputation.blocklists import Kind, parse_lists
from services.verifier.reputation.dnspython import DnspythonListResolver
from services.verifier.reputation.engine import ReputationEngine
from shared.db.engine import create_engine
from shared.metrics import DestinationMetrics
from shared.settings import DatabaseSettings

CLICKS = int(os.environ.get("CLICKS", "500"))
N = int(os.environ.get("N", "50"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))


def per_click(work: Callable[[], object]) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(N):
            work()
        rounds.append((time.process_time() - started) / N / CLICKS * 1e6)
    return statistics.median(rounds)


def main() -> None:
    links = make_links(CLICKS)
    body = events.encode_batch(events.encode_event(
        events.ClickTracked(customer_id=fields["customer_id"],
                            campaign_id=fields["campaign_id"],
                            recipient_id=fields["recipient_id"], url=fields["url"],
                            domain="click.bench.test", ip="192.0.2.1", user_agent=USER_AGENT),
        source="/redirector/bench/1")
        for _, fields in links)
    engine = ReputationEngine(DnspythonListResolver((("127.0.0.1", 9),)),
                              parse_lists("dbl=dbl.bench.test"))
    blocklist = next(b for b in engine.lists if b.kind == Kind.DBL)
    # Never reached in the steady state: every verdict is in memory.
    store = DestinationStore(create_engine(DatabaseSettings(url="sqlite+aiosqlite://")))
    watch = DestinationWatch(lookups=engine, blocklist=blocklist, store=store,
                             announcer=None,  # type: ignore[arg-type]  # never told
                             metrics=DestinationMetrics(CollectorRegistry()))
    for n in range(20):
        watch._verdicts.put(f"shop{n}.example", Known(False, (), float("inf")))
    loop = asyncio.new_event_loop()
    view = events.decode_click_destinations(body, events.BATCH)

    def handle() -> None:
        loop.run_until_complete(watch.handle(view))  # type: ignore[arg-type]

    full = per_click(lambda: events.decode_message(body, events.BATCH))
    decode = per_click(lambda: events.decode_click_destinations(body, events.BATCH))
    handled = per_click(handle)
    print(f"{CLICKS} clicks per message, median of {ROUNDS} x {N} messages, µs per click: "
          f"decode_message (the logger's decoding, for scale) {full:.2f}; the watch: "
          f"decode_click_destinations {decode:.2f} + handle {handled:.2f} = "
          f"{decode + handled:.2f}")


if __name__ == "__main__":
    main()
