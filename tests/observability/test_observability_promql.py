"""The PromQL cutting that the Prometheus integration test relies on: which parts of an
alert expression must return data, and how Grafana's variables are substituted. Fast,
no processes."""

from __future__ import annotations

from obs_promql import alert_rules, dashboard_queries, data_sides, substitute_variables


def test_a_comparison_keeps_its_left_side() -> None:
    assert data_sides('up{job=~"a|b"} == 0') == ['up{job=~"a|b"}']
    assert data_sides("rate(x[5m]) > bool 0.85") == ["rate(x[5m])"]


def test_set_operators_split_into_operands() -> None:
    expr = """
      sum(increase(c{code="4009"}[10m])) / clamp_min(sum(g), 1) > 0.01
      and
      sum(increase(c{code="4009"}[10m])) > 20
    """
    assert data_sides(expr) == [
        'sum(increase(c{code="4009"}[10m])) / clamp_min(sum(g), 1)',
        'sum(increase(c{code="4009"}[10m]))',
    ]


def test_both_sides_of_a_comparison_between_series_must_have_data() -> None:
    expr = 'sum(rate(l{result="bad"}[10m])) > 5 and sum(rate(l{r="bad"}[10m])) > sum(rate(l[1m]))'
    assert data_sides(expr) == [
        'sum(rate(l{result="bad"}[10m]))',
        'sum(rate(l{r="bad"}[10m]))',
        "sum(rate(l[1m]))",
    ]


def test_operators_inside_brackets_strings_and_names_are_not_cut() -> None:
    expr = '(sum by (job) (x{route!~"/a|/b", s=~"5.."}) or 0 * sum by (job) (x)) / y > 0.02'
    assert data_sides(expr) == [
        '(sum by (job) (x{route!~"/a|/b", s=~"5.."}) or 0 * sum by (job) (x)) / y'
    ]
    assert data_sides("roomcast_handshakes_total > 1") == ["roomcast_handshakes_total"]
    assert data_sides('x{a="> and <"} < 3') == ['x{a="> and <"}']


def test_a_parenthesised_whole_is_unwrapped() -> None:
    assert data_sides("(a > 1 and b < 2)") == ["a", "b"]
    assert data_sides("((a) / (b)) > 1 unless on(job) c") == ["((a) / (b))", "c"]


def test_a_plain_expression_is_its_own_side() -> None:
    assert data_sides("sum(rate(x[5m]))") == ["sum(rate(x[5m]))"]


def test_grafana_variables_are_substituted() -> None:
    expr = 'rate(x{instance=~"$gateway", job=~"${job}"}[$__rate_interval]) + y[[v]]'
    assert substitute_variables(expr) == 'rate(x{instance=~".*", job=~".*"}[1m]) + y.*'


def test_every_alert_and_panel_yields_queries() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        sides = data_sides(rule.expr)
        assert sides, rule.name
        for side in sides:
            assert side.count("(") == side.count(")"), (rule.name, side)
    queries = dashboard_queries()
    assert queries
    assert all("$" not in q.expr for q in queries)
