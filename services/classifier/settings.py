"""Classifier settings, from the environment (see docs/classification.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.bot_verdict import BOT_WEAK_REASONS
from shared.logs import LOG_LEVEL
from shared.settings import BROKER, BrokerSettings, Env, Program, Setting, metrics_bind
from shared.settings.parsers import number, whole

BOT_BURST_LINKS = Setting(
    "BOT_BURST_LINKS", whole(minimum=2), "3",
    "Distinct links one recipient opens within BOT_BURST_WINDOW_S that make a burst.")
BOT_BURST_WINDOW_S = Setting(
    "BOT_BURST_WINDOW_S", number(minimum=0.1), "10",
    "The span, in seconds, a burst's links fall within.")
BOT_HONEYPOT_WINDOW_S = Setting(
    "BOT_HONEYPOT_WINDOW_S", number(minimum=0.1), "30",
    "A recipient's clicks this many seconds or less from a honeypot click get near-honeypot.")
BOT_SETTLE_S = Setting(
    "BOT_SETTLE_S", number(minimum=1), "60",
    "How long a click's verdict may still change; at least both windows.")
CLASSIFIER_PREFETCH = Setting(
    "CLASSIFIER_PREFETCH", whole(minimum=1), "64", "Unacked messages the classifier holds.")
METRICS_BIND = metrics_bind("classifier")

PROGRAM = Program("classifier", (
    *BROKER, BOT_WEAK_REASONS, BOT_BURST_LINKS, BOT_BURST_WINDOW_S, BOT_HONEYPOT_WINDOW_S,
    BOT_SETTLE_S, CLASSIFIER_PREFETCH, LOG_LEVEL, METRICS_BIND,
))


@dataclass(frozen=True)
class ClassifierSettings:
    broker: BrokerSettings
    weak_reasons: frozenset[str]
    burst_links: int
    burst_window_s: float
    honeypot_window_s: float
    settle_s: float
    prefetch: int
    log_level: str
    metrics_bind: tuple[str, int] | None = None


def load(environ: Mapping[str, str]) -> ClassifierSettings:
    env = Env(environ, PROGRAM)
    settings = ClassifierSettings(
        broker=BrokerSettings.read(env),
        weak_reasons=env[BOT_WEAK_REASONS],
        burst_links=env[BOT_BURST_LINKS],
        burst_window_s=env[BOT_BURST_WINDOW_S],
        honeypot_window_s=env[BOT_HONEYPOT_WINDOW_S],
        settle_s=env[BOT_SETTLE_S],
        prefetch=env[CLASSIFIER_PREFETCH],
        log_level=env[LOG_LEVEL],
        metrics_bind=env[METRICS_BIND],
    )
    if settings.settle_s < max(settings.burst_window_s, settings.honeypot_window_s):
        raise BOT_SETTLE_S.invalid("must be at least BOT_BURST_WINDOW_S and "
                                   "BOT_HONEYPOT_WINDOW_S")
    return settings
