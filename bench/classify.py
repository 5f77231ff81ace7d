"""Click classification: the labelled corpus at scale, and the classifier's full rate.

    .venv/bin/python -m bench.classify corpus --recipients 1500 --scale 0.2 --span 60
    .venv/bin/python -m bench.classify rate --clicks 200000

`corpus`: bench/corpus.py's streams, played over HTTP through a real redirector, logger
and classifier (this tree), time scaled by `--scale` (the services' thresholds alike);
prints the confusion matrix docs/classification.md shows.

`rate`: the classifier's queue pre-loaded with `--clicks` click events (batched messages of
500, as redirectors send them; event times at `--event-rate` clicks a second, a share
`--scanned` of the recipients (a third) scanned: a burst of five links), then a classifier
started: how long it takes to ack every message, publishing its click.classified, and
its CPU per click.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aio_pika

from bench.corpus import generate, play, score, service_settings, write_scanner_file
from bench.cpu import process_cpu
from bench.links import LINK_KEYS, TRACKING_HOST
from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database, fresh_namespace, wait_rows
from bench.systems import running
from bench.wrk import BENCH
from demo.databases import fetch
from demo.net import free_port
from demo.processes import ServiceProcess, count_lines
from shared.broker import topology as broker_topology
from shared.broker.names import CLASSIFIER_QUEUE, CLICK_TRACKED
from shared.events import ClickTracked, encode_batch, encode_event
from shared.links import LinkSigner
from shared.settings import parse_link_keys


def corpus(args: argparse.Namespace, servers: Servers, out: Path) -> None:
    with (fresh_database(servers, "classify") as database,
          fresh_namespace(servers, "classify") as exchange):
        port = free_port()
        env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange,
               "DATABASE_URL": dsn(database), "METRICS_BIND": "off",
               "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": LINK_KEYS,
               "SPOOL_DIR": str(out / "spool"), "REDIRECTOR_BIND": f"127.0.0.1:{port}",
               "TRUSTED_PROXIES": "127.0.0.1/32",
               "SCANNER_NETWORKS_FILE": str(write_scanner_file(out / "scanners.cidr")),
               **service_settings(args.scale)}
        with (running(ServiceProcess("logger", env, out)) as logger,
              running(ServiceProcess("classifier", env, out)) as classifier,
              running(ServiceProcess("redirector", env, out)) as redirector):
            logger.wait_for_log('"logger.started"', 30)
            classifier.wait_for_log('"classifier.started"', 30)
            redirector.wait_listening(port)
            built = generate(LinkSigner(parse_link_keys(LINK_KEYS)), recipients=args.recipients,
                             scale=args.scale, span_s=args.span, seed=args.seed)
            say(f"{len(built.fetches):,} fetches over {built.duration_s:.0f} s "
                f"(time scaled by {args.scale})")
            served = asyncio.run(play(built, f"http://127.0.0.1:{port}", TRACKING_HOST))
            rows, _ = wait_rows(database, served)
            time.sleep(60 * args.scale + 3)  # every verdict settled, every sweep done
            result = score(built, asyncio.run(fetch(database, "SELECT * FROM tracking_logs")))
            say(f"{served:,} fetches served (all 302), {rows:,} rows\n{result.markdown()}")
            say("reasons of the flagged clicks: " + ", ".join(
                f"{reason} {count}" for reason, count in result.reasons.most_common()))


async def preload(servers: Servers, exchange: str, clicks: int, event_rate: float,
                  scanned: float) -> int:
    """Fill the classifier's queue (and the rest of the topology) with click messages."""
    rng = random.Random(15)
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await broker_topology.declare(channel, broker_topology.Topology(exchange))
        queue = await channel.get_queue(f"{exchange}.{CLASSIFIER_QUEUE}")
        # Only the classifier's queue is measured: unbind the logger's for this bench.
        logger = await channel.get_queue(f"{exchange}.logger")
        await logger.unbind(exchange, CLICK_TRACKED)
        start = time.time() - clicks / event_rate
        batch: list[bytes] = []
        made, recipient = 0, 0
        while made < clicks:
            recipient += 1
            links = 5 if rng.random() < scanned else 1
            for n in range(links):
                at = start + made / event_rate
                batch.append(encode_event(ClickTracked(
                    customer_id="c", campaign_id=f"k{recipient % 50}",
                    recipient_id=f"r{recipient}", domain=TRACKING_HOST,
                    url=f"https://shop.example/{n}", ip="198.51.100.1", user_agent="Mozilla/5.0",
                    reasons=["soon-after-send"] if links > 1 else []),
                    source="/bench", time=datetime.fromtimestamp(at, UTC)))
                made += 1
            if len(batch) >= 500 or made >= clicks:
                await channel.default_exchange.publish(aio_pika.Message(
                    encode_batch(batch), content_type="application/cloudevents-batch+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue.name)
                batch = []
        return made


async def depth(servers: Servers, queue: str) -> int:
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


def rate(args: argparse.Namespace, servers: Servers, out: Path) -> None:
    with fresh_namespace(servers, "classify-rate") as exchange:
        made = asyncio.run(preload(servers, exchange, args.clicks, args.event_rate,
                                   args.scanned))
        queue = f"{exchange}.{CLASSIFIER_QUEUE}"
        messages = asyncio.run(depth(servers, queue))
        say(f"{made:,} clicks in {queue} ({messages:,} messages)")
        env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange, "METRICS_BIND": "off",
               **dict(item.split("=", 1) for item in args.env)}
        with running(ServiceProcess("classifier", env, out)) as classifier:
            classifier.wait_for_log('"classifier.started"', 30)
            started = time.monotonic()
            cpu_before = (process_cpu(classifier.pid) or (0, 0, 0.0))[2]
            # Every message acked (the queue's depth counts only the ones not delivered).
            while count_lines(classifier.log_text(), '"message.handled"') < messages:
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            cpu = (process_cpu(classifier.pid) or (0, 0, 0.0))[2] - cpu_before
        published = asyncio.run(depth(servers, f"{exchange}.platform"))
        say(f"classifier: {made:,} clicks in {elapsed:.1f} s = {made / elapsed:,.0f} clicks/s; "
            f"CPU {cpu / made * 1e6:.1f} µs per click ({cpu / elapsed:.0%} of a core); "
            f"{published:,} click.classified messages published")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    play_corpus = commands.add_parser("corpus", help="the labelled corpus, scored")
    play_corpus.add_argument("--recipients", type=int, default=1500)
    play_corpus.add_argument("--scale", type=float, default=0.2)
    play_corpus.add_argument("--span", type=float, default=60.0, help="seconds of play")
    play_corpus.add_argument("--seed", type=int, default=15)
    full_rate = commands.add_parser("rate", help="the classifier's rate, from a full queue")
    full_rate.add_argument("--clicks", type=int, default=200_000)
    full_rate.add_argument("--event-rate", type=float, default=3000.0)
    full_rate.add_argument("--scanned", type=float, default=1 / 3,
                           help="share of recipients whose scanner fetches five links")
    full_rate.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                           help="a setting for the classifier (repeatable)")
    args = parser.parse_args()
    servers = Servers.from_environment()
    servers.preflight()
    (BENCH / "out").mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="classify-", dir=BENCH / "out"))
    say(f"logs in {out}")
    (corpus if args.command == "corpus" else rate)(args, servers, out)


if __name__ == "__main__":
    main()
