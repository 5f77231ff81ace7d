"""CPU cost of decoding click events as the logger receives them: `decode_message` on a
batched-mode message of CLICKS clicks (default 800), ROUNDS rounds (default 7) of N
messages (default 20) each.

    .venv/bin/python -m bench.decode_cost
    cd OTHER_TREE && /path/to/this/.venv/bin/python -m bench.decode_cost   # another tree

(`-m` puts the current directory first on the import path: the code measured is the tree
you are in; the first line on stderr names the file.)

Prints the minimum and median microseconds per click. No broker, no database: it isolates
the decoding the logger does for every row it writes.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime

import shared.events as events
from bench.links import USER_AGENT
from services.redirector.event_ids import EventIds

CLICKS = int(os.environ.get("CLICKS", "800"))
N = int(os.environ.get("N", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))


def main() -> None:
    print(f"events: {events.__file__}", file=sys.stderr)
    ids = EventIds()
    body = events.encode_batch(events.encode_event(
        events.ClickTracked(
            customer_id="cust-1", campaign_id="camp-42", recipient_id=f"rcpt-{n}",
            domain="click.bench.test", url=f"https://shop.example.com/item?id={n}&utm=email",
            ip="192.0.2.1", user_agent=USER_AGENT),
        source="/redirector/bench/1", event_id=ids.next(), time=datetime.now(UTC))
        for n in range(CLICKS))
    decoded = events.decode_message(body, events.BATCH)
    assert all(isinstance(e, events.Event) for e in decoded), decoded[:1]
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(N):
            events.decode_message(body, events.BATCH)
        rounds.append((time.perf_counter() - started) / N / CLICKS * 1e6)
    print(f"decode_message, {CLICKS} clicks per message: min {min(rounds):.2f} µs, median "
          f"{statistics.median(rounds):.2f} µs per click ({ROUNDS} x {N} messages)")


if __name__ == "__main__":
    main()
