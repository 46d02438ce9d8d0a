"""The Adyen catalog against Adyen's own published list of eventCodes (Webhooks-v1 OpenAPI).

Every listed eventCode has a decision, the catalog names nothing the list lacks, the parser's rules cover
exactly the mapped entries, and every code with success "true" and "false" parses: observations or nothing
on purpose (counted), never an exception.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from ingest.providers.adyen import parse as adyen
from ingest.providers.adyen import tokens
from ingest.providers.catalog import load_catalog
from paystream.errors import UnknownProviderStatus
from schemas.observation import Observation
from schemas.status import Source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"
# Copied from /work/shared/catalogs/adyen_event_codes.json; its "source" names Adyen's OpenAPI file.
PUBLISHED = json.loads((FIXTURES / "adyen_event_codes.json").read_text())
CODES: list[str] = PUBLISHED["event_codes"]
# Adyen's own example items of the same OpenAPI file (components.examples).
EXAMPLES: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "adyen_webhook_examples.json").read_text())["items"]
CATALOG = load_catalog("adyen")
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def item(code: str, success: str, **extra: Any) -> dict[str, Any]:
    """A modification-shaped item (every code carries these fields; dispute stages add their own data)."""
    return {"pspReference": "MOD0000000000001", "originalReference": "PAY0000000000001",
            "merchantAccountCode": "TestMerchant", "merchantReference": "order-1",
            "amount": {"currency": "EUR", "value": 1000}, "eventCode": code, "success": success,
            "eventDate": "2024-05-01T10:00:00+02:00", "reason": "", **extra}


def parse(body: dict[str, Any]) -> list[Observation]:
    return adyen.parse(orjson.dumps(body), account="main", source=Source.PUSH, evidence_id="d-1", observed_at=NOW,
                       object_kind="event")


def ignored_count(label: str) -> float:
    return REGISTRY.get_sample_value("paystream_events_ignored_total", {"provider": "adyen", "type": label}) or 0.0


def test_the_fixture_is_adyens_published_list_with_its_source() -> None:
    assert PUBLISHED["source"] == "Adyen/adyen-openapi json/Webhooks-v1.json (webhooks)"
    assert len(CODES) == 48 and len(set(CODES)) == 48
    assert any(source.startswith(PUBLISHED["source"]) for source in CATALOG.sources)
    assert CATALOG.entry_kind == "eventCode"


def test_every_listed_code_has_a_decision() -> None:
    undecided = sorted(set(CODES) - set(CATALOG.entries))
    assert not undecided, f"eventCodes Adyen lists without a decision: {undecided}"


def test_the_catalog_names_no_code_the_list_lacks() -> None:
    # The recurring.token.* entries are Adyen's second list (test_adyen_tokens_catalog.py checks them).
    extra = sorted(set(CATALOG.entries) - set(CODES) - tokens.TYPES)
    assert not extra, f"catalog entries Adyen's list does not have: {extra}"
    assert "PENDING" not in CATALOG.entries


def test_the_parser_rules_cover_exactly_the_mapped_entries() -> None:
    assert set(adyen.RULES) == set(CATALOG.names()) - set(CATALOG.names("ignore")) - tokens.TYPES


def _kind_of(rule: adyen.Rule) -> str:
    """The catalog outcome a rule implements."""
    for outcome, present in (("dispute", rule.dispute), ("capture", rule.capture), ("refund", rule.refund),
                             ("risk", rule.risk), ("agreement", rule.agreement), ("status", rule.status)):
        if present is not None:
            return outcome
    raise AssertionError(rule)


@pytest.mark.parametrize("code", sorted(adyen.RULES))
def test_each_rule_implements_its_catalog_outcome(code: str) -> None:
    on_true = adyen.RULES[code][0]
    rules = [on_true] if on_true is None or isinstance(on_true, adyen.Rule) else list(on_true.values())
    kinds = {_kind_of(rule) for rule in rules if rule is not None}
    assert CATALOG.entry(code).outcome in kinds, (code, kinds)


def test_the_catalog_outcomes_as_counted_in_the_report() -> None:
    counts = Counter(CATALOG.entries[code].outcome for code in CODES)
    print(f"\nadyen catalog: {dict(sorted(counts.items()))}")
    assert counts == {"dispute": 16, "ignore": 13, "refund": 7, "status": 6, "risk": 3, "capture": 2,
                      "agreement": 1}


def _every_item(code: str, success: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if code == "CANCEL_OR_REFUND":
        extra["additionalData"] = {"modification.action": "refund"}
    return item(code, success, **extra)


@pytest.mark.parametrize("success", ["true", "false"])
@pytest.mark.parametrize("code", CODES)
def test_every_code_parses_with_success_true_and_false(code: str, success: str) -> None:
    outcome = CATALOG.entry(code).outcome
    label = code if outcome == "ignore" else f"{code}:{success}"
    before = ignored_count(label)
    observations = parse(_every_item(code, success))
    assert all(isinstance(obs, Observation) for obs in observations)
    if outcome == "ignore":
        assert observations == []
    if not observations:  # nothing on purpose: counted, never silent
        assert ignored_count(label) == before + 1, label
    else:
        assert ignored_count(label) == before
        (obs,) = observations
        assert obs.provider_status == f"{code}:{success}"


def test_what_success_true_reports_for_each_mapped_code() -> None:
    """Every mapped code reports something when it succeeded (the catalog's outcome is not a no-op)."""
    silent = [code for code in adyen.RULES if not parse(_every_item(code, "true"))]
    assert silent == []


@pytest.mark.parametrize("code", ["PENDING", "HANDLED_EXTERNALLY", "DONATION"])
def test_a_code_the_list_lacks_is_an_unknown_word(code: str) -> None:
    with pytest.raises(UnknownProviderStatus, match=code) as raised:
        parse(item(code, "true"))
    assert (raised.value.provider, raised.value.word) == ("adyen", code)


# What Adyen's own example item of each code reports: (status, captures, refunds, disputes, risk, agreement).
EXPECTED_EXAMPLES: dict[str, tuple[Any, ...]] = {
    "AUTHORISATION": ("authorized", {}, {}, {}, {}, None),
    "AUTHORISATION_ADJUSTMENT": ("authorized", {}, {}, {}, {}, None),
    "CANCELLATION": ("canceled", {}, {}, {}, {}, None),
    "CANCEL_OR_REFUND": ("canceled", {}, {}, {}, {}, None),  # its example's modification.action is "cancel"
    "CAPTURE": (None, {"QFQTPCQ8HXSKGK82": "succeeded"}, {}, {}, {}, None),
    "CAPTURE_FAILED": (None, {"QFQTPCQ8HXSKGK82": "failed"}, {}, {}, {}, None),
    "CHARGEBACK": ("charged_back", {}, {}, {"9913140798220028": "open"}, {}, None),
    "CHARGEBACK_REVERSED": ("captured", {}, {}, {"QFQTPCQ8HXSKGK82": "won"}, {}, None),
    "DISPUTE_DEFENSE_PERIOD_ENDED": ("charged_back", {}, {}, {"9914444444444444": "lost"}, {}, None),
    "EXPIRE": ("canceled", {}, {}, {}, {}, None),
    "ISSUER_RESPONSE_TIMEFRAME_EXPIRED": ("captured", {}, {}, {"9914444444444444": "won"}, {}, None),
    "MANUAL_REVIEW_ACCEPT": (None, {}, {}, {}, {"manual_review:9913140798220028": "cleared"}, None),
    "MANUAL_REVIEW_REJECT": (None, {}, {}, {}, {"manual_review:9913140798220028": "confirmed"}, None),
    "NOTIFICATION_OF_CHARGEBACK": ("disputed", {}, {}, {"9913140798220028": "open"}, {}, None),
    "NOTIFICATION_OF_FRAUD": (None, {}, {}, {}, {"fraud_report:QFQTPCQ8HXSKGK82": "confirmed"}, None),
    "OFFER_CLOSED": ("failed", {}, {}, {}, {}, None),
    "POSTPONED_REFUND": (None, {}, {"QFQTPCQ8HXSKGK82": "pending"}, {}, {}, None),
    "PREARBITRATION_LOST": ("charged_back", {}, {}, {"QFQTPCQ8HXSKGK82": "lost"}, {}, None),
    "PREARBITRATION_WON": ("captured", {}, {}, {"QFQTPCQ8HXSKGK82": "won"}, {}, None),
    "RECURRING_CONTRACT": ("active", {}, {}, {}, {}, "M5N7TQ4TG5PFWR50"),
    "REFUND": (None, {}, {"QFQTPCQ8HXSKGK82": "failed"}, {}, {}, None),  # its example is a refused refund
    "REFUNDED_REVERSED": (None, {}, {"QFQTPCQ8HXSKGK82": "reversed"}, {}, {}, None),
    "REFUND_FAILED": (None, {}, {"QFQTPCQ8HXSKGK82": "failed"}, {}, {}, None),
    "REFUND_WITH_DATA": (None, {}, {"QFQTPCQ8HXSKGK82": "succeeded"}, {}, {}, None),
    "REQUEST_FOR_INFORMATION": ("disputed", {}, {}, {"9913140798220028": "open"}, {}, None),
    "SECOND_CHARGEBACK": ("charged_back", {}, {}, {"QFQTPCQ8HXSKGK82": "lost"}, {}, None),
    "TECHNICAL_CANCEL": ("canceled", {}, {}, {}, {}, None),
    "VOID_PENDING_REFUND": (None, {}, {"QFQTPCQ8HXSKGK82": "canceled"}, {}, {}, None),
}


def test_adyens_published_examples_parse_as_decided() -> None:
    assert set(EXPECTED_EXAMPLES) | set(CATALOG.names("ignore")) >= set(EXAMPLES)
    for code, examples in EXAMPLES.items():
        for example in examples:
            observations = parse(example)
            if CATALOG.entry(code).outcome == "ignore":
                assert observations == [], code
                continue
            (obs,) = observations
            seen = (obs.status, {k: m.state for k, m in obs.captures.items()},
                    {k: m.state for k, m in obs.refunds.items()}, {k: d.state for k, d in obs.disputes.items()},
                    {k: r.state for k, r in obs.risk.items()},
                    obs.object_id if obs.object_type == "recurring_contract" else None)
            assert seen == EXPECTED_EXAMPLES[code], code


def test_the_published_authorisation_example_names_its_stored_payment_method() -> None:
    (obs,) = parse(EXAMPLES["AUTHORISATION"][0])
    assert (obs.agreement_ref, obs.amount, obs.order_ref, obs.authorization_expires_at) == (
        "M5N7TQ4TG5PFWR50", 1000, "YOUR_MERCHANT_REFERENCE", None)
