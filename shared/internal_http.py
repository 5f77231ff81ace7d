"""One GET route on an internal address: the metrics endpoint, Caddy's `ask`.

Internal endpoints bind their own address (never the public port), log no access lines
and leave signals to the service's lifecycle; written once here for each of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


async def serve_route(bind: tuple[str, int], path: str,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.AppRunner:
    """Listen on `bind` and answer `GET path`; the caller cleans the runner up at stop.

    Raises OSError (with nothing left listening) when the address cannot be had: the
    caller decides whether that is fatal (Caddy's ask) or not (metrics)."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = bind
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
