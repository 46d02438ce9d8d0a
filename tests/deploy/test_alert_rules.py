"""Every alert is valid PromQL, fires when it should and only then, and is actionable: named once, severity
set, and linked to its runbook in docs/alerts.md.

The PrometheusRule is a Kubernetes custom resource; its ``spec.groups`` is what the Prometheus Operator
hands Prometheus as a rules file, so the tests write that into a temporary ``paystream-rules.yaml`` and run
the real ``promtool check rules`` and ``promtool test rules`` on it. The rule unit tests live in
deploy/prometheus/tests/, one file per alert (see the README there).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from deploy_files import ALERT_DOCS, ALERT_TESTS, alert_rules, doc_anchors, github_anchor, rule_groups, write_rules_file
from go_tools import ToolFailed, check, promtool_check_rules

RULES_NAME = "paystream-rules.yaml"  # the name the rule unit tests' rule_files expects beside them
ALERT_TEST_FILES = sorted(ALERT_TESTS.glob("*.yaml"))


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prometheus")
    write_rules_file(directory / RULES_NAME, rule_groups())
    return directory


def test_promtool_accepts_the_rule_groups(rules_dir: Path) -> None:
    output = promtool_check_rules(rules_dir / RULES_NAME)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_rejects_an_invalid_expression(tmp_path: Path) -> None:
    broken = [{"name": "broken", "rules": [{**alert_rules()[0], "expr": "histogram_quantlie(0.99, up)"}]}]
    with pytest.raises(ToolFailed, match="histogram_quantlie"):
        promtool_check_rules(write_rules_file(tmp_path / "rules.yaml", broken))


@pytest.mark.parametrize("test_file", ALERT_TEST_FILES, ids=lambda path: path.stem)
def test_alert_rule_unit_tests_pass(test_file: Path, rules_dir: Path) -> None:
    shutil.copy(test_file, rules_dir / test_file.name)
    check("promtool", "test", "rules", test_file.name, cwd=rules_dir)


def test_a_wrong_expectation_fails_the_rule_unit_test(rules_dir: Path) -> None:
    document = yaml.safe_load((ALERT_TESTS / "PaystreamDLQGrowing.yaml").read_text())
    firing = next(c for t in document["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    firing["exp_alerts"][0]["exp_labels"]["reason"] = "malformed_body"
    (rules_dir / "wrong-expectation.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ToolFailed, match="FAILED"):
        check("promtool", "test", "rules", "wrong-expectation.yaml", cwd=rules_dir)


def test_every_alert_has_its_rule_test_file_and_every_file_an_alert() -> None:
    assert {path.stem for path in ALERT_TEST_FILES} == {rule["alert"] for rule in alert_rules()}


def test_every_alert_fires_with_its_labels_and_runbook_and_stays_silent_when_healthy() -> None:
    problems: list[str] = []
    for rule in alert_rules():
        path = ALERT_TESTS / f"{rule['alert']}.yaml"
        if path.is_file():
            problems += _rule_test_problems(rule, yaml.safe_load(path.read_text()))
    assert problems == []


def _rule_test_problems(rule: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """What a rule's unit-test file lacks: a firing case asserting labels and all annotations (the
    runbook link included), and a healthy test (a whole ``tests`` entry) where the alert never fires."""
    alert = rule["alert"]
    problems = []
    if document.get("rule_files") != [RULES_NAME]:
        problems.append(f"{alert}: rule_files must be [{RULES_NAME}]")
    groups = [test.get("alert_rule_test", []) for test in document.get("tests", [])]
    cases = [case for group in groups for case in group]
    if any(case.get("alertname") != alert for case in cases):
        problems.append(f"{alert}: its file tests another alert too")
    if any("exp_alerts" not in case for case in cases):
        problems.append(f"{alert}: write `exp_alerts: []` for a silent case, not nothing")
    fired = [expected for case in cases for expected in case.get("exp_alerts") or []]
    if not fired:
        problems.append(f"{alert}: no case where it fires")
    for expected in fired:
        labels, annotations = expected.get("exp_labels", {}), expected.get("exp_annotations", {})
        if labels.get("severity") != rule["labels"]["severity"]:
            problems.append(f"{alert}: a firing case does not assert its severity")
        if set(annotations) != set(rule["annotations"]):
            problems.append(f"{alert}: a firing case asserts annotations {sorted(annotations)}")
        elif annotations["runbook_url"] != rule["annotations"]["runbook_url"]:
            problems.append(f"{alert}: a firing case expects another runbook_url")
    if not any(group and all(case.get("exp_alerts") == [] for case in group) for group in groups):
        problems.append(f"{alert}: no healthy test where it stays silent")
    return problems


def test_the_rule_test_checker_reports_a_missing_healthy_case() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "PaystreamDLQGrowing")
    document = yaml.safe_load((ALERT_TESTS / "PaystreamDLQGrowing.yaml").read_text())
    assert _rule_test_problems(rule, document) == []
    document["tests"] = [t for t in document["tests"] if any(c["exp_alerts"] for c in t["alert_rule_test"])]
    assert _rule_test_problems(rule, document) == ["PaystreamDLQGrowing: no healthy test where it stays silent"]


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))


def test_runbook_url_points_to_the_alert_section_of_alerts_md() -> None:
    wrong = []
    for rule in alert_rules():
        url = urlparse(rule["annotations"]["runbook_url"])
        expected_fragment = f"alert-{rule['alert'].lower()}"
        if url.scheme != "https" or not url.path.endswith("/docs/alerts.md") or url.fragment != expected_fragment:
            wrong.append(rule["alert"])
    assert wrong == []


def test_every_runbook_anchor_exists_in_alerts_md() -> None:
    anchors = set(doc_anchors(ALERT_DOCS))
    missing = [
        rule["alert"] for rule in alert_rules() if urlparse(rule["annotations"]["runbook_url"]).fragment not in anchors
    ]
    assert missing == []


def test_every_runbook_section_belongs_to_an_alert() -> None:
    alerts = {f"alert-{rule['alert'].lower()}" for rule in alert_rules()}
    orphans = [anchor for anchor in doc_anchors(ALERT_DOCS) if anchor.startswith("alert-") and anchor not in alerts]
    assert orphans == []


def test_every_alert_has_a_severity_and_a_summary() -> None:
    incomplete = [
        rule["alert"]
        for rule in alert_rules()
        if rule["labels"].get("severity") not in {"critical", "warning"} or not rule["annotations"].get("summary")
    ]
    assert incomplete == []


def test_the_alerts_the_issue_asks_for_exist() -> None:
    # Issue 7: signature failures per provider, ingest 5xx/503, oldest non-terminal payment past its SLO,
    # DLQ growth, consumer lag, an open fetch circuit, archive lag.
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "PaystreamSignatureFailuresSpike",
        "PaystreamIngestServerErrors",
        "PaystreamPaymentsPastFreshnessSLO",
        "PaystreamOldestNonTerminalPaymentTooOld",
        "PaystreamDLQGrowing",
        "PaystreamProcessingLagHigh",
        "PaystreamFetchCircuitOpen",
        "PaystreamArchiveLagHigh",
    } <= names


def test_signature_failure_alert_is_per_provider() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "PaystreamSignatureFailuresSpike")
    assert "by (provider)" in rule["expr"]
    assert "$labels.provider" in rule["annotations"]["summary"]


def test_github_anchor_matches_githubs_slugs() -> None:
    assert github_anchor("Alert: PaystreamDLQGrowing") == "alert-paystreamdlqgrowing"
    assert github_anchor("Secret rotation (Stripe)") == "secret-rotation-stripe"
