"""Alerts and dashboard name only metrics (and labels) that paystream/metrics.py defines.

The selectors of each expression come from Prometheus's own parser (promql_selectors.py), the names they
may use from the collectors in paystream/metrics.py (deploy_files.series_names).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from deploy_files import TARGET_LABELS, alert_rules, dashboard, dashboard_queries, series_names
from go_tools import ToolFailed
from promql_selectors import SelectorError, selectors


@pytest.fixture(scope="module", autouse=True)
def _parse_every_expression_once() -> None:
    # One promtool process per expression: run them side by side (selectors() caches the results).
    expressions = [rule["expr"] for rule in alert_rules()] + dashboard_queries(dashboard())
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_parsed_or_none, expressions))


def _parsed_or_none(expr: str) -> None:
    with contextlib.suppress(ToolFailed, SelectorError):  # the test that reads the expression reports it
        selectors(expr)


def _unknown_metrics(expressions: list[str]) -> dict[str, set[str]]:
    known = series_names()
    unknown: dict[str, set[str]] = {}
    for expr in expressions:
        missing = {s.metric for s in selectors(expr)} - set(known)
        if missing:
            unknown[expr] = missing
    return unknown


def _unknown_labels(expressions: list[str]) -> list[str]:
    known = series_names()
    problems = []
    for expr in expressions:
        for selector in selectors(expr):
            if selector.metric not in known:
                continue  # reported by the metric-name tests
            _, labels = known[selector.metric]
            extra = selector.labels - labels - TARGET_LABELS
            if extra:
                problems.append(f"{selector.metric} has no label(s) {sorted(extra)} (in: {expr})")
    return problems


def test_alert_expressions_name_only_defined_metrics() -> None:
    expressions = [rule["expr"] for rule in alert_rules()]
    assert expressions
    assert _unknown_metrics(expressions) == {}


def test_dashboard_queries_name_only_defined_metrics() -> None:
    expressions = dashboard_queries(dashboard())
    assert len(expressions) > 20
    assert _unknown_metrics(expressions) == {}


def test_alert_label_matchers_exist_on_their_metrics() -> None:
    assert _unknown_labels([rule["expr"] for rule in alert_rules()]) == []


def test_dashboard_label_matchers_exist_on_their_metrics() -> None:
    assert _unknown_labels(dashboard_queries(dashboard())) == []


def test_bare_histogram_name_is_not_a_series() -> None:
    known = series_names()
    assert "paystream_ingest_request_seconds_bucket" in known
    assert "paystream_ingest_request_seconds_count" in known
    assert "paystream_ingest_request_seconds" not in known
    assert _unknown_metrics(["rate(paystream_ingest_request_seconds[5m])"]) != {}


def test_counter_is_only_known_with_its_total_suffix() -> None:
    assert _unknown_metrics(["rate(paystream_dlq_total[5m])"]) == {}
    assert _unknown_metrics(["rate(paystream_dlq[5m])"]) == {"rate(paystream_dlq[5m])": {"paystream_dlq"}}


def test_misspelled_metric_is_reported() -> None:
    expr = "sum by (provider) (rate(paystream_signature_failure_total[5m]))"
    assert _unknown_metrics([expr]) == {expr: {"paystream_signature_failure_total"}}


def test_metric_without_the_paystream_prefix_is_reported_too() -> None:
    expr = "sum(rate(paystrem_dlq_total[5m])) > 0"
    assert _unknown_metrics([expr]) == {expr: {"paystrem_dlq_total"}}


def test_unknown_label_is_reported() -> None:
    problems = _unknown_labels(['rate(paystream_dlq_total{provider="stripe"}[5m])'])
    assert len(problems) == 1
    assert "provider" in problems[0]


def test_names_in_strings_grouping_clauses_and_ranges_are_not_metrics() -> None:
    expr = (
        'sum by (provider, le) (rate(paystream_fetch_seconds_bucket{provider=~"not_a_metric{x}"}'
        "[5m])) > on (job) group_left (instance) paystream_fetch_queue_depth offset 5m"
        ' * 1e3 + 7 * 86400 + label_replace(vector(1), "dst", "{looks_like_a_metric}", "src", ".*")'
    )
    assert {(s.metric, s.labels) for s in selectors(expr)} == {
        ("paystream_fetch_seconds_bucket", frozenset({"provider"})),
        ("paystream_fetch_queue_depth", frozenset()),
    }


def test_selector_labels_are_read_per_metric() -> None:
    found = selectors('a_total{x="1", y=~"a{2}"} / b{z!="3"}')
    assert {(s.metric, s.labels) for s in found} == {("a_total", frozenset({"x", "y"})), ("b", frozenset({"z"}))}


def test_unknown_function_is_rejected_by_promtool() -> None:
    with pytest.raises(ToolFailed, match="histogram_quantlie"):
        selectors("histogram_quantlie(0.99, rate(paystream_fetch_seconds_bucket[5m]))")


def test_selector_without_metric_name_is_rejected() -> None:
    with pytest.raises(SelectorError, match="without a metric name"):
        selectors('rate({job="paystream-ingest"}[5m])')


def test_selection_by_name_label_is_rejected() -> None:
    with pytest.raises(SelectorError, match="__name__"):
        selectors('rate({__name__=~"paystream_.*"}[5m])')
