"""The Mollie catalog against Mollie's own documented resources (API reference): every resource id prefix has a
decision, nothing else is decided, every fetched prefix is an object the client can get, and the parser maps
exactly the documented status words of what it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ingest.providers.catalog import load_catalog
from ingest.providers.mollie import client
from ingest.providers.mollie import parse as mollie

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"
PUBLISHED = json.loads((FIXTURES / "mollie_resources.json").read_text())
CATALOG = load_catalog("mollie")


def test_the_fixture_is_mollies_documented_list_with_its_sources() -> None:
    assert set(PUBLISHED["prefixes"]) == {"tr_", "ord_", "re_", "chb_", "cst_", "mdt_", "sub_"}
    for family in ("prefixes", *PUBLISHED["statuses"]):
        assert "docs.mollie.com" in PUBLISHED["sources"][family], family
    assert CATALOG.entry_kind == "resource id prefix"
    assert any("Mollie API reference" in source for source in CATALOG.sources)


def test_every_documented_prefix_has_a_decision_and_nothing_else_does() -> None:
    assert sorted(CATALOG.entries) == sorted(PUBLISHED["prefixes"])


def test_fetched_prefixes_are_objects_the_client_gets_and_ignored_ones_are_not() -> None:
    fetched = set(CATALOG.names("fetch"))
    assert fetched == {"tr_", "ord_", "re_", "chb_", "sub_"}
    assert set(CATALOG.names("ignore")) == {"cst_", "mdt_"}
    assert set(mollie.HINT_OBJECT_TYPES) == fetched
    for prefix in fetched:
        object_type = mollie.HINT_OBJECT_TYPES[prefix]
        assert object_type == PUBLISHED["prefixes"][prefix]
        assert client.RESOURCES[object_type].collection == f"{object_type}s", prefix


@pytest.mark.parametrize("prefix", sorted(PUBLISHED["prefixes"]))
def test_every_prefix_is_fetched_or_counted_never_refused(prefix: str) -> None:
    labels = {"provider": "mollie", "type": prefix}
    before = REGISTRY.get_sample_value("paystream_events_ignored_total", labels) or 0.0
    targets = mollie.thin_targets(f"id={prefix}AbC123".encode())
    if CATALOG.entry(prefix).outcome == "fetch":
        assert [(t.object_type, t.object_id) for t in targets] == [(mollie.HINT_OBJECT_TYPES[prefix],
                                                                     f"{prefix}AbC123")]
    else:
        assert targets == []
        assert REGISTRY.get_sample_value("paystream_events_ignored_total", labels) == before + 1


@pytest.mark.parametrize(("family", "mapped"), [
    ("payment", set(mollie.PAYMENT_STATUSES)), ("refund", set(mollie.REFUND_STATES)),
    ("order", set(mollie.ORDER_STATUSES)), ("subscription", set(mollie.SUBSCRIPTION_STATUSES)),
])
def test_the_parser_maps_exactly_the_documented_statuses(family: str, mapped: set[str]) -> None:
    assert mapped == set(PUBLISHED["statuses"][family])


def test_mandate_statuses_are_documented_but_mandates_are_not_read() -> None:
    # Mandates reach the stream only as the agreement_ref of payments and subscriptions: a mandate hint is
    # ignored on purpose, so no mandate status word is mapped.
    assert PUBLISHED["statuses"]["mandate"] == ["valid", "pending", "invalid"]
    assert CATALOG.entry("mdt_").outcome == "ignore"
    assert "mandate" not in client.RESOURCES
