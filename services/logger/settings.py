"""Logger settings, from the environment (see README's table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.metrics import load_bind
from shared.settings import BrokerSettings, DatabaseSettings, Env


@dataclass(frozen=True)
class LoggerSettings:
    broker: BrokerSettings
    database: DatabaseSettings
    batch_rows: int
    flush_ms: float
    prefetch: int
    max_backoff_s: float
    log_level: str
    metrics_bind: tuple[str, int] | None = None


def load(environ: Mapping[str, str]) -> LoggerSettings:
    env = Env(environ)
    return LoggerSettings(
        broker=env.broker(),
        database=env.database(),
        batch_rows=env.int("LOGGER_BATCH_ROWS", 5000, minimum=1),
        flush_ms=env.float("LOGGER_FLUSH_MS", 20.0),
        prefetch=env.int("LOGGER_PREFETCH", 64, minimum=1),
        max_backoff_s=env.float("LOGGER_MAX_BACKOFF_S", 5.0, minimum=0.1),
        log_level=env.str("LOG_LEVEL", "INFO").upper(),
        metrics_bind=load_bind(environ, "logger"),
    )
