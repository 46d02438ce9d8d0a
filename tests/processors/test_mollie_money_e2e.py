"""Mollie hints end to end on the real broker: unsigned hints to ingest (or, past the ingest harness's small hint
budget, straight to the inbox as ingest writes them), fetches from the provider double, and the exact status
events the processor emits.

* an order hint (``ord_``): the order's payment, under its own payment key, with the order's number;
* a refund hint (``re_``): found in the list of all refunds, observed under its payment;
* a subscription hint (``sub_``): an agreement on its mandate;
* a refund that fails after it was refunded: the payment moves back to captured.

Each gives the right events, the fetches ask for no stale polls on the order's, refund's or subscription's own
id, and nothing reaches payments.dlq.v1.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from e2e_pipeline import ACCOUNT, EVENT_SCHEMA, Pipeline, running_pipeline
from e2e_pipeline import demo_traffic as demo
from processor_harness import envelope, read_all, send_inbox

from paystream.config import Settings
from schemas.envelopes import FetchRequest, FetchResult

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
async def pipeline(base_settings: Settings, kafka_bootstrap: str,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("mollie-money")) as running:
        yield running
        await running.settle()
        assert await read_all(running.settings, running.settings.topics.dlq) == []


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def payment(payment_id: str, status: str = "paid", **extra: Any) -> dict[str, Any]:
    now = time.time()
    body = {"resource": "payment", "id": payment_id, "mode": "test", "status": status,
            "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": demo.iso(now - 60),
            "mandateId": "mdt_e2e0001", **extra}
    return {**body, "paidAt": demo.iso(now - 30)} if status == "paid" else body


def refund(refund_id: str, payment_id: str, status: str, value: str) -> dict[str, Any]:
    return {"resource": "refund", "id": refund_id, "amount": {"value": value, "currency": "EUR"}, "status": status,
            "createdAt": demo.iso(time.time() - 10), "paymentId": payment_id}


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (event["type"], data["status"], data["captured_amount"], data["refunded_amount"], data["provider_status"])


async def fetch_reasons(pipe: Pipeline, object_type: str, object_id: str) -> list[str]:
    key = f"mollie:{ACCOUNT}:{object_type}:{object_id}".encode()
    return [FetchRequest.from_bytes(r.value).reason
            for r in await read_all(pipe.settings, pipe.settings.topics.fetch_requests) if r.key == key]


async def hint_inbox(pipe: Pipeline, resource_id: str) -> None:
    """A hint as ingest writes it (``hint:{id}:{receipt second}``), one second after the previous one."""
    await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
    body = demo.mollie_hint_push(resource_id).body
    await send_inbox(pipe.settings, [envelope("mollie", ACCOUNT, f"hint:{resource_id}:{int(time.time())}", body,
                                              kind="hint")])


async def fetched(pipe: Pipeline, object_id: str, times: int) -> None:
    deadline = time.monotonic() + 60
    while sum(1 for r in await read_all(pipe.settings, pipe.settings.topics.fetch_results)
              if FetchResult.from_bytes(r.value).object_id == object_id) < times:
        assert time.monotonic() < deadline, f"no {times} fetch results for {object_id}"
        await asyncio.sleep(0.3)


async def test_hints_for_an_order_a_refund_and_a_subscription_become_the_right_events(pipeline: Pipeline) -> None:
    double = pipeline.double
    order_id, ordered = unique("ord_"), unique("tr_")
    double.set_object("mollie", "order", order_id, {
        "resource": "order", "id": order_id, "orderNumber": "1337", "status": "paid",
        "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": demo.iso(time.time() - 90)})
    double.set_object("mollie", "payment", ordered, payment(ordered, orderId=order_id))
    refunded, refund_id = unique("tr_"), unique("re_")
    double.set_object("mollie", "payment", refunded, payment(refunded))
    double.set_object("mollie", "refund", refund_id, refund(refund_id, refunded, "refunded", "3.00"))
    subscription_id = unique("sub_")
    double.set_object("mollie", "subscription", subscription_id, {
        "resource": "subscription", "id": subscription_id, "mode": "test", "status": "active",
        "amount": {"value": "25.00", "currency": "EUR"}, "interval": "1 month", "mandateId": "mdt_e2e0002",
        "customerId": "cst_e2e0001", "createdAt": demo.iso(time.time() - 90)})

    for resource_id in (order_id, refund_id, subscription_id):  # the ingest harness admits three hints
        await pipeline.post(demo.mollie_hint_push(resource_id))
    ordered_key, refunded_key = f"mollie:{ACCOUNT}:payment:{ordered}", f"mollie:{ACCOUNT}:payment:{refunded}"
    subscription_key = f"mollie:{ACCOUNT}:subscription:{subscription_id}"
    await pipeline.wait_events(ordered_key, 1)
    await pipeline.wait_events(refunded_key, 2)
    await pipeline.wait_events(subscription_key, 1)
    await pipeline.settle()

    (order_event,) = pipeline.events_for(ordered_key)
    assert shape(order_event) == ("payment.status.changed", "captured", 1000, 0, "paid")
    assert (order_event["data"]["order_ref"], order_event["data"]["agreement_ref"]) == ("1337", "mdt_e2e0001")
    assert [shape(e) for e in pipeline.events_for(refunded_key)] == [
        ("payment.status.changed", "captured", 1000, 0, "paid"),
        ("payment.status.changed", "partially_refunded", 1000, 300, "refund:refunded"),
    ]
    (agreement,) = pipeline.events_for(subscription_key)
    assert (agreement["type"], agreement["data"]["status"], agreement["data"]["provider_status"],
            agreement["data"]["agreement_ref"]) == ("agreement.status.changed", "active", "active", "mdt_e2e0002")
    for event in (order_event, *pipeline.events_for(refunded_key), agreement):
        EVENT_SCHEMA.validate(event)
    paths = sorted(r.path for r in double.requests if r.provider == "mollie")
    assert paths == sorted([f"/mollie/v2/orders/{order_id}", "/mollie/v2/refunds", "/mollie/v2/subscriptions"])
    for object_type, object_id in (("order", order_id), ("refund", refund_id), ("subscription", subscription_id)):
        assert await fetch_reasons(pipeline, object_type, object_id) == ["hint"], object_type


async def test_a_refund_that_fails_after_it_was_refunded_moves_the_payment_back(pipeline: Pipeline) -> None:
    double = pipeline.double
    payment_id, refund_id = unique("tr_"), unique("re_")
    key = f"mollie:{ACCOUNT}:payment:{payment_id}"
    double.set_object("mollie", "payment", payment_id, payment(payment_id))
    double.set_object("mollie", "refund", refund_id, refund(refund_id, payment_id, "refunded", "10.00"))
    await hint_inbox(pipeline, refund_id)
    await pipeline.wait_events(key, 2)
    failed = refund(refund_id, payment_id, "failed", "10.00")
    double.set_object("mollie", "refund", refund_id, {**failed, "createdAt": double.objects[
        ("mollie", "refund", refund_id)]["createdAt"]})  # Mollie dates a refund by its creation only
    await hint_inbox(pipeline, refund_id)
    await pipeline.wait_events(key, 3)
    await fetched(pipeline, refund_id, 2)
    await pipeline.settle()

    events = pipeline.events_for(key)
    assert [shape(e) for e in events] == [
        ("payment.status.changed", "captured", 1000, 0, "paid"),
        ("payment.status.changed", "refunded", 1000, 1000, "refund:refunded"),
        ("payment.status.changed", "captured", 1000, 0, "refund:failed"),
    ]
    for event in events:
        EVENT_SCHEMA.validate(event)
