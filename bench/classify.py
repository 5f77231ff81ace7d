"""Click classification: the labelled corpus at scale, and the classifier's full rate.

    .venv/bin/python -m bench.classify corpus --recipients 1500 --scale 0.2 --span 60
    .venv/bin/python -m bench.classify rate --clicks 200000
    .venv/bin/python -m bench.classify keepup --seconds 20 [--per-recipient 3]

`corpus`: bench/corpus.py's streams, played over HTTP through a real redirector, logger
and classifier (this tree), time scaled by `--scale` (the services' thresholds alike);
prints the confusion matrix docs/classification.md shows.

`keepup`: one run, both sides of "the classifier keeps up with the click path": a
redirector saturated by `wrk -t1` for `--seconds` (its clicks left in the classifier's
queue, no classifier running), then a classifier draining that backlog: clicks/s and CPU
per click of each, and their ratios. `--per-recipient 3`: each recipient's three links
walked one after the other (a burst: every click reclassified and published), the
classifier's worst case; 1 (the default): every click a different recipient.

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
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aio_pika

from bench.corpus import generate, play, score, service_settings, write_scanner_file
from bench.cpu import process_cpu
from bench.links import LINK_KEYS, TRACKING_HOST, Links, check_redirects, write_paths
from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database, fresh_namespace, wait_rows
from bench.systems import running
from bench.wrk import BENCH, shown, summary, wrk_argv
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


def drain(servers: Servers, exchange: str, out: Path, clicks: int,
          extra: list[str]) -> tuple[float, float]:
    """A classifier started on a full queue, until it has acked every message: (seconds,
    CPU seconds), and what it published."""
    queue = f"{exchange}.{CLASSIFIER_QUEUE}"
    messages = asyncio.run(depth(servers, queue))
    say(f"{clicks:,} clicks in {queue} ({messages:,} messages)")
    env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange, "METRICS_BIND": "off",
           **dict(item.split("=", 1) for item in extra)}
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
    say(f"classifier: {clicks:,} clicks in {elapsed:.1f} s = {clicks / elapsed:,.0f} "
        f"clicks/s; CPU {cpu / clicks * 1e6:.1f} µs per click ({cpu / elapsed:.0%} of a "
        f"core); {published:,} click.classified messages published")
    return elapsed, cpu


def rate(args: argparse.Namespace, servers: Servers, out: Path) -> None:
    with fresh_namespace(servers, "classify-rate") as exchange:
        made = asyncio.run(preload(servers, exchange, args.clicks, args.event_rate,
                                   args.scanned))
        drain(servers, exchange, out, made, args.env)


async def classifier_only(servers: Servers, exchange: str) -> None:
    """The topology declared, the logger's queue unbound: only the classifier's fills."""
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel()
        await broker_topology.declare(channel, broker_topology.Topology(exchange))
        logger = await channel.get_queue(f"{exchange}.logger")
        await logger.unbind(exchange, CLICK_TRACKED)


def keepup_links(count: int, per_recipient: int) -> Links:
    """`count` signed links, `per_recipient` distinct ones per recipient, one after the
    other (wrk walks the file in order: a recipient's links within milliseconds)."""
    signer = LinkSigner(parse_link_keys(LINK_KEYS))
    links = []
    for n in range(count):
        recipient = n // per_recipient
        fields = {"customer_id": "cust", "campaign_id": f"camp-{recipient % 200}",
                  "recipient_id": f"rcpt-{recipient:07d}",
                  "url": f"https://shop.example/products/{n}"}
        links.append((signer.mint_token(
            customer_id=fields["customer_id"], campaign_id=fields["campaign_id"],
            recipient_id=fields["recipient_id"], url=fields["url"]), fields))
    return links


def keepup(args: argparse.Namespace, servers: Servers, out: Path) -> None:
    with fresh_namespace(servers, "classify-keepup") as exchange:
        asyncio.run(classifier_only(servers, exchange))
        links = keepup_links(args.links, args.per_recipient)
        paths = write_paths(links, out / "paths.txt")
        port = free_port()
        env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange, "METRICS_BIND": "off",
               "TRACKING_HOST": TRACKING_HOST, "LINK_KEYS": LINK_KEYS,
               "SPOOL_DIR": str(out / "spool"), "REDIRECTOR_BIND": f"127.0.0.1:{port}"}
        argv = wrk_argv(port, connections=args.connections, duration=args.seconds,
                        paths_file=paths, latency=False)
        with running(ServiceProcess("redirector", env, out)) as redirector:
            redirector.wait_for_log('"broker.connected"', 30)
            redirector.wait_listening(port)
            check_redirects(port, links[0][0], links[0][1]["url"])
            cpu_before = (process_cpu(redirector.pid) or (0, 0, 0.0))[2]
            output = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=args.seconds + 60).stdout
            cpu = (process_cpu(redirector.pid) or (0, 0, 0.0))[2] - cpu_before
        counts = summary(output)
        if counts["status"]:
            raise RuntimeError(f"not every response was a 302:\n{output}")
        served, seconds = counts["requests"], counts["duration_us"] / 1e6
        say(f"redirector ({shown(argv, paths)}): {served:,} clicks in {seconds:.1f} s = "
            f"{served / seconds:,.0f} clicks/s; CPU {cpu / served * 1e6:.1f} µs per click "
            f"({cpu / seconds:.0%} of a core)")
        clicks = served + 1  # and check_redirects' one
        elapsed, classifier_cpu = drain(servers, exchange, out, clicks, args.env)
        say(f"classifier / redirector: clicks/s x{clicks / elapsed / (served / seconds):.2f}; "
            f"CPU per click x{classifier_cpu / clicks / (cpu / served):.3f} (one classifier "
            f"core keeps up with {cpu / served / (classifier_cpu / clicks):.1f} redirector "
            "cores)")


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
    both = commands.add_parser("keepup", help="a saturated redirector's clicks, then the "
                               "classifier draining them: the ratio")
    both.add_argument("--seconds", type=int, default=20, help="wrk's duration")
    both.add_argument("--connections", type=int, default=32)
    both.add_argument("--links", type=int, default=30_000)
    both.add_argument("--per-recipient", type=int, default=1)
    both.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                      help="a setting for the classifier (repeatable)")
    args = parser.parse_args()
    servers = Servers.from_environment()
    servers.preflight()
    (BENCH / "out").mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="classify-", dir=BENCH / "out"))
    say(f"logs in {out}")
    {"corpus": corpus, "rate": rate, "keepup": keepup}[args.command](args, servers, out)


if __name__ == "__main__":
    main()
