"""Caddy's on-demand TLS `ask` endpoint: may Caddy obtain a certificate for this name?

For operators who terminate TLS with Caddy instead of nginx. Caddy asks
`GET <ask URL>?domain=<name>` before it obtains a certificate for a name it has none
for; any answer but 2xx refuses. This answers 200 only for a tracking domain that is
verified (its DNS points at us: about to be used) or active, so nobody can make the
platform ask a CA for certificates for names of their choosing. It listens on its own
address (`CADDY_ASK_BIND`, like METRICS_BIND: loopback or a private network, never the
public port), off unless set. A database that does not answer within the timeout means
503: Caddy refuses, and asks again at a later handshake.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.certificates import SERVED_STATUSES
from shared.db.models import TrackingDomain
from shared.domains import InvalidDomain, normalise_domain
from shared.internal_http import serve_route

log = structlog.get_logger(__name__)

ASK_TIMEOUT_S = 2.0


class CaddyAsk:
    """`GET /ask?domain=<name>` on `bind`; an async context manager (None: not served)."""

    def __init__(self, engine: AsyncEngine, bind: tuple[str, int] | None) -> None:
        self._engine = engine
        self._bind = bind
        self._runner: web.AppRunner | None = None

    async def allowed(self, name: str) -> bool:
        async with self._engine.connect() as connection:
            return (await connection.execute(
                select(TrackingDomain.id).where(TrackingDomain.name == name,
                                                TrackingDomain.status.in_(SERVED_STATUSES))
            )).first() is not None

    async def _ask(self, request: web.Request) -> web.Response:
        raw = request.query.get("domain", "")
        try:
            name = normalise_domain(raw)
        except InvalidDomain:
            log.info("caddy.ask", domain=raw[:253], outcome="malformed")
            return web.Response(status=400, text="not a domain name\n")
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                allowed = await self.allowed(name)
        except Exception as exc:  # TimeoutError, the database down: refuse for now
            log.warning("caddy.ask", domain=name, outcome="unavailable",
                        error=str(exc) or type(exc).__name__)
            return web.Response(status=503, text="cannot tell now\n")
        log.info("caddy.ask", domain=name, outcome="allowed" if allowed else "refused")
        if allowed:
            return web.Response(text="ok\n")
        return web.Response(status=404, text="not a verified or active tracking domain\n")

    async def __aenter__(self) -> CaddyAsk:
        if self._bind is None:
            return self
        host, port = self._bind
        try:
            runner = await serve_route(self._bind, "/ask", self._ask)
        except OSError as exc:
            raise SystemExit(f"redirector: CADDY_ASK_BIND {host}:{port} cannot be used: "
                             f"{exc.strerror or exc}") from None
        self._runner = runner
        log.info("caddy_ask.listening", url=f"http://{host}:{port}/ask")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
