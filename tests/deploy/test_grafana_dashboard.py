"""The Grafana dashboard is well formed and covers what the on-call person needs."""

from __future__ import annotations

from deploy_files import dashboard


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
    assert rows == ["Ingest", "Pipeline", "Providers", "Fetcher", "DLQ and archive"]


def test_panels_do_not_overlap() -> None:
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells
