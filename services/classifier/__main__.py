"""Entry point: `python -m services.classifier`. Consume clicks, publish changed verdicts."""

from __future__ import annotations

import asyncio
import functools
import os
import time

from services.classifier import settings as classifier_settings
from services.classifier.handlers import Classifier
from services.classifier.settings import ClassifierSettings
from services.classifier.windows import Windows
from shared.bot_verdict import Verdict
from shared.broker import topology as broker_topology
from shared.broker.connection import connect, open_channel
from shared.broker.consumer import ConsumePolicy, Consumer
from shared.broker.names import CLASSIFIER_QUEUE, CLICK_CLASSIFIED
from shared.broker.publisher import Publisher
from shared.events import decode_clicks_seen
from shared.lifecycle import Lifecycle, event_source, service_main
from shared.metrics import ClassifierMetrics, MetricsServer, new_registry
from shared.periodic import every

# With no click coming, the windows' clock follows the wall clock this often per settle time.
TICKS_PER_SETTLE = 10


async def open_classifier(life: Lifecycle, settings: ClassifierSettings) -> None:
    """Open the classifier's resources; `life` closes them in reverse (the consumer stops
    and finishes its messages, then the connection and /metrics go). The queue has a
    single active consumer: a second replica waits, and takes over if this one goes."""
    source = event_source("classifier")
    registry = new_registry()
    metrics = ClassifierMetrics(registry)
    windows = Windows(burst_links=settings.burst_links, burst_window_s=settings.burst_window_s,
                      honeypot_window_s=settings.honeypot_window_s, settle_s=settings.settle_s,
                      verdict=Verdict(weak=settings.weak_reasons))
    metrics.watch(held=lambda: windows.held)
    await life.enter(MetricsServer(registry, settings.metrics_bind))
    connection = await connect(settings.broker, name=f"classifier {source}")
    life.on_stop(connection.close, quiet=True)
    channel = await open_channel(connection)
    topology = broker_topology.Topology(settings.broker.exchange)
    exchange = await broker_topology.declare(channel, topology)
    publisher = Publisher(channel, exchange, source=source)

    async def publish(body: bytes) -> None:
        await publisher.publish(CLICK_CLASSIFIED, body, batch=True)

    classifier = Classifier(windows, publish, source=source, metrics=metrics)
    # Stopping runs these in reverse: the consumer, the ticks, then the grown clicks out.
    life.on_stop(classifier.drain)
    ticking = asyncio.Event()
    ticks = asyncio.create_task(every(ticking, settings.settle_s / TICKS_PER_SETTLE,
                                      lambda: classifier.tick(time.time()),
                                      failed="classifier.tick_failed"), name="classifier-tick")

    async def stop_ticks() -> None:
        ticking.set()
        await ticks

    life.on_stop(stop_ticks)
    consumer = Consumer(
        channel=channel, topology=topology, queue=CLASSIFIER_QUEUE, handler=classifier.handle,
        publisher=publisher, policy=ConsumePolicy(prefetch=settings.prefetch),
        metrics=metrics.consumer, decode=decode_clicks_seen,
    )
    life.on_stop(consumer.stop)
    await consumer.start()
    life.describe(queue=topology.queue(CLASSIFIER_QUEUE), broker=settings.broker.safe_url,
                  burst_links=settings.burst_links, burst_window_s=settings.burst_window_s,
                  honeypot_window_s=settings.honeypot_window_s, settle_s=settings.settle_s)
    life.summarize(lambda: {"published": classifier.published, "held": windows.held})


async def serve(settings: ClassifierSettings, stop: asyncio.Event) -> None:
    await Lifecycle("classifier").run(functools.partial(open_classifier, settings=settings),
                                      stop)


def main() -> None:
    service_main("classifier", classifier_settings.load, serve, os.environ)


if __name__ == "__main__":
    main()
