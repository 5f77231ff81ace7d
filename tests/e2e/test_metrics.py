"""End to end: the redirector's and the logger's /metrics move with a click, and the click's
event id can be followed from the redirector's log to the logger's."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from demo.databases import fetch
from demo.net import free_port
from demo.processes import ServiceProcess
from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.conftest import TRACKING_HOST, service_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def click(url: str) -> int:
    request = urllib.request.Request(url, headers={"Host": TRACKING_HOST,
                                                   "User-Agent": "Mozilla/5.0 (X11)"})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Any, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def json_lines(process: ServiceProcess, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in process.log_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                lines.append(record)
    return lines


def test_a_click_moves_both_services_metrics_and_its_event_id_reaches_the_logger_log(
        broker: BrokerSettings, database: DatabaseSettings, tmp_path: Path,
        link_keys: tuple[LinkKey, ...]) -> None:
    port, redirector_metrics, logger_metrics = free_port(), free_port(), free_port()
    env = service_env(broker, database, tmp_path, REDIRECTOR_BIND=f"127.0.0.1:{port}",
                      REDIRECTOR_ACCESS_LOG="1", CLICK_LINGER_MS="0")
    redirector_url = f"http://127.0.0.1:{redirector_metrics}/metrics"
    logger_url = f"http://127.0.0.1:{logger_metrics}/metrics"
    token = LinkSigner(link_keys).mint_token(customer_id="cust-a", campaign_id="camp",
                                             recipient_id="r1", url="https://example.com/x")
    with ServiceProcess("logger", {**env, "METRICS_BIND": f"127.0.0.1:{logger_metrics}"},
                        tmp_path) as logger, \
            ServiceProcess("redirector",
                           {**env, "METRICS_BIND": f"127.0.0.1:{redirector_metrics}"},
                           tmp_path) as redirector:
        redirector.wait_http(f"http://127.0.0.1:{port}/healthz")
        redirector.wait_http(redirector_url)
        logger.wait_for_log("logger.started")
        logger.wait_http(logger_url)
        assert wait_for(lambda: get(scrape(redirector_url), "tracking_broker_connected") == 1)
        before_r, before_l = scrape(redirector_url), scrape(logger_url)
        # The public port never serves metrics.
        assert click(f"http://127.0.0.1:{port}/metrics") == 404

        assert click(f"http://127.0.0.1:{port}/t/{token}") == 302
        assert click(f"http://127.0.0.1:{port}/t/{token}x") == 404

        def logged() -> bool:
            return get(scrape(logger_url), "tracking_logger_rows_inserted_total") \
                - get(before_l, "tracking_logger_rows_inserted_total") >= 1

        assert wait_for(logged), logger.log_text()[-3000:]
        after_r, after_l = scrape(redirector_url), scrape(logger_url)

        def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
            return get(after, name, **labels) - get(before, name, **labels)

        assert moved(after_r, before_r, "tracking_clicks_served_total",
                     outcome="redirect", reason="") == 1
        assert moved(after_r, before_r, "tracking_clicks_served_total",
                     outcome="refused", reason="bad-signature") == 1
        assert moved(after_r, before_r, "tracking_redirect_duration_seconds_count") == 1
        assert moved(after_r, before_r, "tracking_clicks_published_total") == 1
        assert moved(after_r, before_r, "tracking_click_publish_confirm_seconds_count") == 1
        assert get(after_r, "tracking_spool_clicks") == 0
        assert moved(after_l, before_l, "tracking_logger_rows_inserted_total") == 1
        assert moved(after_l, before_l, "tracking_events_consumed_total", queue="logger",
                     type="click.tracked", outcome="ok") == 1
        assert moved(after_l, before_l, "tracking_logger_batch_rows_count") == 1
        assert get(after_l, "tracking_messages_dead_lettered_total", queue="logger",
                   reason="malformed") == 0
        assert get(after_l, "process_cpu_seconds_total") > 0

        # One event id, followed: the redirector's access line, its publish line, the
        # logger's message and commit lines, and the row.
        [served] = json_lines(redirector, "click.served")
        event_id = served["event_id"]
        assert (served["domain"], served["outcome"]) == (TRACKING_HOST, "redirect")
        [published] = json_lines(redirector, "clicks.published")
        assert published["first_event_id"] == published["last_event_id"] == event_id
        assert wait_for(lambda: len(json_lines(logger, "clicks.committed")) == 1)
        [committed] = json_lines(logger, "clicks.committed")
        assert committed["first_event_id"] == committed["last_event_id"] == event_id
        [handled] = [line for line in json_lines(logger, "message.handled")
                     if line.get("event_id") == event_id]
        assert handled["outcome"] == "ok"
        [row] = asyncio.run(fetch(database, "SELECT event_id, domain FROM tracking_logs"))
        assert (row["event_id"], row["domain"]) == (event_id, TRACKING_HOST)

        assert redirector.terminate() == 0
        assert logger.terminate() == 0
