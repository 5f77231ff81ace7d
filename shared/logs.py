"""structlog set-up: JSON lines when not on a terminal, readable lines on one.

Context (event ids, queue, domain) is bound with `structlog.contextvars`, so every
line a unit of work logs carries it, and an event id can be followed from the
redirector to the logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from shared.settings.declare import Setting
from shared.settings.parsers import choice

LOG_LEVEL = Setting(
    "LOG_LEVEL", choice("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"), "INFO",
    "Least severe level logged (JSON lines when not on a terminal).")
# Keys whose values must never reach a log line, whatever a caller passes.
SECRET_KEYS = frozenset({"secret", "password", "link_keys", "authorization", "token"})


def _drop_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in SECRET_KEYS.intersection(event):
        event[key] = "***"
    return event


def configure(service: str, *, level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger for one service process."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    def _add_service(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib (aio-pika, aiohttp, alembic): same format, WARNING+.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
