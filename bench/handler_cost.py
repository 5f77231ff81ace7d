"""CPU cost of the redirector's click handler alone: `Redirector.track` on mocked requests.

    .venv/bin/python -m bench.handler_cost                                  # this tree
    cd OTHER_TREE && /path/to/this/.venv/bin/python -m bench.handler_cost   # another one

N calls (default 100,000) per round, ROUNDS rounds (default 7), after a warm-up, over
1,000 distinct signed links (minted an hour ago: `t` is checked on every click), spool on
/dev/shm where there is one. Prints the minimum and
median microseconds per call. No HTTP, no broker: it isolates what the handler adds (used
to measure what metrics cost per click, docs/observability.md). It calls
`Redirector.handle`, the dispatcher every request goes through.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

import services.redirector.handlers as handlers
from services.redirector.active_domains import DomainDirectory
from services.redirector.clients import ClientAddress
from services.redirector.forwarder import Forwarder
from services.redirector.spool import Spool
from shared.links import LinkSigner
from shared.settings import parse_link_keys

N = int(os.environ.get("N", "100000"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))
HOST = "click.platform.test"


async def main(root: Path) -> None:
    print(f"handlers: {handlers.__file__}", file=sys.stderr)
    signer = LinkSigner(parse_link_keys("k1:" + "s" * 40))
    spool = Spool(root)
    spool.open()
    redirector = handlers.Redirector(
        signer=signer, domains=DomainDirectory(HOST), clients=ClientAddress(()), spool=spool,
        forwarder=Forwarder(spool), source="/bench", spool_max_bytes=1 << 30)
    requests = []
    for i in range(1000):
        token = signer.mint_token(customer_id="c1", campaign_id="k", recipient_id=f"r{i}",
                                  url=f"https://example.com/p?i={i}",
                                  minted_at=int(time.time()) - 3600)
        requests.append(make_mocked_request("GET", f"/t/{token}", headers={
            "Host": HOST, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
            match_info={"token": token}))
    track = redirector.handle
    for i in range(20_000):
        await track(requests[i % 1000])
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for i in range(N):
            await track(requests[i % 1000])
        rounds.append((time.perf_counter() - started) / N * 1e6)
        while (batch := spool.next_batch(5000)) is not None:  # keep the spool small
            spool.confirmed(batch)
    spool.close()
    print(f"Redirector.handle (a click): min {min(rounds):.2f} µs, median "
          f"{statistics.median(rounds):.2f} µs per call ({ROUNDS} x {N:,} calls)")


if __name__ == "__main__":
    spool_root = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        asyncio.run(main(spool_root))
    finally:
        shutil.rmtree(spool_root, ignore_errors=True)
