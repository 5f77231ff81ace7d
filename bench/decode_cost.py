"""CPU cost of decoding click events as the logger receives them: `decode_message` on a
batched-mode message of CLICKS clicks (default 800, about what the redirector sends at
saturation), ROUNDS rounds (default 7) of N messages (default 20) each.

    .venv/bin/python bench/decode_cost.py
    PYTHONPATH=/path/to/other/tree .venv/bin/python bench/decode_cost.py   # another tree

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
from services.redirector.event_ids import EventIds

CLICKS = int(os.environ.get("CLICKS", "800"))
N = int(os.environ.get("N", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/126.0 Safari/537.36")


def main() -> None:
    print(f"events: {events.__file__}", file=sys.stderr)
    ids = EventIds()
    body = events.encode_batch(events.encode_event(
        events.ClickTracked(
            customer_id="cust-1", campaign_id="camp-42", recipient_id=f"rcpt-{n}",
            domain="click.bench.test", url=f"https://shop.example.com/item?id={n}&utm=email",
            ip="192.0.2.1", user_agent=UA),
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
