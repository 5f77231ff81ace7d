"""Verification concurrency: N `domain.created` judged against a DNS server that answers
every query after a fixed latency, by the real verifier process, compared with a serial
verifier (the same process with VERIFIER_PREFETCH=1) measured in the same run.

    .venv/bin/python -m bench.verify [--domains 1000] [--latency-ms 50] [--serial-domains 100]

Needs RabbitMQ and PostgreSQL (bench/scratch.py says where it finds them; a scratch
database is created and dropped). The DNS server (demo/dns.py) runs in this process on
127.0.0.1; every domain is a one-hop CNAME to the platform host, so each check asks 4
questions (the CNAME, and CAA at the name, its parent and the top-level domain), all
delayed by the latency.

The clock runs from the first publish until the last domain.verified arrives on a queue
bound by the benchmark. The serial run times `--serial-domains` and is scaled linearly to
`--domains` (timing a full serial run would take minutes); pass the same number to both to
time it whole.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika

from bench.scratch import Servers
from demo.databases import DatabaseFactory
from demo.dns import DnsServer
from demo.processes import ServiceProcess
from shared.broker import topology as broker_topology
from shared.broker.names import DOMAIN_CREATED, DOMAIN_REJECTED, DOMAIN_VERIFIED
from shared.events import DomainCreated, encode_event

HOST = "click.platform.bench"


async def run_once(*, label: str, domains: list[str], prefetch: int, dns: DnsServer,
                   amqp_url: str, database_url: str, log_dir: Path) -> float:
    """Seconds from the first publish to the last verdict, with a fresh namespace."""
    exchange_name = f"bench-verify-{uuid.uuid4().hex[:8]}"
    topology = broker_topology.Topology(exchange_name)
    env = {
        "AMQP_URL": amqp_url, "AMQP_EXCHANGE": exchange_name, "DATABASE_URL": database_url,
        "TRACKING_HOST": HOST, "DNS_NAMESERVERS": dns.address, "DNS_TIMEOUT_S": "10",
        "VERIFIER_PREFETCH": str(prefetch), "LOG_LEVEL": "WARNING",
        "VERIFIER_SCHEDULE_POLL_S": "3600",
    }
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await broker_topology.declare(channel, topology)
        observed = await channel.declare_queue(f"{exchange_name}.bench", exclusive=True)
        for key in (DOMAIN_VERIFIED, DOMAIN_REJECTED):
            await observed.bind(exchange, key)
        verifier = ServiceProcess("verifier", {**env, "LOG_LEVEL": "INFO"}, log_dir)
        with verifier:
            await asyncio.to_thread(verifier.wait_for_log, "verifier.started", 60)
            judged_count: dict[str, int] = {}
            done = asyncio.Event()

            async def on_verdict(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                outcome = message.routing_key or "?"
                judged_count[outcome] = judged_count.get(outcome, 0) + 1
                if sum(judged_count.values()) >= len(domains):
                    done.set()

            await observed.consume(on_verdict, no_ack=True)
            bodies = [encode_event(DomainCreated(domain=d, customer_id=f"bench-{i}"),
                                   source="/bench/verify") for i, d in enumerate(domains)]
            started = time.perf_counter()
            for chunk in range(0, len(bodies), 200):
                await asyncio.gather(*(exchange.publish(
                    aio_pika.Message(body, content_type="application/cloudevents+json",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=DOMAIN_CREATED, mandatory=True)
                    for body in bodies[chunk:chunk + 200]))
            published = time.perf_counter() - started
            await asyncio.wait_for(done.wait(), timeout=3600)
            elapsed = time.perf_counter() - started
            verifier.terminate()
        print(f"{label}: {len(domains)} domains judged in {elapsed:.2f} s "
              f"(prefetch {prefetch}; publishing took {published:.2f} s; "
              f"verdicts {judged_count})", flush=True)
        return elapsed
    finally:
        await broker_topology.delete(await connection.channel(), topology)
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    servers = Servers.from_environment()
    amqp_url = servers.amqp_url
    factory = DatabaseFactory(servers.admin_database_url)
    await factory.prepare()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        with DnsServer(delay_s=args.latency_ms / 1000) as dns:
            dns.a(HOST, "192.0.2.10")
            names = [f"track.c{i}.bench" for i in range(args.domains + args.serial_domains)]
            for name in names:
                dns.cname(name, HOST)
            database = await factory.create()
            concurrent = await run_once(
                label="concurrent", domains=names[:args.domains], prefetch=args.prefetch,
                dns=dns, amqp_url=amqp_url, database_url=database.url, log_dir=log_dir)
            queries = sum(dns.queries.values())
            serial = await run_once(
                label="serial", domains=names[args.domains:], prefetch=1, dns=dns,
                amqp_url=amqp_url, database_url=database.url, log_dir=log_dir)
        scaled = serial * args.domains / args.serial_domains
        print(f"DNS latency {args.latency_ms} ms per query; {queries / args.domains:.1f} "
              f"queries per domain", flush=True)
        print(f"RESULT: {args.domains} domains in {concurrent:.2f} s concurrently; "
              f"serial {serial:.2f} s for {args.serial_domains} -> {scaled:.1f} s for "
              f"{args.domains} (scaled); speed-up x{scaled / concurrent:.1f}", flush=True)
        print(f"(service logs in {log_dir})")
    finally:
        await factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--serial-domains", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=256)
    asyncio.run(main(parser.parse_args()))
