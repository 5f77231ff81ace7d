"""The domain lifecycle against Pebble, with every piece real: from `domain.created` to HTTPS.

    .venv/bin/python -m bench.lifecycle [--single 3] [--burst 50]

(a) `--single` domains, one after another: seconds from publishing `domain.created` to
    the row being verified, active, and to the first `302` over HTTPS through nginx
    (a link minted for the customer, fetched with SNI and Host = the new name and
    Pebble's root as the only trust anchor, like `curl --resolve`). Target: < 10 s.
(b) `--burst` domains created at once: seconds until every row is active and every
    domain answers 302 over HTTPS. Target: < 3 minutes for 50. Then the books are
    checked: exactly one order and one certificate per name in `acme_events`, as many
    orders in Pebble's log, every certbot run a success (no failed run's log kept, no
    "Another instance of Certbot" anywhere), and the certifier's own count of certbot
    runs at shutdown.

Each part gets its own stack (demo/world.py: a DNS server the bench
controls, Pebble resolving through it, nginx, and the verifier, certifier, redirector
and logger processes), its own scratch database and its own exchange namespace.
Needs RabbitMQ and PostgreSQL (bench/scratch.py says where it finds them), and pebble and
nginx on PATH (Debian packages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika

from bench.scratch import Servers, remove_namespace
from demo.databases import DatabaseFactory, fetch
from demo.net import first_redirect
from demo.processes import count_lines
from demo.world import World, local_world
from shared.broker.names import DOMAIN_CREATED
from shared.domain_status import DomainStatus
from shared.events import DomainCreated, encode_event
from shared.links import LinkSigner
from shared.settings import DatabaseSettings, parse_link_keys

HOST = "click.platform.bench"
LINK_KEYS = "bench:" + "bench-signing-secret-0123456789abcdefgh"
DESTINATION = "https://shop.example/bench"


@asynccontextmanager
async def bench_stack(directory: Path, servers: Servers, database: DatabaseSettings
                      ) -> AsyncIterator[tuple[World, str]]:
    exchange = f"bench-lifecycle-{uuid.uuid4().hex[:8]}"
    env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange, "DATABASE_URL": database.url,
           "TRACKING_HOST": HOST, "LINK_KEYS": LINK_KEYS,
           "SPOOL_DIR": str(directory / "spool"), "LOG_LEVEL": "INFO",
           # Metrics ports are fixed by default; the bench does not scrape them.
           "METRICS_BIND": "off"}
    try:
        with local_world(directory, env=env, tracking_host=HOST) as stack:
            yield stack, exchange
    finally:
        await remove_namespace(servers, exchange)


async def publish_created(amqp_url: str, exchange_name: str,
                          domains: list[tuple[str, str]]) -> float:
    """Publish `domain.created` for (name, customer) pairs at once; the clock's start."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        bodies = [encode_event(DomainCreated(domain=name, customer_id=customer),
                               source="/bench/platform") for name, customer in domains]
        started = time.monotonic()
        await asyncio.gather(*(exchange.publish(
            aio_pika.Message(body, content_type="application/cloudevents+json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=DOMAIN_CREATED, mandatory=True) for body in bodies))
        return started


async def statuses(database: DatabaseSettings) -> dict[str, str]:
    rows = await fetch(database, "SELECT name, status FROM tracking_domains")
    return {row["name"]: row["status"] for row in rows}


def link(signer: LinkSigner, customer: str) -> str:
    token = signer.mint_token(customer_id=customer, campaign_id="bench", recipient_id="r1",
                              url=DESTINATION)
    return f"/t/{token}"


async def single(stack: World, amqp_url: str, exchange: str, database: DatabaseSettings,
                 signer: LinkSigner, count: int) -> list[dict[str, float]]:
    results = []
    for number in range(count):
        name, customer = f"track.single-{number}.bench", f"single-{number}"
        stack.dns.cname(name, HOST)
        started = await publish_created(amqp_url, exchange, [(name, customer)])
        seen: dict[str, float] = {}

        async def watch(name: str = name, started: float = started,
                        seen: dict[str, float] = seen) -> None:
            while "active" not in seen:
                status = (await statuses(database)).get(name)
                if status in (DomainStatus.VERIFIED, DomainStatus.ACTIVE):
                    seen.setdefault("verified", time.monotonic() - started)
                if status == DomainStatus.ACTIVE:
                    seen["active"] = time.monotonic() - started
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        status, headers, _ = await asyncio.to_thread(
            first_redirect, stack.nginx.https_port, name, link(signer, customer),
            stack.trusted_context(), 60, 0.01)
        first_302 = time.monotonic() - started
        await asyncio.wait_for(watcher, 10)
        assert status == 302 and headers["Location"] == DESTINATION, (status, headers)
        result = {**seen, "first_302": first_302}
        results.append(result)
        print(f"  {name}: verified {result['verified']:.2f} s, active {result['active']:.2f} s,"
              f" first HTTPS 302 {first_302:.2f} s", flush=True)
    return results


async def burst(stack: World, amqp_url: str, exchange: str, database: DatabaseSettings,
                signer: LinkSigner, count: int) -> dict[str, Any]:
    domains = [(f"track.burst-{number}.bench", f"burst-{number}") for number in range(count)]
    for name, _ in domains:
        stack.dns.cname(name, HOST)
    started = await publish_created(amqp_url, exchange, domains)
    all_verified = None
    progress_at = time.monotonic()
    while True:
        now_statuses = await statuses(database)
        active = sum(1 for s in now_statuses.values() if s == DomainStatus.ACTIVE)
        verified = sum(1 for s in now_statuses.values()
                       if s in (DomainStatus.VERIFIED, DomainStatus.ACTIVE))
        if all_verified is None and verified == count:
            all_verified = time.monotonic() - started
        if active == count:
            break
        if time.monotonic() - progress_at > 15:
            progress_at = time.monotonic()
            print(f"  {time.monotonic() - started:6.1f} s: {verified} verified, "
                  f"{active} active", flush=True)
        if time.monotonic() - started > 600:
            raise AssertionError(f"only {active} of {count} active after 600 s")
        await asyncio.sleep(0.1)
    all_active = time.monotonic() - started
    context = stack.trusted_context()
    for name, customer in domains:
        status, headers, _ = await asyncio.to_thread(
            first_redirect, stack.nginx.https_port, name, link(signer, customer), context, 10)
        assert status == 302 and headers["Location"] == DESTINATION, (name, status)
    all_302 = time.monotonic() - started
    return {"verified": all_verified, "active": all_active, "all_302": all_302,
            "names": [name for name, _ in domains]}


async def audit(stack: World, database: DatabaseSettings, names: list[str]
                ) -> dict[str, Any]:
    """The books after a burst: one order and one certificate per name, no failed run."""
    rows = await fetch(database, "SELECT name, kind, count(*) AS n FROM acme_events "
                                 "GROUP BY name, kind")
    per_name: dict[str, dict[str, int]] = {}
    for row in rows:
        per_name.setdefault(row["name"], {})[row["kind"]] = row["n"]
    wanted = {"order": 1, "certificate": 1}
    wrong = {name: per_name.get(name) for name in names if per_name.get(name) != wanted}
    logs = stack.certbot_dir / "logs"
    failed_runs = [p.name for p in logs.iterdir() if p.is_dir() and p.name != "delete"] \
        if logs.exists() else []
    collision = "Another instance of Certbot"
    collisions = sum(path.read_text(errors="replace").count(collision)
                     for path in stack.certbot_dir.rglob("*.log")) \
        + stack.certifier.log_text().count(collision)
    pebble = stack.pebble_log()
    certifier_log = stack.certifier.log_text()
    return {
        "orders": sum(v.get("order", 0) for v in per_name.values()),
        "certificates": sum(v.get("certificate", 0) for v in per_name.values()),
        "failed_validations": sum(v.get("failed_validation", 0) for v in per_name.values()),
        "names_not_exactly_one_order_and_certificate": wrong,
        "pebble_orders": count_lines(pebble, "Added order"),
        "pebble_certificates": count_lines(pebble, "Issued certificate serial"),
        "certify_issued": count_lines(certifier_log, '"certificate.certify"', '"issued"'),
        "certify_retries": count_lines(certifier_log, '"certificate.certify"', '"retry"'),
        "failed_certbot_run_logs": failed_runs,
        "certbot_collisions": collisions,
    }


def stopped_line(stack: World) -> dict[str, Any]:
    for line in stack.certifier.log_text().splitlines():
        if '"certifier.stopped"' in line:
            return json.loads(line)
    return {}


async def main(args: argparse.Namespace) -> None:
    servers = Servers.from_environment()
    amqp_url = servers.amqp_url
    signer = LinkSigner(parse_link_keys(LINK_KEYS))
    factory = DatabaseFactory(servers.admin_database_url)
    await factory.prepare()
    root = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    try:
        if args.single:
            print(f"(a) {args.single} domains, one at a time: domain.created -> first HTTPS 302",
                  flush=True)
            database = await factory.create()
            async with bench_stack(root / "single", servers, database) as (stack, exchange):
                results = await single(stack, amqp_url, exchange, database, signer,
                                       args.single)
                stack.terminate()
            firsts = [r["first_302"] for r in results]
            print(f"RESULT (a): first HTTPS 302 median {statistics.median(firsts):.2f} s, "
                  f"max {max(firsts):.2f} s (target < 10 s); active median "
                  f"{statistics.median(r['active'] for r in results):.2f} s, verified median "
                  f"{statistics.median(r['verified'] for r in results):.3f} s", flush=True)
        if args.burst:
            print(f"(b) {args.burst} domains created at once", flush=True)
            database = await factory.create()
            async with bench_stack(root / "burst", servers, database) as (stack, exchange):
                figures = await burst(stack, amqp_url, exchange, database, signer, args.burst)
                books = await audit(stack, database, figures["names"])
                statuses_at_exit = stack.terminate()
                stopped = stopped_line(stack)
            print(f"RESULT (b): {args.burst} domains: all verified {figures['verified']:.2f} s, "
                  f"all active {figures['active']:.1f} s "
                  f"({figures['active'] / args.burst:.2f} s per domain; target < 180 s), "
                  f"all answering HTTPS 302 by {figures['all_302']:.1f} s", flush=True)
            print(f"  acme_events: {books['orders']} orders, {books['certificates']} "
                  f"certificates, {books['failed_validations']} failed validations; names "
                  f"without exactly one order and one certificate: "
                  f"{books['names_not_exactly_one_order_and_certificate'] or 'none'}")
            print(f"  Pebble: {books['pebble_orders']} orders, {books['pebble_certificates']} "
                  f"certificates issued")
            print(f"  certifier: {books['certify_issued']} issued, {books['certify_retries']} "
                  f"retries; at shutdown certbot_runs={stopped.get('certbot_runs')}, "
                  f"outcomes={stopped.get('outcomes')}")
            print(f"  certbot: failed-run logs kept {len(books['failed_certbot_run_logs'])}, "
                  f"'Another instance of Certbot' {books['certbot_collisions']} times; "
                  f"service exit statuses {statuses_at_exit}", flush=True)
            clean = (books["orders"] == books["certificates"] == books["pebble_orders"]
                     == args.burst and not books["names_not_exactly_one_order_and_certificate"]
                     and not books["failed_certbot_run_logs"] and not books["certbot_collisions"]
                     and stopped.get("certbot_runs") == args.burst)
            print(f"  books clean (no collision, no duplicate order): {clean}", flush=True)
            if not clean:
                raise SystemExit(1)
        print(f"(service logs in {root})")
    finally:
        await factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=3)
    parser.add_argument("--burst", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
