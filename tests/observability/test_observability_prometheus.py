"""A real Prometheus scrapes the whole stack (``make up``'s processes on free ports, with
deploy/observability/prometheus-local.yml and alerts.yml) while a small load runs through
the public contract; then every Grafana dashboard query and every alert expression must
be valid PromQL that returns data. A renamed metric, a label that no longer exists or a
typo in a query is caught here, against what the services really export.

Alert expressions are comparisons, empty while the stack is healthy; each is checked
whole for validity, and its sides (operands of and/or/unless, both sides of each
comparison, thresholds aside) must return data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
from obs_load import LoadReport, drive
from obs_promql import (
    PrometheusApi,
    alert_rules,
    dashboard_queries,
    data_sides,
    poll,
    rule_group_names,
)
from obs_stack import ObservedStack

# Targets answer within a scrape or two of Prometheus starting (1 s interval).
TARGETS_UP_TIMEOUT_SECONDS = 20.0
# Counters need two scrapes after they appear before rate() has two points; histograms
# and labelled counters appear at the first scrape after their first event.
FRESH_DATA_TIMEOUT_SECONDS = 25.0
EXPECTED_JOBS = {
    "gateway": 2,
    "auth": 1,
    "rooms": 1,
    "history": 1,
    "notifier": 1,
    "nats": 1,
    "prometheus": 1,
}


def scalar(api: PrometheusApi, expr: str) -> float:
    result = api.query(expr)
    if not result.ok or not result.result:
        return 0.0
    return float(result.result[0]["value"][1])


def targets_down(api: PrometheusApi) -> list[str]:
    targets = api.get("/api/v1/targets")["data"]["activeTargets"]
    jobs: dict[str, int] = {}
    down = []
    for target in targets:
        job = target["labels"]["job"]
        jobs[job] = jobs.get(job, 0) + 1
        if target["health"] != "up":
            down.append(f"{job} {target['scrapeUrl']}: {target['health']} {target['lastError']}")
    if jobs != EXPECTED_JOBS:
        down.append(f"jobs {jobs} != {EXPECTED_JOBS}")
    return down


@pytest.fixture(scope="module")
def load(observed: ObservedStack) -> LoadReport:
    api = observed.prometheus
    # Scrapes before the load: counters then start from their idle values, as in life.
    down = poll(lambda: not targets_down(api), timeout=TARGETS_UP_TIMEOUT_SECONDS)
    assert down, targets_down(api)
    report = asyncio.run(drive(observed.stack))
    # Fresh samples: Prometheus holds the last events of the load.
    expected = {
        'sum(roomcast_gateway_messages_sent_total{result="ok"})': report.sent,
        'sum(roomcast_gateway_closes_total{code="4008"})': 1,
        'sum(roomcast_auth_logins_total{result="overloaded"})': report.overloaded_logins,
        "sum(roomcast_history_ingested_total)": report.sent,
    }

    def stale() -> list[str]:
        return [f"{expr} < {want}" for expr, want in expected.items() if scalar(api, expr) < want]

    assert poll(lambda: not stale(), timeout=FRESH_DATA_TIMEOUT_SECONDS), stale()
    return report


def empty_queries(api: PrometheusApi, exprs: Iterable[str]) -> dict[str, str]:
    """Each expression that is invalid or returns nothing, with the reason."""
    failures = {}
    for expr in exprs:
        result = api.query(expr)
        if not result.ok:
            failures[expr] = result.error
        elif not result.result:
            failures[expr] = "no data"
    return failures


def wait_for_data(api: PrometheusApi, exprs: list[str]) -> dict[str, str]:
    pending = list(dict.fromkeys(exprs))

    def check() -> bool:
        nonlocal pending
        failures = empty_queries(api, pending)
        pending = list(failures)
        return not pending

    poll(check, timeout=FRESH_DATA_TIMEOUT_SECONDS, interval=0.5)
    return empty_queries(api, pending)


def test_every_target_is_up(observed: ObservedStack, load: LoadReport) -> None:
    assert targets_down(observed.prometheus) == []


def test_the_load_reached_every_path(load: LoadReport) -> None:
    assert load.received == 5
    assert load.resumed == 4
    assert load.failed_logins == 1
    assert load.rate_limited_logins >= 1
    assert load.overloaded_logins >= 1
    assert 4009 in load.close_codes
    assert 4008 in load.close_codes


def test_the_alert_rules_are_loaded_and_healthy(observed: ObservedStack) -> None:
    api = observed.prometheus

    def unhealthy() -> list[str]:
        groups = api.get("/api/v1/rules")["data"]["groups"]
        bad = [
            f"{group['name']}/{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
            for group in groups
            for rule in group["rules"]
            if rule["health"] != "ok"
        ]
        names = sorted(group["name"] for group in groups)  # the API sorts by file and name
        if names != sorted(rule_group_names()):
            bad.append(f"groups {names} != {rule_group_names()}")
        if sum(len(group["rules"]) for group in groups) != len(alert_rules()):
            bad.append("not every rule is loaded")
        return bad

    poll(lambda: not unhealthy(), timeout=TARGETS_UP_TIMEOUT_SECONDS)
    assert unhealthy() == []


def test_every_dashboard_query_returns_data(observed: ObservedStack, load: LoadReport) -> None:
    queries = dashboard_queries()
    failures = wait_for_data(observed.prometheus, [q.expr for q in queries])
    described = [
        f"{q.panel} [{q.ref_id}]: {failures[q.expr]}: {q.expr}"
        for q in queries
        if q.expr in failures
    ]
    assert described == []


def test_every_alert_expression_is_valid_and_its_sides_return_data(
    observed: ObservedStack, load: LoadReport
) -> None:
    api = observed.prometheus
    rules = alert_rules()
    invalid = [
        f"{rule.name}: {result.error}" for rule in rules if not (result := api.query(rule.expr)).ok
    ]
    assert invalid == []
    sides = {rule.name: data_sides(rule.expr) for rule in rules}
    failures = wait_for_data(api, [side for exprs in sides.values() for side in exprs])
    described = [
        f"{name}: {failures[side]}: {side}"
        for name, exprs in sides.items()
        for side in exprs
        if side in failures
    ]
    assert described == []


def test_the_nats_probe_reports_jetstream(observed: ObservedStack, load: LoadReport) -> None:
    """The local probe (job nats) sees the CHAT stream and history's durable consumer."""
    api = observed.prometheus

    def state() -> tuple[float, list[Any]]:
        messages = scalar(api, 'nats_jetstream_stream_messages{stream="CHAT"}')
        consumers = api.query('nats_jetstream_consumer_pending_messages{stream="CHAT"}').result
        return messages, consumers

    poll(lambda: state()[0] >= load.sent and state()[1], timeout=FRESH_DATA_TIMEOUT_SECONDS)
    messages, consumers = state()
    assert messages >= load.sent
    assert [c["metric"]["consumer"] for c in consumers], "history's durable consumer"
