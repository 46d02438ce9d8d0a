"""Paths and loaders for the files under deploy/ and docs/ that the deploy tests read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from paystream import metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = DEPLOY / "k8s" / "overlays"
RULES_FILE = DEPLOY / "prometheus" / "paystream-rules.yaml"
# promtool rule unit tests, one file per alert, named after it (deploy/prometheus/tests/README.md).
ALERT_TESTS = DEPLOY / "prometheus" / "tests"
DASHBOARD_FILE = DEPLOY / "grafana" / "paystream.json"
ALERT_DOCS = REPO / "docs" / "alerts.md"
STRIMZI = DEPLOY / "strimzi"

# Labels Prometheus attaches to every scraped series (target labels from the ServiceMonitor).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule: what the operator hands Prometheus as a rules file."""
    groups: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())["spec"]["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def write_rules_file(path: Path, groups: list[dict[str, Any]]) -> Path:
    """A plain Prometheus rules file (``groups:`` at the top) for promtool."""
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


# Grafana's built-in interval variables, replaced by a typical value so the expression is plain PromQL.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "24h"}


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard, as Grafana sends it to Prometheus: panel targets and
    templating-variable queries, with the dashboard's variables replaced (see :func:`as_promql`)."""
    queries = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        # label_values(metric, label): the metric is the first argument.
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        queries.append(match.group(1) if match else query)
    return [as_promql(query, board) for query in queries]


def as_promql(expr: str, board: dict[str, Any]) -> str:
    """``expr`` with Grafana's interval variables and the dashboard's own variables (``$name``, ``${name}``,
    ``[[name]]``) replaced by what Grafana would send: a duration, or the variable's "All" value."""
    for name, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, duration)
    for variable in board["templating"]["list"]:
        if variable["type"] == "datasource":
            continue
        value = variable.get("allValue") or ".*"
        name = variable["name"]
        pattern = rf"\$\{{{name}(?::\w+)?\}}|\$\b{name}\b|\[\[{name}\]\]"
        expr = re.sub(pattern, value.replace("\\", "\\\\"), expr)
    if "$" in expr or "[[" in expr:
        raise ValueError(f"a Grafana variable this test does not know is left in: {expr}")
    return expr


def defined_collectors() -> dict[str, MetricWrapperBase]:
    """The metrics defined in paystream/metrics.py, by family name (without a counter's _total)."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                found[family.name] = value
    return found


def series_names() -> dict[str, tuple[str, frozenset[str]]]:
    """Every series name a query may use → (metric type, its label names).

    Counters are exposed as ``<name>_total``; histograms only as ``_bucket`` (with ``le``), ``_count``
    and ``_sum``: the bare histogram name is no series at all. prometheus_client also exposes the
    ``_created`` timestamp of counters and histograms.
    """
    names: dict[str, tuple[str, frozenset[str]]] = {}
    for family_name, collector in defined_collectors().items():
        kind = str(collector._type)
        labels: frozenset[str] = frozenset(collector._labelnames)
        if kind == "counter":
            names[f"{family_name}_total"] = (kind, labels)
            names[f"{family_name}_created"] = (kind, labels)
        elif kind == "gauge":
            names[family_name] = (kind, labels)
        elif kind == "histogram":
            names[f"{family_name}_bucket"] = (kind, labels | {"le"})
            names[f"{family_name}_count"] = (kind, labels)
            names[f"{family_name}_sum"] = (kind, labels)
            names[f"{family_name}_created"] = (kind, labels)
        elif kind == "summary":
            names[family_name] = (kind, labels | {"quantile"})
            names[f"{family_name}_count"] = (kind, labels)
            names[f"{family_name}_sum"] = (kind, labels)
        else:
            names[family_name] = (kind, labels)
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def doc_anchors(path: Path) -> list[str]:
    return [github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", path.read_text(), re.M)]
