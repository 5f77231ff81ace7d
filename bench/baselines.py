"""Baseline servers the redirector is compared with (one process each, started by
bench/systems.py).

    .venv/bin/python -m bench.baselines hmac  --port P --loop uvloop|asyncio
    .venv/bin/python -m bench.baselines hmac-lowlevel --port P --loop uvloop|asyncio
    .venv/bin/python -m bench.baselines naive --port P --loop uvloop|asyncio --dsn postgresql://...

`hmac`: bare aiohttp; verifies the signed link with the same code as the redirector
(shared.links.LinkSigner.verify: HMAC-SHA256 + payload decode) and answers 302.
No host check, no spool, no broker. It is a `web.Application` with one route, the
baseline as the click-path issue measured it.

`hmac-lowlevel`: the same handler on aiohttp's low-level server (`web.Server`, no
application or router), which the redirector runs on: it shows how much of the
redirector's figure is the server choice rather than its own work. Reported only.

`naive`: the same, then awaits one INSERT into tracking_logs per click through an
asyncpg pool of 20 connections (asyncpg defaults otherwise; autocommit, so one
commit per click) before answering 302.

Both read LINK_KEYS from the environment and print "listening" when they accept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from shared.links import LinkError, LinkSigner
from shared.settings import parse_link_keys

if TYPE_CHECKING:
    import asyncpg  # imported by `naive` alone, when it runs

INSERT = (
    "INSERT INTO tracking_logs (event_id, customer_id, campaign_id, recipient_id, domain, url,"
    " ip, user_agent, method, clicked_at, bot, bot_reason)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def build(kind: str, signer: LinkSigner, pool: asyncpg.Pool | None) -> web.Application:
    """The `hmac` or the `naive` application; `naive` writes through `pool`."""
    async def hmac_302(request: web.Request) -> web.Response:
        try:
            link = signer.verify(request.match_info["token"])
        except LinkError:
            return web.Response(status=404)
        return web.Response(status=302, headers={"Location": link.url, **_HEADERS})

    app = web.Application()
    if kind == "hmac":
        app.router.add_get("/t/{token}", hmac_302)
        return app
    if pool is None:
        raise ValueError("the naive baseline needs a database pool")

    async def naive_302(request: web.Request) -> web.Response:
        try:
            link = signer.verify(request.match_info["token"])
        except LinkError:
            return web.Response(status=404)
        await pool.execute(
            INSERT, str(uuid.uuid4()), link.customer_id, link.campaign_id, link.recipient_id,
            request.host.partition(":")[0], link.url, request.remote,
            request.headers.get("User-Agent"), request.method, datetime.now(UTC), False, None)
        return web.Response(status=302, headers={"Location": link.url, **_HEADERS})

    app.router.add_get("/t/{token}", naive_302)
    return app


def build_lowlevel(signer: LinkSigner) -> web.Server:
    async def hmac_302(request: web.BaseRequest) -> web.Response:
        path = request.path
        if not path.startswith("/t/") or request.method not in ("GET", "HEAD"):
            return web.Response(status=404)
        try:
            link = signer.verify(path[3:])
        except LinkError:
            return web.Response(status=404)
        return web.Response(status=302, headers={"Location": link.url, **_HEADERS})

    return web.Server(hmac_302, access_log=None)


async def serve(args: argparse.Namespace) -> None:
    signer = LinkSigner(parse_link_keys(os.environ["LINK_KEYS"]))
    pool = None
    if args.kind == "naive":
        import asyncpg

        pool = await asyncpg.create_pool(args.dsn, min_size=20, max_size=20)
    runner: web.BaseRunner
    if args.kind == "hmac-lowlevel":
        runner = web.ServerRunner(build_lowlevel(signer), handle_signals=False)
    else:
        runner = web.AppRunner(build(args.kind, signer, pool), access_log=None,
                               handle_signals=False)
    await runner.setup()
    # reuse_port: bench/systems.py can start two naive processes on one port, one per core,
    # as it does with the redirector.
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024, reuse_port=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening kind={args.kind} loop={type(loop).__module__}", flush=True)
    await stop.wait()
    await runner.cleanup()
    if pool is not None:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("hmac", "hmac-lowlevel", "naive"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--dsn")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
