"""HTTP handlers: verify the link, spool the click, answer 302. Nothing else on the hot path.

The redirector answers five kinds of request, so it runs on aiohttp's low-level server
(`web.Server`) with one dispatcher (`Redirector.handle`) choosing by path prefix, not on
`web.Application`: the router's resolution, match info, signals and request wrapper
cost about a sixth of the CPU of a click here (bench/run.py measures both servers).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, perf_counter, time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry

from services.redirector.active_domains import DomainDirectory
from services.redirector.bots import ClickReasons
from services.redirector.clients import ClientAddress
from services.redirector.event_ids import EventIds
from services.redirector.forwarder import Forwarder
from services.redirector.spool import Spool
from shared.certificates import ChallengeAnswers
from shared.domains import host_from_header
from shared.events import ClickTracked, encode_event
from shared.links import MAX_TOKEN_LENGTH, LinkError, LinkSigner
from shared.metrics import RedirectorMetrics

log = structlog.get_logger(__name__)

NOT_FOUND_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Link not found</title></head>"
    b"<body><h1>Link not found</h1><p>This link is not valid. If you followed it from an "
    b"email, the link may have been altered or cut short.</p></body></html>"
)
_NOT_FOUND_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
UNAVAILABLE_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Try again</title></head>"
    b"<body><h1>Try again in a moment</h1><p>This link works, but it cannot be followed "
    b"right now. Please try again shortly.</p></body></html>"
)
_UNAVAILABLE_HEADERS = {**_NOT_FOUND_HEADERS, "Retry-After": "30"}
# How long a failed spool append keeps /readyz failing, and how often it is logged.
SPOOL_FAILURE_WINDOW_S = 10.0
_MAX_UA = 1024
_CHALLENGE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# An HTTP-01 answer is a key authorization, about 90 bytes: anything much larger is not one.
MAX_CHALLENGE_BYTES = 4096
# How long a challenge read may take (a slow database or shared mount) before the CA
# gets a 404.
CHALLENGE_READ_TIMEOUT_S = 5.0
# Database lookups of challenges at once: the rest wait (within the timeout), so a flood
# of challenge requests never takes more than this many connections' worth of work.
CHALLENGE_LOOKUPS = 2
_CHALLENGE_OPEN_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC)
TRACK_PREFIX = "/t/"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# The request line of the longest link (docs/links.md), with room for a query string a
# mail gateway may append: aiohttp's default (8190) refused the longest tokens.
MAX_REQUEST_LINE = len("HEAD ") + len(TRACK_PREFIX) + MAX_TOKEN_LENGTH + 1024 + len(" HTTP/1.1")
_READ_METHODS = frozenset({"GET", "HEAD"})
# LinkSigner.verify's reasons, by the class of fault they are counted under
# (tests/unit/test_metrics.py keeps this in step with shared/links.py).
REFUSAL_CLASSES = {
    "too long": "malformed",
    "not a v1 token": "malformed",
    "malformed token": "malformed",
    "unknown key id": "unknown-key",
    "bad signature": "bad-signature",
    "malformed payload": "bad-payload",
    "destination is not a safe absolute http(s) URL": "bad-payload",
    "an id contains the NUL character": "bad-payload",
}


@dataclass
class Redirector:
    """Everything a click needs, built once at start."""

    signer: LinkSigner
    domains: DomainDirectory
    clients: ClientAddress
    spool: Spool
    forwarder: Forwarder
    source: str
    spool_max_bytes: int
    access_log: bool = False
    challenge_dir: Path | None = None
    # HTTP-01 answers in the database (every edge serves them); on its own small pool,
    # never the one the active-domain refresh uses, and never on a click's path.
    challenge_answers: ChallengeAnswers | None = None
    challenge_lookups: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(CHALLENGE_LOOKUPS))
    # Challenge reads run here, never on the event loop and never in the default executor
    # that the forwarder's spool work shares: a hung shared mount stalls only challenges.
    challenge_reads: Executor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="acme-challenge"))
    event_ids: EventIds = field(default_factory=EventIds)
    bots: ClickReasons = field(default_factory=ClickReasons)
    spool_failed_at: float | None = None  # monotonic time of the last failed append
    spool_failure_logged_at: float | None = None
    metrics: RedirectorMetrics = field(
        default_factory=lambda: RedirectorMetrics(CollectorRegistry()))

    async def handle(self, request: web.BaseRequest) -> web.Response:
        """Every request: a click, an ACME challenge, a health probe, or a 404."""
        path = request.path
        if request.method in _READ_METHODS:
            if path.startswith(TRACK_PREFIX):
                return self.track(request, path[len(TRACK_PREFIX):])
            if path.startswith(CHALLENGE_PREFIX):
                return await self.acme_challenge(request, path[len(CHALLENGE_PREFIX):])
            if path == "/healthz":
                return self.healthz()
            if path == "/readyz":
                return self.readyz()
        return not_found(request, "no such path")

    def track(self, request: web.BaseRequest, token: str) -> web.Response:
        started = perf_counter()
        try:
            link = self.signer.verify(token)
        except LinkError as exc:
            reason = str(exc)
            return self._refuse(request, REFUSAL_CLASSES.get(reason, "malformed"), reason)
        host = host_from_header(request.host)
        if not self.domains.allows(host, link.customer_id):
            return self._refuse(request, "wrong-host",
                                "host does not serve this customer's links")
        method = request.method
        headers = request.headers
        user_agent = headers.get("User-Agent")
        if user_agent:
            if not user_agent.isascii():
                user_agent = printable_bytes(user_agent)
            if len(user_agent) > _MAX_UA:
                user_agent = user_agent[:_MAX_UA]
        # Every X-Forwarded-For line, in order, is one list (RFC 9110 §5.3): a proxy that
        # adds its own line after the client's is read from the right like one appending.
        forwarded = headers.getall("X-Forwarded-For", None)
        ip = self.clients.resolve(request.remote, ",".join(forwarded) if forwarded else None)
        now = time()
        bots = self.bots
        reasons = bots.of(method, user_agent, ip, link, now)
        bot_reason = reasons[0] if reasons and bots.verdict.is_bot(reasons) else None
        event_id = self.event_ids.next()
        try:
            self.spool.append(encode_event(
                ClickTracked(
                    customer_id=link.customer_id, campaign_id=link.campaign_id,
                    recipient_id=link.recipient_id, domain=host, url=link.url, ip=ip,
                    user_agent=user_agent, method=method, bot=bot_reason is not None,
                    bot_reason=bot_reason, reasons=list(reasons),
                ),
                source=self.source, event_id=event_id,
                time=datetime.fromtimestamp(now, UTC),
            ))
        except OSError as exc:
            # A click that cannot be recorded is not redirected (a 302 would lose it).
            return self._spool_failed(exc)
        self.forwarder.notify()
        metrics = self.metrics
        if bot_reason is None:
            metrics.served_redirect.inc()
        else:
            metrics.bot(bot_reason).inc()
        if self.access_log:
            log.info("click.served", event_id=event_id, domain=host,
                     outcome="redirect" if bot_reason is None else "bot",
                     campaign_id=link.campaign_id, bot_reason=bot_reason)
        response = web.Response(status=302, headers={
            "Location": link.url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        })
        metrics.redirect_seconds.observe(perf_counter() - started)
        return response

    def _spool_failed(self, exc: OSError) -> web.Response:
        now = monotonic()
        logged = self.spool_failure_logged_at
        if logged is None or now - logged >= SPOOL_FAILURE_WINDOW_S:
            # Once per window, not once per click: a full disk would flood the log.
            self.spool_failure_logged_at = now
            log.error("spool.append_failed", error=str(exc),
                      hint="free disk space under SPOOL_DIR; /readyz fails meanwhile")
        self.spool_failed_at = now
        self.metrics.unavailable.inc()
        return web.Response(status=503, body=UNAVAILABLE_PAGE, headers=_UNAVAILABLE_HEADERS)

    def _refuse(self, request: web.BaseRequest, refusal: str, reason: str) -> web.Response:
        self.metrics.refused[refusal].inc()
        if self.access_log:
            log.info("click.refused", domain=host_from_header(request.host), outcome="refused",
                     refusal=refusal, reason=reason)
        return not_found(request, reason)

    async def acme_challenge(self, request: web.BaseRequest, token: str) -> web.Response:
        """HTTP-01 answers: from the database the certifier's hook writes (every edge
        reads it), else from ACME_CHALLENGE_DIR (single-host option)."""
        if not _CHALLENGE_TOKEN.match(token):
            return not_found(request, "no such challenge")
        if self.challenge_answers is not None:
            try:
                async with asyncio.timeout(CHALLENGE_READ_TIMEOUT_S):
                    async with self.challenge_lookups:
                        answer = await self.challenge_answers.lookup(token)
            except TimeoutError:
                log.warning("challenge.lookup_timeout", token=token,
                            timeout_s=CHALLENGE_READ_TIMEOUT_S)
                answer = None
            except Exception as exc:  # the database is down: try the directory, else 404
                log.warning("challenge.lookup_failed", token=token,
                            error=str(exc) or type(exc).__name__)
                answer = None
            if answer is not None:
                return web.Response(body=answer.encode("ascii", "replace"),
                                    content_type="text/plain",
                                    headers={"Cache-Control": "no-store"})
        if self.challenge_dir is None:
            return not_found(request, "no such challenge")
        return await self._challenge_file(request, token)

    async def _challenge_file(self, request: web.BaseRequest, token: str) -> web.Response:
        """A regular file directly in ACME_CHALLENGE_DIR, read off the event loop."""
        assert self.challenge_dir is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CHALLENGE_READ_TIMEOUT_S):
                body = await loop.run_in_executor(self.challenge_reads, read_challenge,
                                                  self.challenge_dir / token)
        except TimeoutError:
            log.warning("challenge.read_timeout", token=token, dir=str(self.challenge_dir),
                        timeout_s=CHALLENGE_READ_TIMEOUT_S)
            return not_found(request, "challenge read timed out")
        except OSError:
            return not_found(request, "no such challenge")
        if body is None:
            return not_found(request, "not a challenge file")
        return web.Response(body=body, content_type="text/plain",
                            headers={"Cache-Control": "no-store"})

    def healthz(self) -> web.Response:
        return web.json_response({"status": "ok"})

    def readyz(self) -> web.Response:
        backlog = self.spool.backlog_bytes()
        problems = []
        if not self.forwarder.connected:
            problems.append("broker not connected")
        if backlog > self.spool_max_bytes:
            problems.append(f"click spool holds {backlog} bytes (limit {self.spool_max_bytes})")
        failed = self.spool_failed_at
        if failed is not None and monotonic() - failed < SPOOL_FAILURE_WINDOW_S:
            problems.append("the click spool cannot be written (disk full?): clicks get 503")
        body = {"status": "ready" if not problems else "not ready", "problems": problems,
                "spool_backlog_bytes": backlog, "active_domains": len(self.domains)}
        return web.json_response(body, status=503 if problems else 200)


def read_challenge(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file of at most MAX_CHALLENGE_BYTES, else None.

    Never follows a symlink (O_NOFOLLOW; the token holds no '/', so the file is directly
    in the directory), never blocks on a FIFO or a device (O_NONBLOCK, then fstat).
    Blocking I/O: run it in an executor.
    """
    fd = os.open(path, _CHALLENGE_OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CHALLENGE_BYTES:
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, MAX_CHALLENGE_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CHALLENGE_BYTES:  # grew after fstat
                return None
        return b"".join(chunks)
    finally:
        os.close(fd)


def printable_bytes(text: str) -> str:
    """A header value as stored: valid UTF-8 as is, and each byte that is not UTF-8
    (which aiohttp hands over as a lone surrogate) as the four characters `\\xNN`
    (docs/events.md). A JSON event cannot carry a lone surrogate at all."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class BadRequestLog:
    """The HTTP server's logger: a malformed request costs one short info line (what was
    wrong, never the bytes the parser echoes back); a handler that fails is a bug,
    logged at error with its traceback."""

    def exception(self, _message: str, *args: Any, exc_info: BaseException | None = None,
                  **_kwargs: Any) -> None:
        peer = args[0] if args else None
        if exc_info is None or isinstance(exc_info, HttpProcessingError):
            message = exc_info.message if exc_info is not None else ""
            # The first line, up to where a repr of the offending bytes starts.
            reason = re.split(r"""[:\s]*(?:bytearray\()?b?['"]""",
                              str(message).split("\n", 1)[0], maxsplit=1)[0]
            log.info("http.bad_request", peer=peer, error=type(exc_info).__name__,
                     reason=reason[:100].rstrip(": ") or None)
        else:
            log.error("http.handler_failed", peer=peer, exc_info=exc_info)

    def debug(self, *_args: Any, **_kwargs: Any) -> None:
        """aiohttp's debug notes (a client gone early, TLS on the plain port): dropped."""


def not_found(request: web.BaseRequest, reason: str) -> web.Response:
    log.debug("link.refused", reason=reason, host=request.host)
    return web.Response(status=404, body=NOT_FOUND_PAGE, headers=_NOT_FOUND_HEADERS)


def build_server(redirector: Redirector) -> web.Server:
    """The HTTP server: no access log (REDIRECTOR_ACCESS_LOG logs clicks with their event
    ids instead); header fields up to 16 KiB (long user agents and cookies are common);
    a request line that holds the longest link; malformed requests logged in one short
    line (`BadRequestLog`). The redirector never reads a request body."""
    return web.Server(redirector.handle, access_log=None, max_field_size=16384,
                      max_line_size=MAX_REQUEST_LINE, logger=BadRequestLog())
