"""The Amazon Pay and Mollie clients against the provider double (real HTTP): what each hinted or IPN-named
object type asks for, and that the answer parses into observations filed under the payment. Also the double's
Stripe Events ``types[]`` filter, which the sweep relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from provider_double.server import ProviderDouble

from ingest.fetch.clients import Lanes, build_lanes
from ingest.fetch.lane import ProviderLane
from ingest.fetch.options import FetchOptions
from ingest.providers.amazon_pay import parse as amazon_pay
from ingest.providers.mollie import parse as mollie
from paystream.config import Settings
from schemas.envelopes import FetchRequest, FetchResult, to_rfc3339
from schemas.observation import Observation
from schemas.status import AgreementStatus, MoneyState, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def lanes(settings_with: Callable[..., Settings]) -> AsyncIterator[Lanes]:
    built = build_lanes(settings_with(), FetchOptions(max_attempts=1, request_timeout_s=2.0))
    yield built
    await built.close()


def request(provider: str, object_type: str, object_id: str) -> FetchRequest:
    account = "eu-main" if provider == "amazon_pay" else "main"
    now = to_rfc3339(datetime.now(UTC))
    return FetchRequest(payment_key=f"{provider}:{account}:{object_type}:{object_id}", provider=provider,
                        account=account, object_type=object_type, object_id=object_id, reason="thin_push",
                        not_before=now, requested_at=now, request_id=f"r-{object_id}", attempt=1)


async def fetched(lane: ProviderLane, object_type: str, object_id: str) -> FetchResult:
    decision = await lane.execute(request(lane.provider, object_type, object_id))
    assert decision.result is not None
    return decision.result


def observed(result: FetchResult) -> list[Observation]:
    assert result.outcome == "ok", (result.outcome, result.http_status, result.body[:300])
    parse = amazon_pay.parse if result.provider == "amazon_pay" else mollie.parse
    return parse(result.body, account=result.account, source=Source.POLL, evidence_id=result.fetch_id,
                 observed_at=NOW, object_kind=result.object_kind)


# --- Amazon Pay -------------------------------------------------------------------------------------------


async def test_a_chargeback_ipn_is_fetched_with_a_signed_get_dispute(double: ProviderDouble, lanes: Lanes) -> None:
    dispute_id, charge_id = "S02-1111111-1111111-B000001", "S02-1111111-1111111-C000001"
    double.set_object("amazon_pay", "dispute", dispute_id, {
        "disputeId": dispute_id, "chargeId": charge_id, "disputeType": "Chargeback",
        "disputeAmount": {"amount": "14.00", "currencyCode": "EUR"}, "filingReason": "Fraudulent",
        "statusDetails": {"state": "ActionRequired", "reasonCode": "MerchantResponseRequired",
                          "lastUpdatedTimestamp": "20240510T090000Z"},
        "creationTimestamp": "20240510T090000Z", "releaseEnvironment": "Sandbox"})
    result = await fetched(lanes.by_account[("amazon_pay", "eu-main")], "dispute", dispute_id)
    (record,) = [r for r in double.requests if r.provider == "amazon_pay"]
    assert (record.method, record.path, record.signature, record.status) == (
        "GET", f"/amazon_pay/sandbox/v2/disputes/{dispute_id}", "ok", 200)
    (obs,) = observed(result)
    assert (obs.object_type, obs.object_id, obs.status) == ("charge", charge_id, PaymentStatus.DISPUTED)
    assert obs.disputes[dispute_id].amount == 1400


async def test_get_dispute_needs_the_same_request_signature(double: ProviderDouble) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            f"{double.url}/amazon_pay/sandbox/v2/disputes/S02-1-B1") as reply:
        assert reply.status == 401
        assert (await reply.json())["reasonCode"] == "InvalidRequestSignature"


# --- Mollie -----------------------------------------------------------------------------------------------


def mollie_payment(payment_id: str, status: str = "paid", **extra: Any) -> dict[str, Any]:
    return {"resource": "payment", "id": payment_id, "mode": "test", "status": status,
            "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2024-05-01T10:00:00+00:00",
            "paidAt": "2024-05-01T10:05:00+00:00", **extra}


def mollie_refund(refund_id: str, payment_id: str, status: str, value: str = "2.00") -> dict[str, Any]:
    return {"resource": "refund", "id": refund_id, "amount": {"value": value, "currency": "EUR"}, "status": status,
            "createdAt": "2024-05-02T09:00:00+00:00", "paymentId": payment_id}


async def test_a_payment_is_fetched_with_its_refunds_and_chargebacks_embedded(double: ProviderDouble,
                                                                            lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_A1", mollie_payment("tr_A1", mandateId="mdt_A1"))
    double.set_object("mollie", "refund", "re_A1", mollie_refund("re_A1", "tr_A1", "refunded"))
    double.set_object("mollie", "refund", "re_B1", mollie_refund("re_B1", "tr_B1", "refunded"))  # another's
    double.set_object("mollie", "chargeback", "chb_A1", {
        "resource": "chargeback", "id": "chb_A1", "amount": {"value": "8.00", "currency": "EUR"},
        "createdAt": "2024-05-03T09:00:00+00:00", "reversedAt": None, "paymentId": "tr_A1"})
    result = await fetched(lanes.by_account[("mollie", "main")], "payment", "tr_A1")
    (record,) = [r for r in double.requests if r.provider == "mollie"]
    assert record.path == "/mollie/v2/payments/tr_A1"
    payment, refund, chargeback = observed(result)
    assert (payment.status, payment.agreement_ref, dict(payment.refunds)) == (PaymentStatus.CAPTURED, "mdt_A1", {})
    assert dict(refund.refunds) == {"re_A1": refund.refunds["re_A1"]} and refund.refunds["re_A1"].amount == 200
    assert (chargeback.status, set(chargeback.disputes)) == (PaymentStatus.CHARGED_BACK, {"chb_A1"})


async def test_an_order_is_fetched_with_its_payments(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("mollie", "order", "ord_O1", {
        "resource": "order", "id": "ord_O1", "orderNumber": "1337", "status": "paid",
        "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2024-05-01T09:59:00+00:00"})
    double.set_object("mollie", "payment", "tr_O1", mollie_payment("tr_O1", orderId="ord_O1"))
    double.set_object("mollie", "payment", "tr_X1", mollie_payment("tr_X1", orderId="ord_other"))
    (obs,) = observed(await fetched(lanes.by_account[("mollie", "main")], "order", "ord_O1"))
    assert (obs.object_type, obs.object_id, obs.status, obs.order_ref) == (
        "payment", "tr_O1", PaymentStatus.CAPTURED, "1337")


async def test_a_refund_is_found_from_its_id_in_the_list_of_all_refunds(double: ProviderDouble,
                                                                      lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_R1", mollie_payment("tr_R1"))
    for refund_id in ("re_R0", "re_R1", "re_R2"):  # re_R2 is the newest
        double.set_object("mollie", "refund", refund_id, mollie_refund(refund_id, "tr_R1", "failed"))
    lane = lanes.by_account[("mollie", "main")]
    payment, refund = observed(await fetched(lane, "refund", "re_R1"))
    assert (payment.object_id, payment.status) == ("tr_R1", PaymentStatus.CAPTURED)
    assert (refund.object_type, refund.object_id, refund.refunds["re_R1"].state) == (
        "payment", "tr_R1", MoneyState.FAILED)
    assert set(refund.refunds) == {"re_R1"}  # one refund: the one hinted
    assert observed(await fetched(lane, "refund", "re_missing")) == []


async def test_a_subscription_is_found_from_its_id_in_the_list_of_all_subscriptions(double: ProviderDouble,
                                                                                   lanes: Lanes) -> None:
    double.set_object("mollie", "subscription", "sub_S1", {
        "resource": "subscription", "id": "sub_S1", "status": "suspended", "mandateId": "mdt_S1",
        "customerId": "cst_S1", "createdAt": "2024-05-01T09:00:00+00:00"})
    (obs,) = observed(await fetched(lanes.by_account[("mollie", "main")], "subscription", "sub_S1"))
    assert (obs.object_type, obs.object_id, obs.status, obs.agreement_ref) == (
        "subscription", "sub_S1", AgreementStatus.SUSPENDED, "mdt_S1")
    (record,) = [r for r in double.requests if r.provider == "mollie"]
    assert record.path == "/mollie/v2/subscriptions"


async def test_what_mollie_cannot_get_by_id_alone_is_not_asked_for(lanes: Lanes) -> None:
    lane = lanes.by_account[("mollie", "main")]
    for object_type in ("customer", "mandate"):
        decision = await lane.execute(request("mollie", object_type, "x_1"))
        assert decision.result is not None and decision.result.outcome == "unsupported"


# --- the double's Stripe Events types[] filter -----------------------------------------------------------


async def test_the_stripe_events_list_filters_by_types_and_refuses_more_than_20(double: ProviderDouble) -> None:
    for n, event_type in enumerate(["payment_intent.succeeded", "customer.created", "charge.refunded"]):
        double.add_stripe_event({"id": f"evt_{n}", "object": "event", "type": event_type, "created": 1_700_000_000 + n})
    url = f"{double.url}/stripe/v1/events"
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_double"}) as session:
        query = [("types[]", "payment_intent.succeeded"), ("types[]", "charge.refunded")]
        async with session.get(url, params=query) as reply:
            page = await reply.json()
        assert [e["id"] for e in page["data"]] == ["evt_2", "evt_0"]
        async with session.get(url, params=[("types[]", f"type.{n}") for n in range(21)]) as reply:
            assert reply.status == 400
            assert orjson.loads(await reply.read())["error"]["type"] == "invalid_request_error"
        async with session.get(url, params=[("types[]", f"type.{n}") for n in range(20)]) as reply:
            assert reply.status == 200 and (await reply.json())["data"] == []
