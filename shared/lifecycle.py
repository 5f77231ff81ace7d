"""Process life cycle shared by every service: settings errors, signals, the event loop,
and `Lifecycle`, the one shape of starting and stopping a service.

A service's start-up is one coroutine that opens its resources in order, each
registered with the `Lifecycle` as it is opened; stopping closes them in the reverse
order. The whole start-up runs as a task that the stop signal cancels wherever it is
(a broker or database being waited for included): what was opened so far is closed,
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import structlog

from shared import logs
from shared.errors import SettingsError

S = TypeVar("S")
T = TypeVar("T")

log = structlog.get_logger(__name__)


class _HasLogLevel(Protocol):
    # A read-only property, so that frozen settings dataclasses match it.
    @property
    def log_level(self) -> str: ...


L = TypeVar("L", bound=_HasLogLevel)


def load_or_exit(service: str, loader: Callable[[Mapping[str, str]], S],
                 environ: Mapping[str, str]) -> S:
    """Settings, or one clear line on stderr naming the bad setting and exit status 2."""
    try:
        return loader(environ)
    except SettingsError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *,
        uvloop: bool = True) -> None:
    """Run `main(stop)` where `stop` is set by SIGTERM or SIGINT, on uvloop where present."""

    async def _with_signals() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    loop_factory = None
    if uvloop:
        try:
            import uvloop as _uvloop
        except ImportError:  # optional: plain asyncio works, a little slower
            pass
        else:
            loop_factory = _uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_with_signals())


class Lifecycle:
    """One service's resources, opened in order and closed in reverse; one
    `<service>.started` line once all are open, and `<service>.stopping` and
    `<service>.stopped` (with the summary the service gives) around the closing.

    `drain_timeout_s`, when the service has one, counts from the moment stopping
    begins; closers that drain work ask `remaining_s()` how much of it is left.
    """

    def __init__(self, service: str, *, drain_timeout_s: float | None = None) -> None:
        self.service = service
        self.drain_timeout_s = drain_timeout_s
        # Set when stopping begins: background loops that watch it wind down on their own.
        self.stopping = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._started = False
        self._stopped = False
        self._stop_began: float | None = None
        self._described: dict[str, object] = {}
        self._noted: dict[str, object] = {}
        self._summaries: list[Callable[[], Mapping[str, object]]] = []

    # --- what a service's start-up calls, step by step ------------------------------------

    async def enter(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Open `resource` now; it is closed when the service stops."""
        return await self._stack.enter_async_context(resource)

    def on_stop(self, close: Callable[[], object], *, quiet: bool = False) -> None:
        """Run `close` (a function or a coroutine function) when the service stops,
        before whatever was registered earlier. `quiet`: its errors are ignored (closing
        a connection the peer already dropped)."""
        async def _close() -> None:
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if not quiet:
                    raise

        self._stack.push_async_callback(_close)

    def describe(self, **fields: object) -> None:
        """Fields of the `<service>.started` line."""
        self._described.update(fields)

    def note(self, **fields: object) -> None:
        """Fields of the `<service>.stopped` line, found while stopping (`drained=`)."""
        self._noted.update(fields)

    def summarize(self, summary: Callable[[], Mapping[str, object]]) -> None:
        """Fields of the `<service>.stopped` line, read once everything is closed."""
        self._summaries.append(summary)

    def remaining_s(self) -> float:
        """What is left of the drain timeout (all of it before stopping begins)."""
        if self.drain_timeout_s is None:
            raise ValueError(f"{self.service} has no drain timeout")
        if self._stop_began is None:
            return self.drain_timeout_s
        return max(self.drain_timeout_s - (time.monotonic() - self._stop_began), 0.0)

    # --- starting and stopping ------------------------------------------------------------

    async def start(self, opener: Callable[[Lifecycle], Awaitable[T]]) -> T:
        """Run the service's start-up; if it fails or is cancelled, close what it opened."""
        began = time.monotonic()
        try:
            result = await opener(self)
        except BaseException as exc:
            # A start-up that failed is reported as the one line on stderr that the README
            # promises; the closing lines then only matter when debugging.
            await self._close(started=False, reason=_why(exc),
                              quiet=not isinstance(exc, asyncio.CancelledError))
            raise
        self._started = True
        log.info(f"{self.service}.started", startup_s=round(time.monotonic() - began, 3),
                 **self._described)
        return result

    async def stop(self) -> None:
        """Close everything a completed start-up opened, in reverse order (once)."""
        if self._started and not self._stopped:
            self._stopped = True
            await self._close(started=True, reason=None)

    async def run(self, opener: Callable[[Lifecycle], Awaitable[object]],
                  stop: asyncio.Event) -> None:
        """Start, serve until `stop` is set, stop. `stop` cancels the start-up itself
        at whatever step it is in, waiting for a broker included."""
        starting = asyncio.create_task(self._start_in_task(opener),
                                       name=f"{self.service}.start")
        signalled = asyncio.create_task(stop.wait(), name=f"{self.service}.stop")
        try:
            await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()  # start() closes what it had opened
                await asyncio.wait({starting})
            if starting.cancelled():
                return
            exiting = starting.result()  # a start-up that failed ends the process
            if exiting is not None:
                raise exiting
            await signalled
        finally:
            signalled.cancel()
            if not starting.done():  # run() itself was cancelled mid start-up
                starting.cancel()
                await asyncio.wait({starting})
            await self.stop()

    async def _start_in_task(self, opener: Callable[[Lifecycle], Awaitable[object]]
                             ) -> SystemExit | None:
        """`start()`, returning the SystemExit ("cannot start: why") a start-up raises:
        raised in a task, it would escape the event loop as an unretrieved error."""
        try:
            await self.start(opener)
        except SystemExit as exc:
            return exc
        return None

    async def _close(self, *, started: bool, reason: str | None, quiet: bool = False) -> None:
        self._stop_began = time.monotonic()
        self.stopping.set()
        say = log.debug if quiet else log.info
        fields = {"reason": reason, "drain_timeout_s": self.drain_timeout_s}
        say(f"{self.service}.stopping", started=started,
                 **{key: value for key, value in fields.items() if value is not None})
        try:
            await self._stack.aclose()
        finally:
            summary: dict[str, object] = dict(self._noted)
            for more in self._summaries:
                summary.update(more())
            say(f"{self.service}.stopped", started=started,
                     stop_s=round(time.monotonic() - self._stop_began, 3), **summary)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "stopped during start-up"
    return f"start-up failed: {type(exc).__name__}: {exc}"[:500]


def event_source(service: str) -> str:
    """The CloudEvents `source` of this process: which service, host and pid said it."""
    return f"/{service}/{socket.gethostname()}/{os.getpid()}"


def service_main(service: str, loader: Callable[[Mapping[str, str]], L],
                 serve: Callable[[L, asyncio.Event], Coroutine[Any, Any, None]],
                 environ: Mapping[str, str]) -> None:
    """The whole life of one service process: settings, logs, serve until SIGTERM."""
    settings = load_or_exit(service, loader, environ)
    logs.configure(service, level=settings.log_level)

    async def _main(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    run(_main)
