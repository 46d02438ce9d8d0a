"""The Amazon Pay catalog against Amazon Pay's own published IPN values (developer docs, "Set up Instant Payment
Notifications"), and the parser's state maps against the documented states of the objects it reads.

Every listed ObjectType x NotificationType pair has a decision, the catalog decides nothing the docs lack, every
pair turns into a fetch of an object the client can get, and the parser maps exactly the documented states.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import orjson
import pytest

from ingest.providers.amazon_pay import client
from ingest.providers.amazon_pay import parse as amazon_pay
from ingest.providers.catalog import load_catalog

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"
PUBLISHED = json.loads((FIXTURES / "amazon_pay_ipn.json").read_text())
STATES = json.loads((FIXTURES / "amazon_pay_states.json").read_text())
CATALOG = load_catalog("amazon_pay")
PAIRS = [f"{o}:{n}" for o, n in itertools.product(PUBLISHED["ObjectType"], PUBLISHED["NotificationType"])]
DOCS = "https://developer.amazon.com/docs/amazon-pay-checkout/set-up-instant-payment-notifications.html"


def test_the_fixture_is_amazons_published_list_with_its_source() -> None:
    assert DOCS in PUBLISHED["source"]
    assert PUBLISHED["ObjectType"] == ["CHARGE_PERMISSION", "CHARGE", "REFUND", "CHARGEBACK"]
    assert PUBLISHED["NotificationType"] == ["STATE_CHANGE", "ATTRIBUTE_CHANGE"]
    assert any(DOCS in source for source in CATALOG.sources)
    assert CATALOG.entry_kind == "IPN ObjectType:NotificationType"


def test_every_listed_pair_has_a_decision() -> None:
    undecided = sorted(set(PAIRS) - set(CATALOG.entries))
    assert not undecided, f"documented IPN pairs without a decision: {undecided}"


def test_the_catalog_decides_nothing_the_docs_do_not_list() -> None:
    unlisted = sorted(set(CATALOG.entries) - set(PAIRS))
    assert not unlisted, f"decisions for IPN pairs Amazon Pay does not document: {unlisted}"


def test_every_ipn_is_fetched_from_an_api_the_client_calls() -> None:
    assert CATALOG.names("fetch") == sorted(PAIRS)  # thin: the IPN itself says nothing
    assert set(amazon_pay.IPN_OBJECT_TYPES) == set(PUBLISHED["ObjectType"])
    assert set(amazon_pay.IPN_OBJECT_TYPES.values()) <= set(client.RESOURCES)
    assert client.RESOURCES["dispute"] == "disputes"  # Get Dispute, for CHARGEBACK IPNs


@pytest.mark.parametrize("pair", PAIRS)
def test_every_listed_pair_names_one_object_to_fetch(pair: str) -> None:
    object_type, notification = pair.split(":")
    message = {"MerchantID": "M1", "ObjectType": object_type, "ObjectId": "S01-0000000-0000000-X000000",
               "ChargePermissionId": "S01-0000000-0000000", "NotificationType": notification,
               "NotificationId": "n-1", "NotificationVersion": "V2"}
    (target,) = amazon_pay.thin_targets(orjson.dumps({"Type": "Notification",
                                                      "Message": orjson.dumps(message).decode()}))
    assert (target.object_type, target.object_id) == (amazon_pay.IPN_OBJECT_TYPES[object_type],
                                                      "S01-0000000-0000000-X000000")


@pytest.mark.parametrize(("name", "source", "mapped"), [
    ("Charge", "Charge", set(amazon_pay.CHARGE_STATES)),
    ("Refund", "Refund", set(amazon_pay.REFUND_STATES)),
    ("ChargePermission", "ChargePermission", set(amazon_pay.CHARGE_PERMISSION_STATES)),
    ("DisputeState", "Dispute", amazon_pay.DISPUTE_OPEN_STATES | amazon_pay.DISPUTE_FINISHED_STATES),
    ("DisputeResolution", "Dispute", set(amazon_pay.DISPUTE_RESOLUTIONS)),
])
def test_the_parser_maps_exactly_the_documented_states(name: str, source: str, mapped: set[str]) -> None:
    assert "developer.amazon.com/docs/amazon-pay-api-v2/" in STATES["sources"][source]
    assert mapped == set(STATES[name]), name
