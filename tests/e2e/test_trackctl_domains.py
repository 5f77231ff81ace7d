"""`trackctl domain add|list|show|recheck|delete` against the real verifier process, a DNS
server the test controls, the real broker and a fresh database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from demo.databases import execute, fetch
from demo.dns import DnsServer
from demo.processes import ROOT, ServiceProcess
from shared.broker.topology import Topology
from shared.settings import BrokerSettings, DatabaseSettings
from tests.conftest import TRACKING_HOST, service_env

TRACKCTL = ROOT / ".venv" / "bin" / "trackctl"
A = "track.customer-a.test"
B = "track.customer-b.test"


async def trackctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [str(TRACKCTL), "domain", *args],
                                   env={**os.environ, **env}, cwd=ROOT, capture_output=True,
                                   text=True, timeout=60)


async def wait_row(database: DatabaseSettings, name: str, status: str | None,
                   timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Until the row has `status` (None: until there is no row)."""
    deadline = time.monotonic() + timeout_s
    rows: list[Any] = []
    while time.monotonic() < deadline:
        rows = await fetch(database, "SELECT * FROM tracking_domains WHERE name = $1", name)
        if status is None and not rows:
            return None
        if rows and rows[0]["status"] == status:
            return dict(rows[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never became {status}: {[dict(r) for r in rows]}")


async def wait_logged(process: ServiceProcess, event: str, timeout_s: float = 10.0,
                      **fields: str) -> None:
    """Until the service logged a JSON line for `event` with these fields."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in process.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event and all(
                    record.get(k) == v for k, v in fields.items()):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} {fields} in:\n{process.log_text()[-3000:]}")


async def test_domain_commands_drive_the_real_verifier(
        broker: BrokerSettings, database: DatabaseSettings, topology: Topology,
        tmp_path: Path) -> None:
    with DnsServer() as dns:
        dns.a(TRACKING_HOST, "127.0.0.1")
        dns.cname(A, TRACKING_HOST)
        dns.cname(B, "click.other-esp.test")
        dns.a("click.other-esp.test", "192.0.2.7")
        # Retry tiers as the `topology` fixture's (it deletes them); a 1 s deadline so a
        # wrong domain is rejected at once.
        env = service_env(broker, database, tmp_path, DNS_NAMESERVERS=dns.address,
                          DNS_TIMEOUT_S="1", VERIFIER_RETRY_DELAYS_MS="200,400",
                          VERIFIER_SCHEDULE_POLL_S="0.2", VERIFY_DEADLINE_S="1")
        with ServiceProcess("verifier", env, tmp_path) as verifier:
            await asyncio.to_thread(verifier.wait_for_log, "verifier.started")

            added = await trackctl(env, "add", "Track.Customer-A.test", "--customer", "cust-a")
            assert added.returncode == 0, added.stderr
            assert f"published domain.created for {A} (customer cust-a)" in added.stdout
            row = await wait_row(database, A, "verified")
            assert row is not None and row["dns_chain"] == f"{A} -> {TRACKING_HOST}"
            added_b = await trackctl(env, "add", B, "--customer", "cust-b", "--json")
            assert json.loads(added_b.stdout)["event_id"]
            rejected = await wait_row(database, B, "rejected")
            assert rejected is not None and rejected["last_error"].startswith("wrong_target")

            # Read-only commands (run side by side), and names that can never work, refused
            # before anything is published.
            await execute(database, "INSERT INTO acme_events (kind, name, registered_domain) "
                                    "VALUES ('order', $1, 'customer-a.test')", A)
            (bad, platform, everything, only_b, table, sleepy, shown, shown_json,
             missing) = await asyncio.gather(
                trackctl(env, "add", "not a name", "--customer", "c"),
                trackctl(env, "add", TRACKING_HOST, "--customer", "c"),
                trackctl(env, "list", "--json"),
                trackctl(env, "list", "--status", "rejected", "--json"),
                trackctl(env, "list", "--customer", "cust-a"),
                trackctl(env, "list", "--status", "sleepy"),
                trackctl(env, "show", A),
                trackctl(env, "show", A, "--json"),
                trackctl(env, "show", "nope.customer-z.test"))
            assert bad.returncode == 2 and "cannot be a tracking domain" in bad.stderr
            assert platform.returncode == 2 and "platform" in platform.stderr
            assert [(d["name"], d["status"]) for d in json.loads(everything.stdout)] == [
                (A, "verified"), (B, "rejected")]
            assert [d["name"] for d in json.loads(only_b.stdout)] == [B]
            assert table.returncode == 0 and A in table.stdout and B not in table.stdout
            assert "1 domain for customer cust-a" in table.stdout
            assert sleepy.returncode == 2
            assert shown.returncode == 0, shown.stderr
            assert "status:" in shown.stdout and "verified" in shown.stdout
            assert f"{A} -> {TRACKING_HOST}" in shown.stdout and "order" in shown.stdout
            details = json.loads(shown_json.stdout)
            assert details["matched_by"] == "cname"
            assert [e["kind"] for e in details["acme_events"]] == ["order"]
            assert missing.returncode == 1 and "no tracking domain" in missing.stderr

            # recheck of a rejected domain after DNS is fixed: verification starts afresh.
            dns.cname(B, TRACKING_HOST)
            again = await trackctl(env, "recheck", B)
            assert again.returncode == 0, again.stderr
            assert "restarts verification" in again.stdout
            await wait_row(database, B, "verified")

            # recheck of a verified domain: domain.verified again, and its DNS checked by
            # the verifier's schedule at once.
            rechecked = json.loads((await trackctl(env, "recheck", A, "--json")).stdout)
            assert rechecked["dns_check_scheduled"] is True
            await wait_logged(verifier, "domain.rechecked", domain=A, outcome="still-verified")

            # delete needs --yes, then the verifier forgets the domain.
            unconfirmed = await trackctl(env, "delete", B)
            assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
            other = await trackctl(env, "delete", B, "--customer", "cust-a", "--yes")
            assert other.returncode == 1 and "belongs to customer cust-b" in other.stderr
            deleted = await trackctl(env, "delete", B, "--yes")
            assert deleted.returncode == 0, deleted.stderr
            await wait_row(database, B, None)
            gone = await trackctl(env, "recheck", B)
            assert gone.returncode == 1 and "no tracking domain" in gone.stderr

    # A mistyped exchange is an error, not a new namespace nobody consumes.
    typo = await trackctl({**env, "AMQP_EXCHANGE": f"{broker.exchange}-typo"}, "add",
                          "track.customer-c.test", "--customer", "cust-c")
    assert typo.returncode == 1 and "does not exist" in typo.stderr
