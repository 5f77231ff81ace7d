"""Logger settings, from the environment (see README's table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.logs import LOG_LEVEL
from shared.settings import (
    BROKER,
    DATABASE_URL,
    BrokerSettings,
    DatabaseSettings,
    Env,
    Program,
    Setting,
    metrics_bind,
)
from shared.settings.parsers import number, whole

LOGGER_BATCH_ROWS = Setting(
    "LOGGER_BATCH_ROWS", whole(minimum=1), "5000", "Rows per database commit at most.")
LOGGER_FLUSH_MS = Setting(
    "LOGGER_FLUSH_MS", number(), "20", "How long a partial batch waits before it is committed.")
LOGGER_PREFETCH = Setting(
    "LOGGER_PREFETCH", whole(minimum=1), "64",
    "Unacked messages a logger holds (bounds memory while PostgreSQL is down).")
LOGGER_MAX_BACKOFF_S = Setting(
    "LOGGER_MAX_BACKOFF_S", number(minimum=0.1), "5",
    "Longest wait between retries of a failed commit.")
CLICK_RETENTION_DAYS = Setting(
    "CLICK_RETENTION_DAYS", whole(minimum=31), "400",
    "PostgreSQL: clicks are kept at least this many days; older months' partitions are "
    "dropped whole (hourly).")
METRICS_BIND = metrics_bind("logger")

PROGRAM = Program("logger", (
    *BROKER, DATABASE_URL, LOGGER_BATCH_ROWS, LOGGER_FLUSH_MS, LOGGER_PREFETCH,
    LOGGER_MAX_BACKOFF_S, CLICK_RETENTION_DAYS, LOG_LEVEL, METRICS_BIND,
))


@dataclass(frozen=True)
class LoggerSettings:
    broker: BrokerSettings
    database: DatabaseSettings
    batch_rows: int
    flush_ms: float
    prefetch: int
    max_backoff_s: float
    log_level: str
    retention_days: int = 400
    metrics_bind: tuple[str, int] | None = None


def load(environ: Mapping[str, str]) -> LoggerSettings:
    env = Env(environ, PROGRAM)
    return LoggerSettings(
        broker=BrokerSettings.read(env),
        database=DatabaseSettings.read(env),
        batch_rows=env[LOGGER_BATCH_ROWS],
        flush_ms=env[LOGGER_FLUSH_MS],
        prefetch=env[LOGGER_PREFETCH],
        max_backoff_s=env[LOGGER_MAX_BACKOFF_S],
        log_level=env[LOG_LEVEL],
        retention_days=env[CLICK_RETENTION_DAYS],
        metrics_bind=env[METRICS_BIND],
    )
