"""Stripe-Signature verification.

Vectors: tests/fixtures/vectors/stripe.json — constants from stripe/stripe-python tests/test_webhook.py
(commit 6c6e3736d16dde7a2f0155379ea3cd99b976460b); its expected values are DERIVED (published algorithm
on published constants), so the official SDK is used as an independent oracle below as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.delivery import IncomingDelivery, ResolvedAccount, VerificationResult
from ingest.providers.signers import sign_stripe
from ingest.providers.stripe.verify import verify
from paystream.errors import MalformedDelivery, SignatureError

SECRET = "whsec_test_secret"
T = 1_700_000_000


@pytest.fixture
def vector(load_vector: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return load_vector("stripe.json")


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("stripe", [SECRET])


@pytest.fixture(scope="module")
def deliver(make_delivery: Callable[..., IncomingDelivery]) -> Callable[..., IncomingDelivery]:
    def build(body: bytes, header: str | None, received_at: float = T + 10) -> IncomingDelivery:
        headers = {} if header is None else {"Stripe-Signature": header}
        return make_delivery("stripe", body, headers, received_at)

    return build


async def test_derived_vector_verifies(vector: dict[str, Any], account: ResolvedAccount, deliver: Any) -> None:
    derived = vector["derived_vectors"][0]
    result = await verify(deliver(derived["payload"].encode(), derived["header"]), account)

    (accepted,) = result.accepted
    assert accepted.delivery_id == "evt_test_webhook"
    assert accepted.kind == "event"
    assert accepted.body == derived["payload"].encode()
    assert accepted.verification.verifier == "stripe-v1"
    assert accepted.verification.key_id == "secret[0]"
    assert accepted.object_ids == {"object_id": "rdr_123", "object_type": "terminal.reader"}


async def test_one_byte_change_fails(vector: dict[str, Any], account: ResolvedAccount, deliver: Any) -> None:
    derived = vector["derived_vectors"][0]
    body = derived["payload"].encode().replace(b"rdr_123", b"rdr_124")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, derived["header"]), account)
    assert raised.value.code == "bad_signature"


async def test_header_with_old_and_new_signature_verifies(
    vector: dict[str, Any], account: ResolvedAccount, deliver: Any
) -> None:
    rotation = vector["derived_vectors"][1]
    result = await verify(deliver(rotation["payload"].encode(), rotation["header"]), account)
    assert result.accepted[0].delivery_id == "evt_test_webhook"


async def test_extra_bad_v1_is_ignored(vector: dict[str, Any], account: ResolvedAccount, deliver: Any) -> None:
    payload = vector["derived_vectors"][0]["payload"].encode()
    result = await verify(deliver(payload, vector["derived_vectors"][3]["header"]), account)
    assert result.accepted[0].verification.key_id == "secret[0]"


async def test_v0_only_header_is_refused(vector: dict[str, Any], account: ResolvedAccount, deliver: Any) -> None:
    payload = vector["derived_vectors"][0]["payload"].encode()
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(payload, vector["derived_vectors"][2]["header"]), account)
    assert raised.value.code == "malformed_header"


async def test_missing_header(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(b'{"id": "evt_1"}', None), account)
    assert raised.value.code == "missing_header"
    assert raised.value.status == 401


async def test_header_without_timestamp_is_malformed(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(b'{"id": "evt_1"}', "v1=abcdef"), account)
    assert raised.value.code == "malformed_header"


async def test_non_numeric_timestamp_is_malformed(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(b'{"id": "evt_1"}', "t=-170000000,v1=abcdef"), account)
    assert raised.value.code == "malformed_header"


async def test_stale_timestamp(account: ResolvedAccount, deliver: Any) -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, sign_stripe(body, SECRET, T), received_at=T + 301), account)
    assert raised.value.code == "stale_timestamp"


async def test_future_timestamp(account: ResolvedAccount, deliver: Any) -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, sign_stripe(body, SECRET, T), received_at=T - 301), account)
    assert raised.value.code == "future_timestamp"


async def test_timestamp_at_tolerance_edge_is_accepted(account: ResolvedAccount, deliver: Any) -> None:
    body = b'{"id": "evt_1"}'
    result = await verify(deliver(body, sign_stripe(body, SECRET, T), received_at=T + 300), account)
    assert result.accepted[0].delivery_id == "evt_1"


async def test_no_secret_configured(make_account: Any, deliver: Any) -> None:
    body = b'{"id": "evt_1"}'
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, sign_stripe(body, SECRET, T)), make_account("stripe", []))
    assert raised.value.code == "no_secret_configured"


async def test_rotation_second_secret_matches(make_account: Any, deliver: Any) -> None:
    body = b'{"id": "evt_1"}'
    account = make_account("stripe", ["whsec_new_secret_not_yet_used", SECRET])
    result = await verify(deliver(body, sign_stripe(body, SECRET, T)), account)
    assert result.accepted[0].verification.key_id == "secret[1]"
    assert SECRET not in repr(result)


async def test_thin_v2_event_notification(account: ResolvedAccount, deliver: Any) -> None:
    body = orjson.dumps(
        {
            "id": "evt_test_65R9Ijk8P2ddWxyWkr6",
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered",
            "livemode": False,
            "created": "2024-09-17T06:20:52.246Z",
            "related_object": {"id": "mtr_test_61R9", "type": "billing.meter", "url": "/v1/billing/meters/mtr"},
        }
    )
    (accepted,) = (await verify(deliver(body, sign_stripe(body, SECRET, T)), account)).accepted
    assert accepted.kind == "thin"
    assert accepted.object_ids == {
        "event_type": "v1.billing.meter.error_report_triggered",
        "object_id": "mtr_test_61R9",
        "object_type": "billing.meter",
    }


async def test_classic_event_ids(account: ResolvedAccount, deliver: Any) -> None:
    body = orjson.dumps(
        {
            "id": "evt_2",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "object": "payment_intent"}},
        }
    )
    (accepted,) = (await verify(deliver(body, sign_stripe(body, SECRET, T)), account)).accepted
    assert (accepted.kind, accepted.object_ids["event_type"]) == ("event", "payment_intent.succeeded")
    assert accepted.object_ids["object_id"] == "pi_1"


async def test_signed_body_that_is_not_json(account: ResolvedAccount, deliver: Any) -> None:
    body = b"not json"
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(body, sign_stripe(body, SECRET, T)), account)
    assert raised.value.code == "malformed_json"


async def test_unsigned_garbage_is_a_signature_error_not_a_parse_error(account: ResolvedAccount, deliver: Any) -> None:
    # The body is never parsed before the signature matched.
    with pytest.raises(SignatureError):
        await verify(deliver(b"not json", sign_stripe(b"other", SECRET, T)), account)


_event_ids = st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=24)


@settings(max_examples=25, deadline=None)
@given(event_id=_event_ids, note=st.text(max_size=80), timestamp=st.integers(T - 10**6, T + 10**6))
def test_sdk_signed_events_verify(
    event_id: str, note: str, timestamp: int, account: ResolvedAccount, deliver: Any
) -> None:
    payload = orjson.dumps({"id": f"evt_{event_id}", "object": "event", "note": note}).decode()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, timestamp=timestamp)
    result: VerificationResult = asyncio.run(verify(deliver(payload.encode(), header, timestamp + 1), account))
    assert result.accepted[0].delivery_id == f"evt_{event_id}"


@settings(max_examples=25, deadline=None)
@given(event_id=_event_ids, note=st.text(max_size=80), timestamp=st.integers(T - 10**6, T + 10**6))
def test_our_signer_satisfies_the_sdk(event_id: str, note: str, timestamp: int) -> None:
    payload = orjson.dumps({"id": f"evt_{event_id}", "object": "event", "note": note})
    header = sign_stripe(payload, ["whsec_other", SECRET], timestamp)
    # tolerance=None: the SDK compares with the wall clock, which is not what this test is about.
    assert stripe.WebhookSignature.verify_header(payload.decode(), header, SECRET, tolerance=None) is True
