"""PromQL helpers of the observability tests: the dashboard's and the alert rules'
queries as Prometheus should run them, and a tiny client of Prometheus' HTTP API.

Only as much PromQL is understood as the checks need: Grafana's template variables are
substituted, and an alert expression is cut at its top-level set operators (``and``,
``or``, ``unless``) and comparisons into the sub-expressions that must return data on
a healthy stack (a comparison is normally empty: it is the alert not firing).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "roomcast-dashboard.json"
LOCAL_CONFIG = OBSERVABILITY / "prometheus-local.yml"

# What Grafana would put in place of its interval variables for a short time range. The
# test's Prometheus scrapes every second, so one minute holds plenty of samples.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
# Any other variable is a label filter (instance, job): "match everything".
ALL_VALUES = ".*"

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_SET_OPERATORS = ("and", "or", "unless")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?(Inf|NaN)$", re.I)
# Modifiers that may follow a binary operator: `> bool`, `on(...)`, `group_left(...)`.
_MODIFIER = re.compile(r"^\s*(bool\b|(on|ignoring|group_left|group_right)\s*(\([^)]*\))?)", re.I)


def substitute_variables(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return GRAFANA_INTERVALS.get(name, ALL_VALUES)

    return _VARIABLE.sub(value, expr)


def _top_level(expr: str) -> list[tuple[int, str]]:
    """(index, character) of every character outside brackets and string literals."""
    out: list[tuple[int, str]] = []
    depth = 0
    quote = ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            out.append((i, ch))
        i += 1
    return out


def _split(expr: str, operators: tuple[str, ...], words: bool) -> list[str]:
    """Cut ``expr`` at top-level ``operators`` (dropping operators and modifiers)."""
    visible = dict(_top_level(expr))
    parts: list[str] = []
    start = 0
    i = 0
    while i < len(expr):
        match = None
        if i in visible:
            for op in operators:
                end = i + len(op)
                if expr[i:end].lower() != op or not all(j in visible for j in range(i, end)):
                    continue
                if words and (
                    (i > 0 and (expr[i - 1].isalnum() or expr[i - 1] == "_"))
                    or (end < len(expr) and (expr[end].isalnum() or expr[end] == "_"))
                ):
                    continue
                match = op
                break
        if match is None:
            i += 1
            continue
        parts.append(expr[start:i])
        i += len(match)
        while (modifier := _MODIFIER.match(expr[i:])) and modifier.group(0).strip():
            i += len(modifier.group(0))
        start = i
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def _unwrap(expr: str) -> str:
    """``(x)`` → ``x`` when the parentheses enclose the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for index, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and index < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def data_sides(expr: str) -> list[str]:
    """The sub-expressions of an alert expression that must return data when healthy:
    each operand of a top-level set operator, with comparisons cut into their sides;
    number literals (thresholds) are left out."""
    sides: list[str] = []
    for operand in _split(_unwrap(expr), _SET_OPERATORS, words=True):
        inner = _unwrap(operand)
        pieces = _split(inner, _COMPARISONS, words=False)
        if len(pieces) == 1:
            # No comparison here; a parenthesised set expression is cut further.
            sides += data_sides(inner) if inner != operand.strip() else [inner]
            continue
        sides += [p for p in pieces if not _NUMBER.match(p)]
    return sides


# --- the dashboard and the rules -----------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str


def dashboard_queries() -> list[PanelQuery]:
    board = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [
        PanelQuery(panel["title"], target["refId"], substitute_variables(target["expr"]))
        for panel in panels
        for target in panel.get("targets", [])
    ]


@dataclass(frozen=True)
class AlertRule:
    group: str
    name: str
    expr: str


def alert_rules() -> list[AlertRule]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [
        AlertRule(group["name"], rule["alert"], rule["expr"].strip())
        for group in doc["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def rule_group_names() -> list[str]:
    return [group["name"] for group in yaml.safe_load(ALERTS.read_text())["groups"]]


# --- Prometheus' HTTP API --------------------------------------------------------------


@dataclass
class QueryResult:
    ok: bool
    result: list[Any] = field(default_factory=list)
    error: str = ""


class PrometheusApi:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = self.http.get(path, params=params)
        body: dict[str, Any] = response.json()
        return body

    def query(self, expr: str) -> QueryResult:
        body = self.get("/api/v1/query", query=expr)
        if body.get("status") != "success":
            return QueryResult(False, error=f"{body.get('errorType')}: {body.get('error')}")
        return QueryResult(True, body["data"]["result"])

    def ready(self) -> bool:
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False


def poll(check: Any, *, timeout: float, interval: float = 0.25) -> Any:
    """Call ``check()`` until it returns a truthy value or ``timeout`` passes; return the
    last value either way (the caller asserts on it and reports what was missing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
