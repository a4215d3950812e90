"""deploy/observability: Prometheus configs and alert rules accepted by promtool, alert
unit tests passing, every alert explained, and a Grafana dashboard whose every panel
has a valid PromQL query over metrics Roomcast actually exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import DEPLOY, REPO, load_yaml_docs, run, tool

OBSERVABILITY = DEPLOY / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "roomcast-dashboard.json"
HTTP_SERVICES = ("auth", "rooms", "gateway", "history", "notifier")

# The metric contract (base names; histograms also expose _bucket/_sum/_count).
CONTRACT = {
    "roomcast_gateway_connections",
    "roomcast_gateway_subscriptions",
    "roomcast_gateway_deliveries_total",
    "roomcast_gateway_fanout_seconds",
    "roomcast_gateway_publish_seconds",
    "roomcast_gateway_messages_sent_total",
    "roomcast_gateway_closes_total",
    "roomcast_gateway_gap_repairs_total",
    "roomcast_gateway_resume_messages",
    "roomcast_gateway_nats_reconnects_total",
    "roomcast_gateway_rate_limited_total",
    "roomcast_gateway_slow_mode_checks_total",
    "roomcast_gateway_moderator_deletions_total",
    "roomcast_history_consumer_lag_messages",
    "roomcast_history_ingested_total",
    "roomcast_history_redeliveries_total",
    "roomcast_history_dead_letters_total",
    "roomcast_history_retention_purged_total",
    "roomcast_history_retention_round_seconds",
    "roomcast_history_retention_unfinished_rooms",
    "roomcast_history_retention_round_failures_total",
    "roomcast_history_retention_files_deleted_total",
    "roomcast_history_files_store_up",
    "roomcast_history_consumer_recreated_total",
    "roomcast_history_stream_mismatch",
    "roomcast_notifier_consumer_recreated_total",
    "roomcast_notifier_consumer_lag_messages",
    "roomcast_notifier_notifications_total",
    "roomcast_notifier_pushes_total",
    "roomcast_notifier_webhook_attempts_total",
    "roomcast_notifier_webhook_dead_letters_total",
    "roomcast_rooms_grpc_requests_total",
    "roomcast_rooms_grpc_request_duration_seconds",
    "roomcast_rooms_events_published_total",
    "roomcast_auth_logins_total",
    "roomcast_auth_rate_limited_total",
    "roomcast_auth_bcrypt_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    *(f"roomcast_{s}_http_requests_total" for s in HTTP_SERVICES),
    *(f"roomcast_{s}_http_request_duration_seconds" for s in HTTP_SERVICES),
}


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:roomcast|process)_[a-z0-9_]+)\b", expr))
    return {
        re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
        for n in names
    }


def source_metric_names(service: str) -> set[str] | None:
    """Metric names that a service's source defines, or None before it has a metrics
    module. The shared HTTP metrics are defined generically in libs/common."""
    package = REPO / "services" / service / "src" / "roomcast" / service
    if not (package / "metrics.py").exists():
        return None
    text = "".join(p.read_text() for p in package.rglob("*.py"))  # subpackages too
    names = set(re.findall(r"\"(roomcast_[a-z0-9_]+)\"", text))
    if "DurableConsumer" in text:
        # The shared durable-consumer runner names its counter after the service.
        names.add(f"roomcast_{service}_consumer_recreated_total")
    return names | {
        f"roomcast_{service}_http_requests_total",
        f"roomcast_{service}_http_request_duration_seconds",
    }


def check_metrics(exprs: list[str], what: str) -> None:
    used: set[str] = set()
    for expr in exprs:
        used |= metric_names(expr)
    unknown = sorted(used - CONTRACT)
    assert not unknown, f"{what} uses metrics outside the contract: {unknown}"
    for service in HTTP_SERVICES:
        defined = source_metric_names(service)
        if defined is None:
            continue
        missing = sorted(
            n for n in used if n.startswith(f"roomcast_{service}_") and n not in defined
        )
        assert not missing, f"{what} uses {missing}, which roomcast.{service} does not define"


def alert_rules() -> list[dict[str, Any]]:
    (doc,) = load_yaml_docs(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def test_promtool_checks_the_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_check_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(foo[5m]) >\n"
    )
    assert run([tool("promtool"), "check", "rules", str(bad)]).returncode != 0


def test_alert_unit_tests_pass() -> None:
    result = run(
        [
            tool("promtool"),
            "test",
            "rules",
            str(REPO / "tests" / "deploy" / "promtool" / "alerts_test.yml"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-local.yml"])
def test_promtool_checks_the_configs(config: str) -> None:
    result = run([tool("promtool"), "check", "config", str(OBSERVABILITY / config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_config_targets_make_up_defaults() -> None:
    (config,) = load_yaml_docs((OBSERVABILITY / "prometheus-local.yml").read_text())
    ports = {
        job["job_name"]: {
            int(t.rsplit(":", 1)[1]) for sc in job["static_configs"] for t in sc["targets"]
        }
        for job in config["scrape_configs"]
    }
    assert ports["gateway"] == {8080, 8090}
    assert ports["auth"] == {8081}
    assert ports["rooms"] == {8082}
    assert ports["history"] == {8083}


def test_every_alert_explains_its_threshold() -> None:
    lines = ALERTS.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- alert:"):
            previous = next(prev.strip() for prev in reversed(lines[:index]) if prev.strip())
            assert previous.startswith("#"), (
                f"{line.strip()}: needs a comment with the reason for its threshold"
            )
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_alerts_cover_the_operational_risks() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    joined = "\n".join(exprs.values())
    assert "roomcast_gateway_connections" in joined  # saturation
    assert 'process_cpu_seconds_total{job="gateway"}' in joined  # event loop saturation
    assert 'code="4009"' in joined  # slow consumers
    assert "roomcast_history_consumer_lag_messages" in joined
    assert 'status=~"5.."' in joined
    assert "roomcast_rooms_grpc_requests_total" in joined
    assert "roomcast_gateway_nats_reconnects_total" in joined
    assert 'up{job="nats"}' in joined
    assert "roomcast_history_retention_unfinished_rooms" in joined  # purge falling behind
    assert 'roomcast_gateway_moderator_deletions_total{outcome="failed"}' in joined
    check_metrics(list(exprs.values()), "alerts.yml")


def test_dashboard_panels_all_have_queries() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = [p for p in panels() if p["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["datasource"]["uid"] == "${datasource}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_shows_what_on_call_opens_first() -> None:
    exprs = "\n".join(t["expr"] for p in panels() for t in p.get("targets", []))
    for needle in (
        "sum by (instance) (roomcast_gateway_connections)",
        "roomcast_gateway_deliveries_total",
        "roomcast_gateway_fanout_seconds_bucket",
        "roomcast_gateway_publish_seconds_bucket",
        "roomcast_gateway_closes_total",
        "roomcast_gateway_gap_repairs_total",
        "roomcast_history_consumer_lag_messages",
        "roomcast_history_ingested_total",
        "_http_requests_total",
        "_http_request_duration_seconds_bucket",
        "roomcast_rooms_grpc_requests_total",
        "roomcast_rooms_grpc_request_duration_seconds_bucket",
        "roomcast_auth_logins_total",
        "roomcast_gateway_slow_mode_checks_total",
        "roomcast_gateway_moderator_deletions_total",
        "roomcast_history_retention_purged_total",
        "roomcast_history_retention_unfinished_rooms",
    ):
        assert needle in exprs, f"the dashboard lacks {needle}"
    check_metrics(exprs.splitlines(), "the dashboard")


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (Grafana's interval variables substituted) as the
    expression of a recording rule."""
    rules = []
    for index, panel in enumerate(p for p in panels() if p["type"] != "row"):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            rules.append({"record": f"dashboard:panel{index}:{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard_rules.json"  # JSON is YAML: no YAML writer needed
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
