"""Process life cycle shared by every service: settings errors, signals, the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from shared import logs
from shared.errors import SettingsError

S = TypeVar("S")


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
