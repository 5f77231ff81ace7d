"""`trackctl certificates keys|reseal`: a CERT_STORE_KEYS rotation finished by re-encrypting
every private key and the ACME account under the new key (the real CLI, real PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess

from demo.databases import execute
from demo.processes import ROOT
from shared.certificates import AcmeAccounts, CertStore, Keyring
from shared.db.engine import create_engine
from shared.settings import CERT_STORE_KEYS, DatabaseSettings
from tests.support.certificates import self_signed_pem

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
OLD = "k2026:" + "o" * 40
NEW = "k2027:" + "n" * 40
SERVER = "https://acme.test/dir"


def trackctl(database: DatabaseSettings, keys: str,
             *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database.url, "CERT_STORE_KEYS": keys}
    return subprocess.run([str(TRACKCTL), "certificates", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


async def test_a_rotation_is_finished_by_reseal(database: DatabaseSettings) -> None:
    engine = create_engine(database)
    try:
        old = Keyring(CERT_STORE_KEYS.parse(OLD))
        keys = {}
        for n in range(3):
            name = f"d{n}.test"
            await execute(database, "INSERT INTO tracking_domains (name, customer_id, status, "
                                    "verified) VALUES ($1, 'c', 'active', true)", name)
            chain, keys[name] = self_signed_pem(name)
            await CertStore(engine, old).put(name, chain, keys[name])
        await AcmeAccounts(engine, old).save(SERVER, "acct1", {"x/regr.json": "{}"})

        before = trackctl(database, f"{NEW},{OLD}", "keys", "--json")
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout)["sealed_by_kid"] == {"k2026": 3,
                                                              "k2026 (account)": 1}
        refused = trackctl(database, NEW, "reseal")  # the old key already removed: too soon
        assert refused.returncode == 1
        assert "k2026" in refused.stderr and "o" * 10 not in refused.stderr

        done = trackctl(database, f"{NEW},{OLD}", "reseal")
        assert done.returncode == 0, done.stderr
        assert "resealed under k2027: 3 private key(s), 1 ACME account(s)" in done.stdout
        after = json.loads(trackctl(database, NEW, "keys", "--json").stdout)
        assert after["sealed_by_kid"] == {"k2027": 3, "k2027 (account)": 1}
        assert after["unlisted_kids"] == []

        new = Keyring(CERT_STORE_KEYS.parse(NEW))
        assert {c.name: c.key_pem for c in await CertStore(engine, new).served()} == keys
        assert await AcmeAccounts(engine, new).load(SERVER) == ("acct1", {"x/regr.json": "{}"})
    finally:
        await engine.dispose()
