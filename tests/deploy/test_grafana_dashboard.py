"""The Grafana dashboard is well formed, every query is valid PromQL, and it covers what the on-call
person needs. (That the queries name only defined metrics and labels: test_metric_names.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deploy_files import as_promql, dashboard, dashboard_queries, write_rules_file
from go_tools import ToolFailed, promtool_check_rules


def dashboard_rules(board: dict[str, Any]) -> list[dict[str, str]]:
    """One recording rule per panel target (and per variable query), named after where it comes from,
    so promtool's error names the panel."""
    rules = [
        {"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": as_promql(target["expr"], board)}
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    variables = [v["name"] for v in board["templating"]["list"] if v["type"] == "query"]
    queries = dashboard_queries(board)[-len(variables):] if variables else []
    rules += [{"record": f"dashboard:variable:{name}", "expr": q} for name, q in zip(variables, queries, strict=True)]
    return rules


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = dashboard_rules(dashboard())
    assert len(rules) > 20
    rules_file = write_rules_file(tmp_path / "dashboard.rules.yaml", [{"name": "paystream-dashboard", "rules": rules}])
    assert f"SUCCESS: {len(rules)} rules found" in promtool_check_rules(rules_file)


def test_an_invalid_query_names_its_panel(tmp_path: Path) -> None:
    board = dashboard()
    panel = next(p for p in board["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = "sum(rate(paystream_dlq_total[$__rate_interval])"  # unbalanced
    rules_file = write_rules_file(
        tmp_path / "dashboard.rules.yaml", [{"name": "paystream-dashboard", "rules": dashboard_rules(board)}]
    )
    with pytest.raises(ToolFailed, match=re.escape(f"dashboard:panel_{panel['id']}:")):
        promtool_check_rules(rules_file)


def test_grafana_variables_become_plain_promql() -> None:
    board = dashboard()
    expr = 'rate(paystream_fetches_total{provider=~"$provider"}[$__rate_interval]) or ${provider}'
    assert as_promql(expr, board) == 'rate(paystream_fetches_total{provider=~".*"}[5m]) or .*'
    with pytest.raises(ValueError, match="does not know"):
        as_promql("rate(paystream_fetches_total[$window])", board)


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_panel_except_rows_has_a_query() -> None:
    without_query = [
        panel["title"]
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        and not (panel.get("targets") and all(target.get("expr") for target in panel["targets"]))
    ]
    assert without_query == []


def test_panels_use_the_datasource_variable() -> None:
    hardwired = [
        panel["title"]
        for panel in dashboard()["panels"]
        if panel["type"] != "row" and panel["datasource"] != {"type": "prometheus", "uid": "${datasource}"}
    ]
    assert hardwired == []


def test_dashboard_has_the_sections_of_the_issue() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == ["Ingest", "Pipeline", "Providers", "Fetcher", "DLQ and archive",
                    "Provider catalogs and stream invariants"]


def test_panels_do_not_overlap() -> None:
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells
