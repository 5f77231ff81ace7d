"""End to end: a labelled corpus of scanner and human click streams, played over HTTP
through real redirector, logger and classifier processes (real broker and database),
time scaled by ten; the stored verdicts must flag >= 95% of scanner clicks and <= 1% of
human clicks. bench/corpus.py says what the streams are; `python -m bench.classify`
plays a larger one."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.corpus import generate, play, score, service_settings, write_scanner_file
from demo.databases import fetch
from demo.net import free_port
from demo.processes import ServiceProcess
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env
from tests.e2e.test_click_path import wait_rows
from tests.integration.test_trackctl_clicks import trackctl

SCALE = 0.1


def test_a_corpus_of_scanners_and_people_is_told_apart(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
        link_keys: tuple[LinkKey, ...]) -> None:
    port = free_port()
    env = service_env(broker, database, tmp_path, REDIRECTOR_BIND=f"127.0.0.1:{port}",
                      TRUSTED_PROXIES="127.0.0.1/32",
                      SCANNER_NETWORKS_FILE=str(write_scanner_file(tmp_path / "scanners")),
                      **service_settings(SCALE))
    with ServiceProcess("logger", env, tmp_path) as logger, \
            ServiceProcess("classifier", env, tmp_path) as classifier, \
            ServiceProcess("redirector", env, tmp_path) as redirector:
        redirector.wait_http(f"http://127.0.0.1:{port}/healthz")
        logger.wait_for_log("logger.started")
        classifier.wait_for_log("classifier.started")
        # People come back one to two minutes (six to twelve seconds) later: long enough
        # to tell them apart, short enough for a test.
        corpus = generate(LinkSigner(link_keys), recipients=80, scale=SCALE, span_s=6.0,
                          start=time.time() + 1.0, gap_min=(1, 2))
        served = asyncio.run(play(corpus, f"http://127.0.0.1:{port}", TRACKING_HOST))
        assert served == len(corpus.fetches)
        assert wait_rows(database, served) == served
        # Every verdict settles within BOT_SETTLE_S; the logger sweeps every 2 s.
        time.sleep(60 * SCALE + 3)
        rows = asyncio.run(fetch(database, "SELECT * FROM tracking_logs"))
        result = score(corpus, rows)
        print("\n" + result.markdown())
        assert result.matrix[True, True] + result.matrix[True, False] >= 150
        assert result.matrix[False, True] + result.matrix[False, False] >= 40
        assert result.scanners_flagged >= 0.95, result.markdown()
        assert result.people_flagged <= 0.01, result.markdown()
        # The classifier's part: clicks that only a burst or a honeypot gave away were
        # reclassified after they were tracked, and still answered like everyone's.
        reclassified = [row for row in rows if row["reclassified_at"] is not None]
        assert reclassified and all(row["bot"] for row in reclassified)
        assert {"burst", "near-honeypot"} <= {reason for row in reclassified
                                              for reason in row["reasons"].split(",")}
        assert asyncio.run(fetch(database, "SELECT count(*) AS n FROM click_classifications"))[
            0]["n"] == 0
        # A scanner flagged by its own agent that fetched every link keeps both reasons:
        # its verdict never changed, its burst came once it settled.
        scanner = ua_bot_in_a_burst(database)
        campaign_rows = [row for row in asyncio.run(fetch(database, "SELECT * FROM tracking_logs"))
                         if row["campaign_id"] == scanner["campaign_id"]]
        report = json.loads(trackctl(database, "--campaign", scanner["campaign_id"],
                                     "--customer", scanner["customer_id"], "--json").stdout)
        counted = {(r["reason"], True): r["bot"] for r in report["reasons"]} | {
            (r["reason"], False): r["human"] for r in report["reasons"]}
        expected = Counter((reason, row["bot"]) for row in campaign_rows
                           for reason in (row["reasons"] or "").split(",") if reason)
        assert {k: v for k, v in counted.items() if v} == dict(expected)
        assert counted["burst", True] >= 1
        assert counted[scanner["reasons"].split(",")[0], True] >= 1
        for process in (redirector, classifier, logger):
            assert process.terminate() == 0


def ua_bot_in_a_burst(database: DatabaseSettings, within_s: float = 10) -> dict[str, Any]:
    """A stored click flagged by its user agent whose reasons gained `burst` (waiting
    for the last classifications to be applied, at most `within_s`)."""
    deadline = time.monotonic() + within_s
    while True:
        rows = asyncio.run(fetch(
            database, "SELECT * FROM tracking_logs WHERE reasons LIKE 'user-agent:%' "
            "AND reasons LIKE '%burst%' AND reclassified_at IS NOT NULL LIMIT 1"))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows, "no user-agent bot gained burst"
    return dict(rows[0])
