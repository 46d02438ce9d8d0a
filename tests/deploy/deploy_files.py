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
DASHBOARD_FILE = DEPLOY / "grafana" / "paystream.json"
ALERT_DOCS = REPO / "docs" / "alerts.md"
STRIMZI = DEPLOY / "strimzi"

# Labels Prometheus attaches to every scraped series (target labels from the ServiceMonitor).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and templating variable queries."""
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
    return queries


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
    and ``_sum``: the bare histogram name is no series at all.
    """
    names: dict[str, tuple[str, frozenset[str]]] = {}
    for family_name, collector in defined_collectors().items():
        kind = str(collector._type)
        labels: frozenset[str] = frozenset(collector._labelnames)
        if kind == "counter":
            names[f"{family_name}_total"] = (kind, labels)
        elif kind == "gauge":
            names[family_name] = (kind, labels)
        elif kind == "histogram":
            names[f"{family_name}_bucket"] = (kind, labels | {"le"})
            names[f"{family_name}_count"] = (kind, labels)
            names[f"{family_name}_sum"] = (kind, labels)
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
