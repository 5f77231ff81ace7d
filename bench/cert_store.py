"""The certificate store at 1,000 and 10,000 domains: bytes per certificate in PostgreSQL,
the cost of storing one, and of the reads an edge makes (one domain; every served one
with its key decrypted; only name and serial).

    python -m bench.cert_store [--domains 1000,10000]

Each size gets a fresh database (dropped afterwards). Chains are shaped like Let's
Encrypt's ECDSA ones: a P-256 leaf signed by a P-384 intermediate, leaf first, and a
P-256 key, as certbot makes by default. Figures are wall-clock on a shared machine:
compare the sizes with each other (the ratios), not with another run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from bench.progress import say
from bench.scratch import Servers, dsn, fresh_database
from shared.certificates import CertStore, Keyring
from shared.db.engine import create_engine
from shared.settings import CERT_STORE_KEYS, DatabaseSettings

OLD_KEYS = "bench2026:" + "bench-store-secret-0123456789abcdefgh"
NEW_KEYS = "bench2027:" + "bench-store-secret-9876543210zyxwvuts"


def chains(count: int) -> list[tuple[str, str, bytes]]:
    """(name, chain PEM, key PEM) for `count` domains under one intermediate."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench Encrypt"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "E9")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=900))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA384()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    made = []
    for n in range(count):
        name = f"track.customer-{n:06d}.bench.test"
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                               critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA384()))
        made.append((name, leaf.public_bytes(serialization.Encoding.PEM).decode() + ca_pem,
                     key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())))
    return made


async def measure(database: DatabaseSettings, count: int) -> dict[str, float]:
    made = chains(count)
    connection = await asyncpg.connect(dsn(database))
    try:
        await connection.executemany(
            "INSERT INTO tracking_domains (name, customer_id, status, verified) "
            "VALUES ($1, 'bench', 'active', true)", [(name,) for name, _, _ in made])
    finally:
        await connection.close()
    engine = create_engine(database, pool_size=2)
    try:
        store = CertStore(engine, Keyring(CERT_STORE_KEYS.parse(OLD_KEYS)))
        started = time.perf_counter()
        for name, chain, key in made:
            await store.put(name, chain, key)
        put_s = time.perf_counter() - started
        async with engine.connect() as sql:  # before any update leaves dead rows behind
            size = (await sql.execute(text(
                "SELECT pg_total_relation_size('certificates')"))).scalar_one()
        started = time.perf_counter()
        served = await store.served()
        served_s = time.perf_counter() - started
        assert len(served) == count
        started = time.perf_counter()
        serials = await store.served_serials()
        serials_s = time.perf_counter() - started
        assert len(serials) == count
        sample = [name for name, _, _ in made[:: max(count // 200, 1)]]
        started = time.perf_counter()
        for name in sample:
            await store.get(name)
        get_s = (time.perf_counter() - started) / len(sample)
        rotated = CertStore(engine, Keyring(CERT_STORE_KEYS.parse(f"{NEW_KEYS},{OLD_KEYS}")))
        started = time.perf_counter()
        resealed = await rotated.reseal()
        reseal_s = time.perf_counter() - started
        assert resealed == count
        chain_bytes = sum(len(chain) + len(key) for _, chain, key in made) / count
    finally:
        await engine.dispose()
    return {"bytes_per_row": size / count, "pem_bytes": chain_bytes,
            "put_ms": put_s / count * 1000, "served_s": served_s, "serials_s": serials_s,
            "get_ms": get_s * 1000, "reseal_ms": reseal_s / count * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cert_store")
    parser.add_argument("--domains", default="1000,10000",
                        help="comma-separated sizes (default 1000,10000)")
    args = parser.parse_args()
    servers = Servers.from_environment()
    servers.preflight()
    results = {}
    for count in (int(n) for n in args.domains.split(",")):
        say(f"{count} domains: making chains, storing, reading")
        with fresh_database(servers, "certstore") as database:
            results[count] = asyncio.run(measure(database, count))
    say("domains  bytes/row (PEM in)  put ms  get ms  served() s  served_serials() s  "
        "reseal ms/row")
    for count, r in results.items():
        say(f"{count:>7}  {r['bytes_per_row']:>6.0f} ({r['pem_bytes']:.0f})  "
            f"{r['put_ms']:>6.2f}  {r['get_ms']:>6.2f}  {r['served_s']:>10.3f}  "
            f"{r['serials_s']:>18.3f}  {r['reseal_ms']:>13.2f}")
    if len(results) > 1:
        small, large = min(results), max(results)
        ratio = large / small
        say(f"growth {small} -> {large} (x{ratio:g} domains): served() "
            f"x{results[large]['served_s'] / results[small]['served_s']:.1f}, "
            f"served_serials() x{results[large]['serials_s'] / results[small]['serials_s']:.1f}"
            f", put per row x{results[large]['put_ms'] / results[small]['put_ms']:.2f}, "
            f"get x{results[large]['get_ms'] / results[small]['get_ms']:.2f}")


if __name__ == "__main__":
    main()
