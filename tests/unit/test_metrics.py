"""shared/metrics.py and what the services count with it (the broker-free parts)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from services.logger.batcher import BatchWriter
from services.logger.database import Row
from services.redirector.active_domains import DomainDirectory
from services.redirector.clients import ClientAddress
from services.redirector.forwarder import Forwarder, event_id_of
from services.redirector.handlers import REFUSAL_CLASSES, Redirector
from services.redirector.spool import Spool
from shared import metrics as m
from shared.errors import SettingsError
from shared.events import (
    CertificateExpiring,
    CertificateFailed,
    CertificateIssued,
    ClickTracked,
)
from shared.events import encode_event as encode
from shared.links import LinkSigner
from shared.outcomes import Outcome
from shared.settings import LinkKey, metrics_bind

ROOT = Path(__file__).resolve().parents[2]
HOST = "click.platform.test"
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# --- settings and registry ---------------------------------------------------------------------

@pytest.mark.parametrize(("service", "port"), [
    ("redirector", 9101), ("logger", 9102), ("verifier", 9103), ("certifier", 9104)])
def test_each_service_has_its_own_default_port_on_loopback(service: str, port: int) -> None:
    assert metrics_bind(service).read({}) == ("127.0.0.1", port)


def test_metrics_bind_is_read_and_can_be_turned_off() -> None:
    assert metrics_bind("logger").read({"METRICS_BIND": "0.0.0.0:9200"}) == ("0.0.0.0", 9200)
    assert metrics_bind("logger").read({"METRICS_BIND": "[::1]:9200"}) == ("::1", 9200)
    for off in ("off", "OFF", "", "  "):
        assert metrics_bind("redirector").read({"METRICS_BIND": off}) is None


@pytest.mark.parametrize("bad", ["9101", "localhost", "host:99999", "host:x"])
def test_a_bad_metrics_bind_names_the_setting(bad: str) -> None:
    with pytest.raises(SettingsError, match=r"^METRICS_BIND .*'off'"):
        metrics_bind("verifier").read({"METRICS_BIND": bad})


def test_service_settings_carry_metrics_bind() -> None:
    from services.certifier import settings as certifier
    from services.logger import settings as logger
    from services.redirector import settings as redirector
    from services.verifier import settings as verifier

    base = {"TRACKING_HOST": HOST, "LINK_KEYS": "k:" + "s" * 40,
            "CERT_STORE_KEYS": "c1:" + "c" * 40}
    assert redirector.load(base).metrics_bind == ("127.0.0.1", 9101)
    assert logger.load({**base, "METRICS_BIND": "off"}).metrics_bind is None
    assert verifier.load({**base, "METRICS_BIND": "0.0.0.0:1"}).metrics_bind == ("0.0.0.0", 1)
    assert certifier.load(base).metrics_bind == ("127.0.0.1", 9104)


def test_importing_creates_nothing_and_each_registry_is_independent() -> None:
    assert not [name for name in prometheus_client.REGISTRY._names_to_collectors
                if name.startswith("tracking_")]
    for build in m.SERVICE_METRICS.values():
        build(CollectorRegistry())  # each service's set fits one registry
    first, second = CollectorRegistry(), CollectorRegistry()
    m.RedirectorMetrics(first)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        m.RedirectorMetrics(first)
    m.RedirectorMetrics(second).served_redirect.inc()
    assert value(second, "tracking_clicks_served_total", outcome="redirect", reason="") == 1
    assert value(first, "tracking_clicks_served_total", outcome="redirect", reason="") == 0


def test_new_registry_has_process_figures() -> None:
    names = {family.name for family in m.new_registry().collect()}
    assert "process_cpu_seconds" in names or "python_info" in names
    assert not {family.name for family in m.new_registry(process=False).collect()}


def test_metric_names_lists_every_series_with_its_suffixes() -> None:
    names = m.metric_names()
    assert {"tracking_clicks_served_total", "tracking_redirect_duration_seconds_bucket",
            "tracking_spool_backlog_bytes", "tracking_events_consumed_total",
            "tracking_domains", "tracking_certificates_expiring"} <= names
    assert "tracking_clicks_served" not in names  # a counter is only exposed as _total
    assert all(name.startswith("tracking_") for name in names)


def test_redirect_buckets_resolve_sub_millisecond_work() -> None:
    assert m.REDIRECT_BUCKETS[0] == 0.0001 and m.REDIRECT_BUCKETS[-1] == 0.05
    assert 0.005 in m.REDIRECT_BUCKETS  # the p99 target is a bucket edge


def test_outside_label_values_are_bounded() -> None:
    bounded = m._Bounded(limit=3)
    assert [bounded(v) for v in ("a", "b", None, "c", "a")] == ["a", "b", "", m.OTHER, "a"]


# --- consumer, verifier, certifier objects -----------------------------------------------------

def test_queue_metrics_count_events_by_type_and_start_from_zero() -> None:
    registry = CollectorRegistry()
    queue = m.ConsumerMetrics(registry).for_queue("verifier", ["domain.created", "domain.deleted"])
    labels = {"queue": "verifier", "type": "domain.deleted", "outcome": "retry"}
    assert registry.get_sample_value("tracking_events_consumed_total", labels) == 0
    queue.consumed(["domain.created", "domain.created", "domain.deleted"], "ok")
    queue.malformed(2)
    queue.dead_lettered["exhausted"].inc()
    assert value(registry, "tracking_events_consumed_total", queue="verifier",
                 type="domain.created", outcome="ok") == 2
    assert value(registry, "tracking_events_consumed_total", queue="verifier",
                 type="-", outcome="malformed") == 2
    assert value(registry, "tracking_messages_dead_lettered_total", queue="verifier",
                 reason="exhausted") == 1


def test_certifier_counts_the_certificate_events_it_publishes() -> None:
    registry = CollectorRegistry()
    metrics = m.CertifierMetrics(registry)
    issued = CertificateIssued(domain="a.test", customer_id="c", not_before=WHEN,
                               not_after=WHEN, serial="01")
    metrics.published(issued)
    metrics.published(CertificateFailed(domain="a.test", customer_id="c", code="caa",
                                        reason="r"))
    metrics.published(CertificateExpiring(domain="a.test", customer_id="c", not_after=WHEN,
                                          reason="r"))
    metrics.renewal(Outcome("renewed"))
    assert value(registry, "tracking_certificates_issued_total") == 1
    assert value(registry, "tracking_certificates_failed_total", code="caa") == 1
    assert value(registry, "tracking_certificate_expiring_notices_total") == 1
    assert value(registry, "tracking_certificate_renewals_total", outcome="renewed") == 1


def test_verifier_counts_outcomes_by_code() -> None:
    registry = CollectorRegistry()
    metrics = m.VerifierMetrics(registry)
    metrics.verification("created", Outcome("not-yet", "no_cname"))
    metrics.verification("recheck", Outcome("still-verified"))
    assert value(registry, "tracking_verifications_total", check="created", outcome="not-yet",
                 code="no_cname") == 1
    assert value(registry, "tracking_verifications_total", check="recheck",
                 outcome="still-verified", code="") == 1


# --- the redirector ----------------------------------------------------------------------------

KEYS = (LinkKey("k1", b"s" * 40),)


def make_redirector(tmp_path: Path) -> tuple[Redirector, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = m.RedirectorMetrics(registry)
    spool = Spool(tmp_path / "spool")
    spool.open()
    forwarder = Forwarder(spool, metrics=metrics)
    redirector = Redirector(
        signer=LinkSigner(KEYS), domains=DomainDirectory(HOST), clients=ClientAddress(()),
        spool=spool, forwarder=forwarder, source="/test", spool_max_bytes=1 << 30,
        metrics=metrics)
    metrics.watch(backlog_bytes=spool.backlog_bytes, spool_clicks=spool.unconfirmed_lines,
                  connected=lambda: float(forwarder.connected))
    return redirector, registry


def request(token: str, *, host: str = HOST, method: str = "GET",
            user_agent: str = "Mozilla/5.0 (X11)"):
    return make_mocked_request(method, f"/t/{token}", headers={
        "Host": host, "User-Agent": user_agent}, match_info={"token": token})


def served(registry: CollectorRegistry, outcome: str, reason: str = "") -> float:
    return value(registry, "tracking_clicks_served_total", outcome=outcome, reason=reason)


async def test_the_redirector_counts_each_click_by_outcome(tmp_path: Path) -> None:
    redirector, registry = make_redirector(tmp_path)
    token = LinkSigner(KEYS).mint_token(customer_id="c", campaign_id="k", recipient_id="r",
                                        url="https://example.com/")
    assert (await redirector.handle(request(token))).status == 302
    assert (await redirector.handle(request(token, method="HEAD"))).status == 302
    assert (await redirector.handle(request(token, user_agent="curl/8.0"))).status == 302
    assert (await redirector.handle(request(token + "x"))).status == 404
    assert (await redirector.handle(request("v1.nokey.abc.def"))).status == 404
    assert (await redirector.handle(request("garbage"))).status == 404
    assert (await redirector.handle(request(token, host="other.test"))).status == 404

    assert served(registry, "redirect") == 1
    assert served(registry, "bot", "head-request") == 1
    assert served(registry, "bot", "user-agent") == 1
    assert served(registry, "refused", "bad-signature") == 1
    assert served(registry, "refused", "unknown-key") == 1
    assert served(registry, "refused", "malformed") == 1
    assert served(registry, "refused", "wrong-host") == 1
    # Only redirected clicks are timed, each in the smallest buckets.
    assert value(registry, "tracking_redirect_duration_seconds_count") == 3
    assert value(registry, "tracking_redirect_duration_seconds_bucket", le="0.05") == 3
    # Three clicks spooled, none confirmed; the gauges are read at scrape time.
    assert value(registry, "tracking_spool_clicks") == 3
    assert value(registry, "tracking_spool_backlog_bytes") > 0
    assert value(registry, "tracking_broker_connected") == 0


def test_every_refusal_reason_the_link_signer_gives_has_a_class() -> None:
    source = (ROOT / "shared" / "links.py").read_text()
    verify = source[source.index("    def verify("):]
    reasons = set(re.findall(r'raise LinkError\("([^"]+)"\)', verify))
    assert reasons == set(REFUSAL_CLASSES)
    assert set(REFUSAL_CLASSES.values()) <= set(m.RedirectorMetrics.REFUSALS)


async def test_the_forwarder_counts_confirmed_and_failed_publishes(tmp_path: Path) -> None:
    redirector, registry = make_redirector(tmp_path)
    spool, forwarder = redirector.spool, redirector.forwarder
    ids = [f"evt-{n}" for n in range(3)]
    for event_id in ids:
        spool.append(encode(ClickTracked(
            customer_id="c", campaign_id="k", recipient_id="r", domain=HOST,
            url="https://example.com/", ip=None, user_agent=None, method="GET", bot=False,
            bot_reason=None), source="/t", event_id=event_id))
    first = spool.next_batch(1)
    assert first is not None and event_id_of(first.lines[0]) == "evt-0"
    spool.failed(first)  # back in line
    calls: list[bytes] = []

    async def broken(_key: str, body: bytes) -> None:
        calls.append(body)
        raise ConnectionError("broker gone")

    async def working(_key: str, body: bytes) -> None:
        calls.append(body)

    forwarder.attach(broken)
    assert not await forwarder.drain(0.05)
    assert value(registry, "tracking_click_publish_failures_total") >= 1
    forwarder.attach(working)
    forwarder._backoff.reset()
    assert await forwarder.drain(2.0)
    assert value(registry, "tracking_clicks_published_total") == 3
    assert value(registry, "tracking_click_publish_confirm_seconds_count") >= 1
    assert value(registry, "tracking_spool_clicks") == 0
    assert value(registry, "tracking_broker_connected") == 1


def test_event_id_of_reads_the_id_of_a_spooled_line() -> None:
    line = encode(CertificateFailed(domain="a", customer_id="c", code="x", reason="r"),
                  source="/s", event_id="1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert event_id_of(line) == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert event_id_of(b'{"no":"id"}') is None


# --- the logger's batch writer -----------------------------------------------------------------

def row(n: int) -> Row:
    return (f"evt-{n}", "c", "k", f"r{n}", HOST, "https://example.com/", None, None, "GET",
            WHEN, False, None, None)


class Store:
    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.fail = 1

    async def insert(self, rows: Sequence[Row]) -> int:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("down")
        new = {r[0] for r in rows} - self.stored
        self.stored |= new
        return len(new)

    def rejects_data(self, exc: BaseException) -> bool:
        return False


async def test_the_batch_writer_counts_rows_batches_and_failures() -> None:
    registry = CollectorRegistry()
    metrics = m.LoggerMetrics(registry)
    writer = BatchWriter(Store(), max_rows=100, flush_s=0.01, metrics=metrics)
    metrics.watch(pending_rows=lambda: writer.pending_rows)
    writer.start()
    try:
        await asyncio.wait_for(asyncio.gather(writer.add([row(1), row(2)]),
                                              writer.add([row(3)])), timeout=5)
        await asyncio.wait_for(writer.add([row(3), row(4)]), timeout=5)  # one redelivered
    finally:
        await writer.stop()
    assert value(registry, "tracking_logger_rows_inserted_total") == 4
    assert value(registry, "tracking_logger_rows_duplicate_total") == 1
    assert value(registry, "tracking_logger_write_failures_total") == 1
    assert value(registry, "tracking_logger_batch_rows_count") == 2
    assert value(registry, "tracking_logger_batch_rows_sum") == 5
    assert value(registry, "tracking_logger_insert_seconds_count") == 2
    assert value(registry, "tracking_logger_pending_rows") == 0


def test_hot_path_timings_follow_prometheus_bucket_edges() -> None:
    registry = CollectorRegistry()
    metrics = m.RedirectorMetrics(registry)
    for seconds in (0.0001, 0.00010001, 0.005, 0.06):
        metrics.redirect_seconds.observe(seconds)
    bucket = "tracking_redirect_duration_seconds_bucket"
    assert value(registry, bucket, le="0.0001") == 1  # a value on an edge is `le` that edge
    assert value(registry, bucket, le="0.00025") == 2
    assert value(registry, bucket, le="0.005") == 3
    assert value(registry, bucket, le="0.05") == 3
    assert value(registry, bucket, le="+Inf") == 4
    assert value(registry, "tracking_redirect_duration_seconds_count") == 4
    assert value(registry, "tracking_redirect_duration_seconds_sum") == pytest.approx(0.06520001)
    metrics.bot("user-agent:curl").inc(2)
    assert served(registry, "bot", "user-agent") == 2
