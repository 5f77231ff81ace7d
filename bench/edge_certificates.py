"""One edge with many certificates: today's include-and-reload design against the edge
agent's per-handshake files, side by side in one run, at each domain count asked for.

    python -m bench.edge_certificates [--counts 1000,10000] [--new 20]
    python -m bench.edge_certificates --first-sync [--counts 1000,10000]

For each count N, each design gets a fresh nginx (one worker) holding N certificates,
then `--new` certificates arrive one after another:

- reload: N server blocks with fixed certificate paths (bench/include_reload.py: the
  design the certifier used before the edge agent, kept here only as the baseline); a
  new certificate is its file on disk, the include rendered again and `nginx -s reload`,
  until a handshake shows the new serial.
- edge: the edge agent (`python -m services.edge`, its own process) with N certificates in
  the store (PostgreSQL); a new certificate is `CertStore.put` + `certificate.issued`
  on the broker, until a handshake shows the new serial (what "served" means for both).

Reported per design: memory (RSS of nginx's master and workers, and of the agent), time
from the new certificate to its serial served (p50, p95, max), CPU seconds per new
certificate (nginx, reaped old workers included, and the agent), and the time of 200
sequential TLS handshakes to a served name (what per-handshake file reading costs; the
client is Python on the same two cores, so read it as a ratio).

`--first-sync` measures only a new edge's first sync (`Edge.reconcile` with nothing
installed: every certificate fetched, written, confirmed by a handshake, recorded and
announced) against one store and one nginx per count, twice in the same run: one domain
at a time (files written, handshakes and announcements awaited one by one, as the agent
did before) and in bulk (the agent's defaults), with the CPU each costs per domain (the
agent's process, here the bench's, and nginx's). The files and rows are cleared between
the two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.cpu import process_cpu
from bench.include_reload import render_blocks
from bench.progress import say
from bench.scratch import Servers, fresh_database, fresh_namespace
from demo.databases import execute
from demo.nginx import Nginx, certificate_directory, worker_group
from demo.processes import ServiceProcess
from services.edge.database import EdgeRecords
from services.edge.handlers import Edge
from services.edge.nginx import CertificateFiles, ensure_include, render_include
from shared.broker import topology as broker_topology
from shared.broker.publisher import Publisher
from shared.certificates import CertStore, Keyring
from shared.db.engine import create_engine
from shared.events import CertificateIssued
from shared.handshake import local_address, presented_serial
from shared.metrics import EdgeMetrics, new_registry
from shared.settings import CERT_STORE_KEYS, DatabaseSettings

KEYS = "bench:" + "b" * 40
HANDSHAKES = 200


@dataclass
class Result:
    design: str
    domains: int
    nginx_rss_mb: float
    agent_rss_mb: float
    latencies_s: list[float]
    cpu_per_certificate_s: float
    handshakes_s: float
    startup_s: float

    def line(self) -> str:
        lat = sorted(self.latencies_s)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        return (f"{self.design:7} {self.domains:6}  nginx {self.nginx_rss_mb:7.1f} MB  "
                f"agent {self.agent_rss_mb:6.1f} MB  start {self.startup_s:6.1f} s  "
                f"new→served p50 {statistics.median(lat):.3f} s p95 {p95:.3f} s "
                f"max {lat[-1]:.3f} s  CPU/cert {self.cpu_per_certificate_s:.3f} s  "
                f"{HANDSHAKES} handshakes {self.handshakes_s:.2f} s")


class Issuer:
    """Certificates for the bench: one EC key for all (signing is what is cheap), a new
    serial each, self-signed: nginx parses each file all the same."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_pem = self.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def chain(self, name: str) -> tuple[str, str]:
        """(chain PEM, serial in hex)."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(self.key, hashes.SHA256()))
        return (certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                format(certificate.serial_number, "x"))


def names(count: int) -> list[str]:
    return [f"t{i:06d}.customer.bench" for i in range(count)]


def rss_mb(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def family(pid: int) -> list[int]:
    """`pid` and its children (nginx's master and workers)."""
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = process_cpu(int(entry.name))
            if found is not None and found[1] == pid:
                children.append(int(entry.name))
    return [pid, *children]


def cpu_seconds(pid: int) -> float:
    """CPU of `pid`, of its children alive now, and of the children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    own = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    alive = sum((process_cpu(child) or ("", 0, 0.0))[2] for child in family(pid)[1:])
    return own + alive


async def wait_serial(port: int, name: str, serial: str, timeout_s: float = 60) -> float:
    started = time.monotonic()
    while await presented_serial("127.0.0.1", port, name) != serial:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{name} never presented {serial}")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def handshakes(port: int, name: str) -> float:
    started = time.monotonic()
    for _ in range(HANDSHAKES):
        assert await presented_serial("127.0.0.1", port, name) is not None
    return time.monotonic() - started


def nginx_pid(nginx: Nginx) -> int:
    assert nginx.process is not None
    return nginx.process.pid


async def reload_design(issuer: Issuer, count: int, new: int, work: Path) -> Result:
    """Today's: a server block per domain, a reload per new certificate."""
    live = work / "live"
    live.mkdir()
    (live / "key.pem").write_bytes(issuer.key_pem)
    serials: dict[str, str] = {}
    for name in names(count):
        chain, serials[name] = issuer.chain(name)
        (live / f"{name}.pem").write_text(chain)

    def include(https_listen: str) -> str:
        return render_blocks({n: live / f"{n}.pem" for n in serials}, live / "key.pem",
                             https_listen=https_listen)

    nginx = Nginx(work / "nginx", upstreams=["127.0.0.1:9"])
    with nginx:
        began = time.monotonic()
        nginx.include.write_text(include(nginx.https_listen))
        await reload(nginx)
        first = names(count)[0]
        await wait_serial(nginx.https_port, first, serials[first], timeout_s=300)
        startup = time.monotonic() - began
        pid = nginx_pid(nginx)
        cpu_before = cpu_seconds(pid)
        latencies, peak = [], rss_mb(family(pid))
        for i in range(new):
            name = names(count)[i * (count // new)]
            chain, serials[name] = issuer.chain(name)
            started = time.monotonic()
            (live / f"{name}.pem").write_text(chain)
            nginx.include.write_text(include(nginx.https_listen))
            await reload(nginx)
            await wait_serial(nginx.https_port, name, serials[name], timeout_s=300)
            latencies.append(time.monotonic() - started)
            peak = max(peak, rss_mb(family(pid)))
        await asyncio.sleep(1)  # old workers reaped: their CPU lands in the master's
        cpu = (cpu_seconds(pid) - cpu_before) / new
        shakes = await handshakes(nginx.https_port, first)
    return Result("reload", count, peak, 0.0, latencies, cpu, shakes, startup)


async def reload(nginx: Nginx) -> None:
    process = await asyncio.create_subprocess_exec(*nginx.reload_command)
    if await process.wait() != 0:
        raise RuntimeError("nginx -s reload failed")


async def fill_store(database: DatabaseSettings, issuer: Issuer, count: int) -> CertStore:
    for start in range(0, count, 1000):
        batch = names(count)[start:start + 1000]
        await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                      "verified) SELECT unnest($1::text[]), 'bench', 'active', true", batch)
    engine = create_engine(database)
    store = CertStore(engine, Keyring(CERT_STORE_KEYS.parse(KEYS)))
    for name in names(count):
        await store.put(name, issuer.chain(name)[0], issuer.key_pem)
    return store


async def edge_design(issuer: Issuer, count: int, new: int, work: Path,
                      servers: Servers, database: DatabaseSettings, exchange: str) -> Result:
    """The edge agent: one file per domain, read at each handshake; events, no reload."""
    say(f"  edge {count}: filling the store")
    store = await fill_store(database, issuer, count)
    cert_dir = certificate_directory("bench-edge-")
    nginx = Nginx(work / "nginx", upstreams=["127.0.0.1:9"], cert_dir=cert_dir)
    env = {"AMQP_URL": servers.amqp_url, "AMQP_EXCHANGE": exchange,
           "DATABASE_URL": database.url, "CERT_STORE_KEYS": KEYS, "EDGE_ID": "bench",
           "EDGE_CERT_DIR": str(cert_dir), "EDGE_CERT_GROUP": worker_group() or "",
           "NGINX_CONF_PATH": str(nginx.include), "NGINX_HTTPS_LISTEN": nginx.https_listen,
           "NGINX_HTTP_LISTEN": nginx.http_listen, "NGINX_UPSTREAMS": "127.0.0.1:9",
           "METRICS_BIND": "off", "LOG_LEVEL": "INFO"}
    try:
        with nginx, ServiceProcess("edge", env, work) as agent:
            began = time.monotonic()
            # The first sync (every certificate installed and shaken hands for) is done
            # before the agent says it started.
            await asyncio.to_thread(agent.wait_for_log, "edge.started", 900)
            startup = time.monotonic() - began
            first = names(count)[0]
            stored = await store.get(first)
            assert stored is not None
            await wait_serial(nginx.https_port, first, stored.serial)
            assert len(list(cert_dir.glob("*.pem"))) == count
            assert agent.process is not None
            pids = [nginx_pid(nginx), agent.process.pid]
            async with await aio_pika.connect(servers.amqp_url) as connection:
                channel = await connection.channel()
                topology = broker_topology.Topology(exchange)
                exchange_ = await broker_topology.declare(channel, topology)
                publisher = Publisher(channel, exchange_, source="/bench/edge")
                cpu_before = sum(cpu_seconds(pid) for pid in pids)
                latencies = []
                for i in range(new):
                    name = names(count)[i * (count // new)]
                    chain, serial = issuer.chain(name)
                    started = time.monotonic()
                    put = await store.put(name, chain, issuer.key_pem)
                    await publisher.publish_event(CertificateIssued(
                        domain=name, customer_id="bench", not_before=put.not_before,
                        not_after=put.not_after, serial=serial))
                    await wait_serial(nginx.https_port, name, serial)
                    latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.5)
                cpu = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / new
                nginx_rss = rss_mb(family(pids[0]))
                agent_rss = rss_mb([pids[1]])
                shakes = await handshakes(nginx.https_port, first)
                for queue in broker_topology.edge_queue_names(topology, "bench"):
                    await channel.queue_delete(queue)
    finally:
        shutil.rmtree(cert_dir.parent, ignore_errors=True)
    return Result("edge", count, nginx_rss, agent_rss, latencies, cpu, shakes, startup)


async def first_sync(issuer: Issuer, count: int, work: Path, servers: Servers,
                     database: DatabaseSettings, exchange: str) -> list[str]:
    """A new edge's first sync, one domain at a time and in bulk; returns result lines."""
    say(f"  first sync {count}: filling the store")
    store = await fill_store(database, issuer, count)
    cert_dir = certificate_directory("bench-first-")
    nginx = Nginx(work / "nginx", upstreams=["127.0.0.1:9"], cert_dir=cert_dir)
    files = CertificateFiles(cert_dir, group=worker_group())
    engine = create_engine(database)
    lines: list[str] = []
    try:
        with nginx:
            files.prepare()
            await ensure_include(nginx.include, render_include(
                cert_dir=cert_dir.resolve(), https_listen=nginx.https_listen,
                http_listen=nginx.http_listen, upstreams=["127.0.0.1:9"]),
                nginx.reload_command)
            async with await aio_pika.connect(servers.amqp_url) as connection:
                channel = await connection.channel()
                topology = broker_topology.Topology(exchange)
                publisher = Publisher(channel, await broker_topology.declare(channel, topology),
                                      source="/bench/edge")
                seconds: dict[str, float] = {}
                for design, one_at_a_time in (("serial", True), ("bulk", False)):
                    for leftover in cert_dir.glob("*.pem"):
                        leftover.unlink()
                    await execute(database, "DELETE FROM edge_certificates")
                    edge = Edge(edge_id="bench", store=store,
                                records=EdgeRecords(engine, "bench"), files=files,
                                publisher=publisher,
                                metrics=EdgeMetrics(new_registry(process=False), "bench"),
                                verify_address=local_address(nginx.https_listen))
                    if one_at_a_time:
                        edge.write_concurrency = edge.confirm_concurrency = 1
                        edge.announce_concurrency = 1
                    edge.load()
                    began, cpu = time.monotonic(), time.process_time()
                    nginx_cpu = cpu_seconds(nginx_pid(nginx))
                    counts = await edge.reconcile()
                    seconds[design] = time.monotonic() - began
                    cpu = time.process_time() - cpu
                    nginx_cpu = cpu_seconds(nginx_pid(nginx)) - nginx_cpu
                    assert counts["installed"] == counts["announced"] == count, counts
                    lines.append(f"first sync {design:6} {count:6}  {seconds[design]:7.1f} s  "
                                 f"{count / seconds[design]:7.0f} domains/s  CPU/domain: "
                                 f"agent {cpu / count * 1000:.2f} ms "
                                 f"nginx {nginx_cpu / count * 1000:.2f} ms")
                    say(lines[-1])
                lines.append(f"first sync bulk/serial {count:6}  "
                             f"x{seconds['serial'] / seconds['bulk']:.1f} faster")
    finally:
        await engine.dispose()
        shutil.rmtree(cert_dir.parent, ignore_errors=True)
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_certificates")
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--new", type=int, default=20)
    parser.add_argument("--first-sync", action="store_true",
                        help="only a new edge's first sync: one at a time against in bulk")
    args = parser.parse_args(argv)
    servers = Servers.from_environment()
    servers.preflight()
    issuer = Issuer()
    if args.first_sync:
        lines: list[str] = []
        for count in (int(c) for c in args.counts.split(",")):
            with tempfile.TemporaryDirectory(prefix="bench-first-") as scratch, \
                    fresh_database(servers, "edge") as database, \
                    fresh_namespace(servers, "edge") as exchange:
                lines += asyncio.run(first_sync(issuer, count, Path(scratch), servers,
                                                database, exchange))
        print("\n".join(lines))
        return
    results: list[Result] = []
    for count in (int(c) for c in args.counts.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-reload-") as scratch:
            say(f"reload {count}")
            results.append(asyncio.run(reload_design(issuer, count, args.new, Path(scratch))))
            say(results[-1].line())
        with tempfile.TemporaryDirectory(prefix="bench-edge-") as scratch, \
                fresh_database(servers, "edge") as database, \
                fresh_namespace(servers, "edge") as exchange:
            say(f"edge {count}")
            results.append(asyncio.run(edge_design(issuer, count, args.new, Path(scratch),
                                                   servers, database, exchange)))
            say(results[-1].line())
    print("\n".join(result.line() for result in results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
