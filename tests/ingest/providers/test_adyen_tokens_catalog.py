"""The Adyen catalog's recurring.token.* entries against Adyen's published Tokenization webhooks list, and what
each type reports (agreement observations on the key a RECURRING_CONTRACT notification uses).

Published list and examples: tests/fixtures/catalogs/adyen_token_webhook_types.json, copied from
Adyen/adyen-openapi json/TokenizationNotification-v1.json (its `webhooks` keys and components.examples).
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
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind, Source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"
PUBLISHED = json.loads((FIXTURES / "adyen_token_webhook_types.json").read_text())
TYPES: list[str] = PUBLISHED["webhook_types"]
EXAMPLES: dict[str, dict[str, Any]] = PUBLISHED["examples"]
# Adyen's example RECURRING_CONTRACT item (Webhooks-v1 components.examples), for the shared agreement key.
ITEMS = json.loads((FIXTURES / "adyen_webhook_examples.json").read_text())["items"]
CODES: list[str] = json.loads((FIXTURES / "adyen_event_codes.json").read_text())["event_codes"]
CATALOG = load_catalog("adyen")
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def parse(body: dict[str, Any]) -> list[Observation]:
    return adyen.parse(orjson.dumps(body), account="main", source=Source.PUSH, evidence_id="d-1", observed_at=NOW,
                       object_kind="event")


def test_the_fixture_is_adyens_published_list_with_its_source() -> None:
    assert PUBLISHED["source"] == "Adyen/adyen-openapi json/TokenizationNotification-v1.json (webhooks)"
    assert TYPES == ["recurring.token.alreadyExisting", "recurring.token.created", "recurring.token.disabled",
                     "recurring.token.updated"]
    assert set(EXAMPLES) == set(TYPES)
    assert all(example["type"] == name for name, example in EXAMPLES.items())
    assert any(source.startswith(PUBLISHED["source"]) for source in CATALOG.sources)


def test_every_listed_type_has_a_decision() -> None:
    undecided = sorted(set(TYPES) - set(CATALOG.entries))
    assert not undecided, f"token webhook types Adyen lists without a decision: {undecided}"


def test_the_catalog_names_no_type_the_list_lacks() -> None:
    """The catalog holds exactly the two published lists: eventCodes and token webhook types."""
    assert set(TYPES) == tokens.TYPES
    extra = sorted(set(CATALOG.entries) - set(TYPES) - set(CODES))
    assert not extra, f"catalog entries neither of Adyen's lists has: {extra}"
    assert not set(TYPES) & set(CODES)


def test_the_token_statuses_cover_exactly_the_mapped_types() -> None:
    assert set(tokens.STATUSES) == set(TYPES) - set(CATALOG.names("ignore"))
    assert {CATALOG.entry(name).outcome for name in TYPES} == {"agreement"}


def test_the_eventcode_rules_stay_the_eventcode_entries() -> None:
    mapped_codes = set(CATALOG.names()) - set(CATALOG.names("ignore")) - set(TYPES)
    assert set(adyen.RULES) == mapped_codes


def test_the_catalog_outcomes_as_counted_in_the_report() -> None:
    counts = Counter(CATALOG.entries[name].outcome for name in TYPES)
    print(f"\nadyen token webhook types: {dict(counts)} (of {len(TYPES)} listed, 0 unknown)")
    assert counts == {"agreement": 4}


EXPECTED: dict[str, tuple[AgreementStatus, str]] = {
    "recurring.token.created": (AgreementStatus.ACTIVE, "created"),
    "recurring.token.updated": (AgreementStatus.ACTIVE, "updated"),
    "recurring.token.alreadyExisting": (AgreementStatus.ACTIVE, "alreadyExisting"),
    "recurring.token.disabled": (AgreementStatus.CLOSED, "disabled"),  # no data.operation: the type's word
}


@pytest.mark.parametrize("kind", TYPES)
def test_adyens_published_example_parses_as_decided(kind: str) -> None:
    (obs,) = parse(EXAMPLES[kind])
    assert (obs.kind, obs.object_type, obs.object_id) == (ObjectKind.AGREEMENT, "recurring_contract",
                                                          "M5N7TQ4TG5PFWR50")
    assert (obs.status, obs.reason_code) == EXPECTED[kind]
    assert obs.provider_status == kind
    assert obs.occurred_at == datetime(2025, 6, 30, 14, 40, 23, tzinfo=UTC)  # createdAt, +02:00 to UTC
    assert (obs.source, obs.evidence_id, obs.observed_at) == (Source.PUSH, "d-1", NOW)
    assert obs.payment_key == "adyen:main:recurring_contract:M5N7TQ4TG5PFWR50"


def test_disabled_has_no_operation_in_adyens_schema() -> None:
    assert "operation" not in EXAMPLES["recurring.token.disabled"]["data"]


def test_a_token_webhook_and_a_recurring_contract_share_the_agreement_key() -> None:
    """Adyen's own examples of both: one stored payment method, one agreement."""
    (contract,) = parse(ITEMS["RECURRING_CONTRACT"][0])
    (created,) = parse(EXAMPLES["recurring.token.created"])
    (disabled,) = parse(EXAMPLES["recurring.token.disabled"])
    assert contract.payment_key == created.payment_key == disabled.payment_key
    assert (contract.status, disabled.status) == (AgreementStatus.ACTIVE, AgreementStatus.CLOSED)


def test_the_operation_text_is_the_reason_when_adyen_gives_one() -> None:
    body = {**EXAMPLES["recurring.token.updated"],
            "data": {**EXAMPLES["recurring.token.updated"]["data"], "operation": " cardNetworkUpdate "}}
    (obs,) = parse(body)
    assert obs.reason_code == "cardNetworkUpdate"


@pytest.mark.parametrize("kind", ["recurring.token.suspended", "merchant.created", "AUTHORISATION"])
def test_a_type_the_list_lacks_is_an_unknown_word(kind: str) -> None:
    with pytest.raises(UnknownProviderStatus, match=kind) as raised:
        parse({**EXAMPLES["recurring.token.created"], "type": kind})
    assert (raised.value.provider, raised.value.word) == ("adyen", kind)


def test_a_token_type_as_an_eventcode_is_an_unknown_word() -> None:
    item = {**ITEMS["RECURRING_CONTRACT"][0], "eventCode": "recurring.token.created"}
    with pytest.raises(UnknownProviderStatus) as raised:
        parse(item)
    assert (raised.value.provider, raised.value.word) == ("adyen", "recurring.token.created")


@pytest.mark.parametrize("data", [
    {"merchantAccount": "M", "shopperReference": "S", "type": "visa"},  # no storedPaymentMethodId
    {"merchantAccount": "M", "shopperReference": "S", "type": "visa", "storedPaymentMethodId": " "},
    {"merchantAccount": "M", "shopperReference": "S", "type": "visa", "storedPaymentMethodId": 7},
])
def test_a_token_webhook_without_its_token_is_malformed(data: dict[str, Any]) -> None:
    with pytest.raises(NormalizationError) as raised:
        parse({**EXAMPLES["recurring.token.disabled"], "data": data})
    assert raised.value.reason == "malformed_body"
    assert not isinstance(raised.value, UnknownProviderStatus)


@pytest.mark.parametrize("created_at", [None, "yesterday", 1751294423])
def test_a_token_webhook_without_a_time_is_malformed(created_at: Any) -> None:
    body = {**EXAMPLES["recurring.token.created"], "createdAt": created_at}
    with pytest.raises(NormalizationError) as raised:
        parse(body)
    assert raised.value.reason == "malformed_body"


TYPED_V1 = PUBLISHED["webhooks_v1_typed_examples"]


def ignored_count(label: str) -> float:
    return REGISTRY.get_sample_value("paystream_events_ignored_total", {"provider": "adyen", "type": label}) or 0.0


def test_the_webhooks_v1_typed_examples_are_the_codes_the_catalog_ignores() -> None:
    assert TYPED_V1["source"].startswith("Adyen/adyen-openapi json/Webhooks-v1.json components.examples")
    assert set(TYPED_V1["examples"]) == set(tokens.EVENTCODE_TYPES.values())
    assert {body["type"] for bodies in TYPED_V1["examples"].values() for body in bodies} == set(tokens.EVENTCODE_TYPES)
    assert {CATALOG.entry(code).outcome for code in TYPED_V1["examples"]} == {"ignore"}


@pytest.mark.parametrize(("code", "index"), [(code, index) for code, bodies in TYPED_V1["examples"].items()
                                             for index in range(len(bodies))])
def test_a_webhooks_v1_typed_body_is_ignored_as_its_code_and_counted(code: str, index: int) -> None:
    body = TYPED_V1["examples"][code][index]
    label = tokens.EVENTCODE_TYPES[body["type"]]
    before = ignored_count(label)
    assert parse(body) == []
    assert ignored_count(label) == before + 1
