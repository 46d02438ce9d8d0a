"""Adyen per-item HMAC verification.

Vectors: tests/fixtures/vectors/adyen.json — from Adyen/adyen-python-api-library test/UtilTest.py and
test/mocks/util/*.json (commit b6f49792b79c23e2674b35c04dd045aa07daf599).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from Adyen import util as adyen_util
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers.adyen.verify import signing_string, verify
from ingest.providers.signers import adyen_batch, sign_adyen_item
from paystream.errors import ConfigurationError, MalformedDelivery, SignatureError

KEY = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174"
OTHER_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
T = 1_700_000_000


@pytest.fixture(scope="module")
def vectors(load_vector: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The five standard-notification vectors, each item carrying its published hmacSignature."""
    found = []
    for vector in load_vector("adyen.json")["standard_notification_vectors"]:
        item = copy.deepcopy(vector["notification_request_item"])
        item.setdefault("additionalData", {})["hmacSignature"] = vector["expected_hmacSignature"]
        found.append({**vector, "item": item})
    return found


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("adyen", [KEY])


@pytest.fixture(scope="module")
def deliver(make_delivery: Callable[..., IncomingDelivery]) -> Callable[[bytes], IncomingDelivery]:
    return lambda body: make_delivery("adyen", body, {"content-type": "application/json"}, T)


def _tamper(item: dict[str, Any]) -> dict[str, Any]:
    tampered = copy.deepcopy(item)
    tampered["amount"]["value"] += 1
    return tampered


@pytest.mark.parametrize("index", range(5))
async def test_published_vector_verifies(index: int, vectors: Any, make_account: Any, deliver: Any) -> None:
    vector = vectors[index]
    item = vector["item"]
    assert signing_string(item) == vector["signing_string"]
    result = await verify(deliver(adyen_batch([item])), make_account("adyen", [vector["hmac_key_hex"]]))

    (accepted,) = result.accepted
    assert result.rejected == []
    assert accepted.delivery_id == f"{item['pspReference']}:AUTHORISATION:true"
    assert orjson.loads(accepted.body) == item
    assert (accepted.verification.verifier, accepted.verification.key_id) == ("adyen-hmac", "secret[0]")
    assert accepted.object_ids["object_id"] == item["pspReference"]


@pytest.mark.parametrize("index", range(5))
async def test_one_byte_change_fails(index: int, vectors: Any, make_account: Any, deliver: Any) -> None:
    vector = vectors[index]
    item = copy.deepcopy(vector["item"])
    item["merchantReference"] = item["merchantReference"][:-1] + "X"
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(adyen_batch([item])), make_account("adyen", [vector["hmac_key_hex"]]))
    assert raised.value.code == "bad_signature"


async def test_partial_batch_accepts_only_verified_items(vectors: Any, account: ResolvedAccount, deliver: Any) -> None:
    good_a, good_b, bad = vectors[1]["item"], vectors[2]["item"], _tamper(vectors[3]["item"])
    result = await verify(deliver(adyen_batch([good_a, bad, good_b])), account)

    assert [orjson.loads(accepted.body) for accepted in result.accepted] == [good_a, good_b]
    assert [rejected.reason for rejected in result.rejected] == ["bad_signature"]
    assert result.rejected[0].detail.startswith("item 1:")
    assert all(bad["pspReference"].encode() not in accepted.body for accepted in result.accepted)


async def test_all_items_fail(vectors: Any, account: ResolvedAccount, deliver: Any) -> None:
    body = adyen_batch([_tamper(vectors[1]["item"]), _tamper(vectors[2]["item"])])
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body), account)
    assert raised.value.code == "bad_signature"
    assert raised.value.status == 401


async def test_item_without_signature_is_rejected(vectors: Any, account: ResolvedAccount, deliver: Any) -> None:
    unsigned = copy.deepcopy(vectors[2]["item"])
    del unsigned["additionalData"]["hmacSignature"]
    result = await verify(deliver(adyen_batch([vectors[1]["item"], unsigned])), account)
    assert [rejected.reason for rejected in result.rejected] == ["missing_signature"]
    assert len(result.accepted) == 1


async def test_only_unsigned_items(vectors: Any, account: ResolvedAccount, deliver: Any) -> None:
    unsigned = copy.deepcopy(vectors[2]["item"])
    del unsigned["additionalData"]
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(adyen_batch([unsigned])), account)
    assert raised.value.code == "missing_signature"


async def test_body_that_is_not_json(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(b"[accepted"), account)
    assert raised.value.code == "malformed_json"


async def test_body_without_notification_items(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(b'{"live": "false", "notificationItems": []}'), account)
    assert raised.value.code == "malformed_batch"


async def test_no_secret_configured(vectors: Any, make_account: Any, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(adyen_batch([vectors[1]["item"]])), make_account("adyen", []))
    assert raised.value.code == "no_secret_configured"


async def test_rotation_second_secret_matches(vectors: Any, make_account: Any, deliver: Any) -> None:
    result = await verify(deliver(adyen_batch([vectors[1]["item"]])), make_account("adyen", [OTHER_KEY, KEY]))
    assert result.accepted[0].verification.key_id == "secret[1]"


async def test_undecodable_key_is_a_configuration_error(vectors: Any, make_account: Any, deliver: Any) -> None:
    with pytest.raises(ConfigurationError):
        await verify(deliver(adyen_batch([vectors[1]["item"]])), make_account("adyen", ["not-hex"]))


async def test_modification_points_at_the_original_payment(account: ResolvedAccount, deliver: Any) -> None:
    capture = {
        "pspReference": "CAPTURE123",
        "originalReference": "PAYMENT456",
        "merchantAccountCode": "Merchant",
        "merchantReference": "order-7",
        "amount": {"value": 500, "currency": "EUR"},
        "eventCode": "CAPTURE",
        "success": "true",
    }
    result = await verify(deliver(adyen_batch([sign_adyen_item(capture, KEY)], live=True)), account)
    assert result.accepted[0].delivery_id == "CAPTURE123:CAPTURE:true"
    assert result.accepted[0].object_ids == {
        "event_type": "CAPTURE",
        "object_type": "payment",
        "object_id": "PAYMENT456",
        "psp_reference": "CAPTURE123",
        "original_reference": "PAYMENT456",
        "merchant_reference": "order-7",
        "live": "true",
    }


_references = st.text(min_size=1, max_size=30)
_items = st.fixed_dictionaries(
    {
        "pspReference": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=16),
        "merchantAccountCode": _references,
        "merchantReference": _references,  # any text, ':' and '\\' included: nothing is escaped
        "amount": st.fixed_dictionaries(
            {"value": st.integers(0, 10**9), "currency": st.sampled_from(["EUR", "USD", "JPY"])}
        ),
        "eventCode": st.sampled_from(["AUTHORISATION", "CAPTURE", "REFUND", "CHARGEBACK"]),
        "success": st.sampled_from(["true", "false"]),
    },
    optional={"originalReference": _references},
)


@settings(max_examples=30, deadline=None)
@given(item=_items)
def test_sdk_signed_items_verify(item: dict[str, Any], account: ResolvedAccount, deliver: Any) -> None:
    signed = {**item, "additionalData": {"hmacSignature": adyen_util.generate_notification_sig(item, KEY).decode()}}
    result = asyncio.run(verify(deliver(adyen_batch([signed])), account))
    assert orjson.loads(result.accepted[0].body) == signed


@settings(max_examples=30, deadline=None)
@given(item=_items)
def test_our_signer_satisfies_the_sdk(item: dict[str, Any]) -> None:
    signed = sign_adyen_item(item, KEY)
    assert adyen_util.is_valid_hmac_notification(signed, KEY) is True
    assert adyen_util.is_valid_hmac_notification(sign_adyen_item(item, OTHER_KEY), KEY) is False
