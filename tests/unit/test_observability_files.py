"""The Grafana dashboard, the Prometheus alert rules and docs/observability.md use only
metric names shared/metrics.py defines, and between them cover what issue 4 asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.metrics import metric_families, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tracking-domains.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DOC = ROOT / "docs" / "observability.md"
NAME = re.compile(r"\btracking_[a-z0-9_]+")
TABLES = {"tracking_logs"}  # a table the prose names, not a metric


def names_in(text: str) -> set[str]:
    return set(NAME.findall(text)) - TABLES


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"]
            for target in panel.get("targets", ())]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_is_grafana_json_with_a_query_on_every_panel() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_the_dashboard_uses_only_defined_metrics() -> None:
    used = set().union(*(names_in(expr) for expr in dashboard_exprs()))
    assert used, "no tracking_ metric in the dashboard"
    assert used <= metric_names(), f"undefined: {sorted(used - metric_names())}"


@pytest.mark.parametrize("topic", [
    "tracking_clicks_served_total", "tracking_redirect_duration_seconds_bucket",
    "tracking_spool_clicks", "tracking_spool_backlog_bytes",
    "tracking_click_publish_confirm_seconds_bucket", "tracking_events_consumed_total",
    "tracking_messages_dead_lettered_total", "tracking_logger_batch_rows_bucket",
    "tracking_logger_insert_seconds_bucket", "tracking_verifications_total",
    "tracking_certificates_expiring", "tracking_domains", "tracking_certificates_failed_total",
    "tracking_reputation_listed", "tracking_reputation_platform_host_listed",
    "tracking_reputation_list_unusable",
])
def test_the_dashboard_shows(topic: str) -> None:
    assert any(topic in names_in(expr) for expr in dashboard_exprs())


def test_every_alert_rule_is_complete_and_uses_only_defined_metrics() -> None:
    defined = metric_names()
    found = rules()
    assert found
    for rule in found:
        assert re.fullmatch(r"Tracking[A-Za-z0-9]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule
        used = names_in(rule["expr"])
        assert used and used <= defined, (rule["alert"], sorted(used - defined))
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        # Names quoted in the prose must exist too (they are what an operator greps for).
        assert names_in(rule["annotations"]["description"]) <= defined, rule["alert"]


def test_the_alerts_issue_4_asks_for_are_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "tracking_messages_dead_lettered_total" in exprs["TrackingDeadLetterQueueGrowing"]
    assert "tracking_certificates_expiring" in exprs["TrackingCertificateExpiringWithoutRenewal"]
    assert "tracking_spool_clicks" in exprs["TrackingClickSpoolGrowing"]
    assert "0.005" in exprs["TrackingRedirectP99OverTarget"]


def test_the_alerts_issue_14_asks_for_are_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "tracking_reputation_platform_host_listed" in exprs["TrackingPlatformHostListed"]
    assert "tracking_reputation_listed" in exprs["TrackingDomainsListed"]
    assert "tracking_reputation_list_unusable" in exprs["TrackingReputationListUnusable"]
    assert "tracking_reputation_budget_remaining" in exprs["TrackingReputationBudgetSpent"]


def test_docs_list_every_metric_and_only_those() -> None:
    text = DOC.read_text()
    families = set(metric_families())
    known = metric_names() | families
    mentioned = names_in(text)
    assert mentioned <= known, f"docs name undefined metrics: {sorted(mentioned - known)}"
    listed = set(re.findall(r"^\| `(tracking_[a-z0-9_]+)`", text, re.M))
    assert listed == families, (sorted(families - listed), sorted(listed - families))
