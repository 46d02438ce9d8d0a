"""Every alert is actionable: named once, severity set, and linked to its runbook in docs/alerts.md."""

from __future__ import annotations

from urllib.parse import urlparse

from deploy_files import ALERT_DOCS, alert_rules, doc_anchors, github_anchor


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
