"""Each provider end to end on the real broker: signed pushes (or a checkout's sync observation) over HTTP to
ingest, fetches through the provider double where the push is thin, and the exact normalized events on
payments.status.v1, each valid against the JSON Schema.

One pipeline (ingest, fetcher, processor worker; e2e_pipeline.py) serves the whole module. Each story
sends a payment's steps one at a time and waits for the status event a step must cause before sending the
next: a payment's deliveries have different inbox keys (delivery ids), so without the wait they could be
normalized in any order. Steps that must cause nothing (a duplicate delivery, an older event arriving
late) are checked by the exact sequence once the worker has drained its inputs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from e2e_pipeline import Pipeline, running_pipeline
from e2e_pipeline import demo_traffic as demo
from jsonschema import Draft202012Validator, FormatChecker

from paystream.config import PROVIDERS, Settings
from schemas.event import load_schema

pytestmark = pytest.mark.kafka

EVENT_SCHEMA = Draft202012Validator(load_schema("payment-status-event"), format_checker=FormatChecker())
PAYMENT, AGREEMENT = "payment.status.changed", "agreement.status.changed"
# One expected event: (type, status, amount, captured_amount, refunded_amount, source).
Expected = tuple[str, str, int | None, int | None, int | None, str]
Story = Callable[[Pipeline, str], Awaitable[dict[str, list[Expected]]]]


def seen(event: dict[str, Any]) -> Expected:
    data = event["data"]
    return (event["type"], data["status"], data["amount"], data["captured_amount"], data["refunded_amount"],
            data["source"])


class Clock:
    """Provider time for a story: now, one second further on every tick (signatures stay fresh, and no two
    steps of a payment share a timestamp)."""

    def __init__(self) -> None:
        self.at = time.time()

    def tick(self) -> float:
        self.at += 1
        return self.at


@pytest.fixture(scope="module")
async def pipeline(
    base_settings: Settings, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("e2e")) as running:
        yield running


# --- the stories (payloads from deploy/local/demo_traffic.py) ------------------------------------------


async def stripe_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """pi_1: created → requires_capture → succeeded (delivered twice) → refunded; pi_2: its later event
    delivered first, the earlier one then changes nothing."""
    clock = Clock()
    pi1, pi2 = f"pi_e2e_{run}_1", f"pi_e2e_{run}_2"
    key1, key2 = f"stripe:main:payment_intent:{pi1}", f"stripe:main:payment_intent:{pi2}"

    def push(event_type: str, obj: dict[str, Any], created: float) -> demo.Delivery:
        return demo.stripe_push(pipe.material, demo.stripe_event(event_type, obj, int(created)), time.time())

    intent = demo.stripe_intent(pi1, "requires_payment_method", 2500, int(clock.at))
    await pipe.post(push("payment_intent.created", intent, clock.tick()))
    await pipe.wait_events(key1, 1)
    intent = {**intent, "status": "requires_capture", "latest_charge": f"ch_e2e_{run}_1"}
    await pipe.post(push("payment_intent.amount_capturable_updated", intent, clock.tick()))
    await pipe.wait_events(key1, 2)
    succeeded = push("payment_intent.succeeded", {**intent, "status": "succeeded", "amount_received": 2500},
                     clock.tick())
    await pipe.post(succeeded)
    await pipe.wait_events(key1, 3)
    await pipe.post(succeeded)  # Stripe retries: the very same signed delivery
    charge = demo.stripe_refunded_charge(f"ch_e2e_{run}_1", pi1, 2500, f"re_e2e_{run}_1", int(clock.at))
    await pipe.post(push("charge.refunded", charge, clock.tick()))
    await pipe.wait_events(key1, 4)

    authorized = demo.stripe_intent(pi2, "requires_capture", 1200, int(clock.at), latest_charge=f"ch_e2e_{run}_2")
    early, late = clock.tick(), clock.tick()
    await pipe.post(push("payment_intent.succeeded", {**authorized, "status": "succeeded", "amount_received": 1200},
                         late))
    await pipe.wait_events(key2, 1)
    await pipe.post(push("payment_intent.amount_capturable_updated", authorized, early))
    return {
        key1: [(PAYMENT, "pending", 2500, 0, 0, "push"), (PAYMENT, "authorized", 2500, 0, 0, "push"),
               (PAYMENT, "captured", 2500, 2500, 0, "push"), (PAYMENT, "refunded", 2500, 2500, 2500, "push")],
        key2: [(PAYMENT, "captured", 1200, 1200, 0, "push")],
    }


async def adyen_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """One batch of two authorisations (one refused), then the capture of the accepted one, sent twice."""
    clock = Clock()
    accepted, refused, capture = f"E2E{run}01", f"E2E{run}02", f"E2E{run}03"
    items = [demo.adyen_item(accepted, "AUTHORISATION", True, 4200, clock.tick()),
             demo.adyen_item(refused, "AUTHORISATION", False, 1500, clock.at, reason="Refused")]
    await pipe.post(demo.adyen_push(pipe.material, f"{accepted}+{refused}", "AUTHORISATION batch", items))
    await pipe.wait_events(f"adyen:main:payment:{accepted}", 1)
    items = [demo.adyen_item(capture, "CAPTURE", True, 4200, clock.tick(), originalReference=accepted)]
    captured = demo.adyen_push(pipe.material, accepted, "CAPTURE", items)
    await pipe.post(captured)
    await pipe.post(captured)  # Adyen retries a batch it got no [accepted] for
    return {
        f"adyen:main:payment:{accepted}": [(PAYMENT, "authorized", 4200, 0, 0, "push"),
                                           (PAYMENT, "captured", 4200, 4200, 0, "push")],
        # Only a successful authorisation states the payment's amount (ingest/providers/adyen/parse.py).
        f"adyen:main:payment:{refused}": [(PAYMENT, "failed", None, 0, 0, "push")],
    }


async def amazon_pay_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """Thin IPNs over SNS, each answered by a signed Get from the provider double: the charge permission,
    its charge authorized then captured (that IPN redelivered by SNS), and a partial refund."""
    clock = Clock()
    permission = f"S02-{run}-0000001"
    charge, refund = f"{permission}-C000001", f"{permission}-R000001"
    permission_key = f"amazon_pay:eu-main:charge_permission:{permission}"
    charge_key = f"amazon_pay:eu-main:charge:{charge}"

    def ipn(object_type: str, object_id: str) -> tuple[bytes, dict[str, str]]:
        message = pipe.deliveries.sns_message()
        message["Message"] = orjson.dumps({
            "ObjectType": object_type, "ObjectId": object_id, "ChargePermissionId": permission,
            "NotificationType": "STATE_CHANGE", "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V1",
        }).decode()
        return pipe.deliveries.sns(message)

    sns_path = "/webhooks/amazon_pay/eu-main"
    pipe.double.set_object("amazon_pay", "charge_permission", permission, {
        "chargePermissionId": permission, "statusDetails": demo.amazon_status("Chargeable", clock.tick()),
        "creationTimestamp": demo.amazon_time(clock.at), "releaseEnvironment": "Sandbox"})
    await pipe.post_raw(sns_path, *ipn("CHARGE_PERMISSION", permission))
    await pipe.wait_events(permission_key, 1)
    for count, state in enumerate(("Authorized", "Captured"), start=1):
        pipe.double.set_object("amazon_pay", "charge", charge,
                               demo.amazon_charge(charge, permission, state, "14.00", clock.tick()))
        body, headers = ipn("CHARGE", charge)
        await pipe.post_raw(sns_path, body, headers)
        await pipe.wait_events(charge_key, count)
    await pipe.post_raw(sns_path, body, headers)  # SNS redelivers the same signed message
    pipe.double.set_object("amazon_pay", "refund", refund, {
        "refundId": refund, "chargeId": charge, "refundAmount": {"amount": "5.00", "currencyCode": "EUR"},
        "statusDetails": demo.amazon_status("Refunded", clock.tick()), "creationTimestamp": demo.amazon_time(clock.at),
        "releaseEnvironment": "Sandbox"})
    await pipe.post_raw(sns_path, *ipn("REFUND", refund))
    await pipe.wait_events(charge_key, 3)
    fetched = [(r.path.rsplit("/", 2)[1], r.signature, r.status) for r in pipe.double.requests
               if r.provider == "amazon_pay" and permission in r.path]
    # One signed Get per distinct IPN: the redelivered one was a duplicate, and asked for nothing.
    assert sorted(fetched) == [("chargePermissions", "ok", 200), ("charges", "ok", 200), ("charges", "ok", 200),
                               ("refunds", "ok", 200)], fetched
    return {
        permission_key: [(AGREEMENT, "active", None, 0, 0, "poll")],
        charge_key: [(PAYMENT, "authorized", 1400, 0, 0, "poll"), (PAYMENT, "captured", 1400, 1400, 0, "poll"),
                     (PAYMENT, "partially_refunded", 1400, 1400, 500, "poll")],
    }


async def mollie_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """Unsigned hints (id only): each makes the processors ask the fetcher for the payment.

    A hint has no id of its own: ingest names it ``hint:{payment}:{receipt second}``, so a second hint for
    the same payment within the same second is dropped as a duplicate (its news then waits for the stale
    poll). Mollie sends one hint per status change; the second is sent in a later second, as it would be.
    """
    clock = Clock()
    payment_id, created = f"tr_e2e{run}1", clock.at
    key = f"mollie:main:payment:{payment_id}"
    for count, status in enumerate(("open", "paid"), start=1):
        await next_second()
        pipe.double.set_object("mollie", "payment", payment_id,
                               demo.mollie_payment(payment_id, status, "10.00", created, clock.tick()))
        await pipe.post(demo.mollie_hint_push(payment_id))
        await pipe.wait_events(key, count)
    assert [r.status for r in pipe.double.requests if r.path.endswith(f"/payments/{payment_id}")] == [200, 200]
    return {key: [(PAYMENT, "pending", 1000, 0, 0, "poll"), (PAYMENT, "captured", 1000, 1000, 0, "poll")]}


async def standard_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """pay_1 pending → authorized → succeeded; pay_2 pending → failed (the demo's status_map)."""
    clock = Clock()
    paid = {"id": f"pay_e2e_{run}_1", "amount": 3100, "currency": "EUR", "order_ref": f"order-{run}-1"}
    failed = {"id": f"pay_e2e_{run}_2", "amount": 800, "currency": "EUR", "order_ref": f"order-{run}-2"}
    paid_key, failed_key = f"standard:main:payment:{paid['id']}", f"standard:main:payment:{failed['id']}"
    steps = [("payment.pending", paid, paid_key, 1), ("payment.pending", failed, failed_key, 1),
             ("payment.authorized", paid, paid_key, 2),
             ("payment.failed", {**failed, "reason_code": "insufficient_funds"}, failed_key, 2),
             ("payment.succeeded", {**paid, "captured_amount": 3100}, paid_key, 3)]
    for event_type, data, key, count in steps:
        await pipe.post(demo.standard_push(pipe.material, event_type, data, clock.tick()))
        await pipe.wait_events(key, count)
    return {
        paid_key: [(PAYMENT, "pending", 3100, 0, 0, "push"), (PAYMENT, "authorized", 3100, 0, 0, "push"),
                   (PAYMENT, "captured", 3100, 3100, 0, "push")],
        failed_key: [(PAYMENT, "pending", 800, 0, 0, "push"), (PAYMENT, "failed", 800, 0, 0, "push")],
    }


async def sync_story(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """A checkout reports ``open`` and registers the payment for polling; the registered fetch finds it paid."""
    clock = Clock()
    payment_id, created = f"tr_sync{run}1", clock.at
    pipe.double.set_object("mollie", "payment", payment_id,
                           demo.mollie_payment(payment_id, "paid", "19.99", created, clock.tick()))
    request = {"provider": "mollie", "account": "main", "object_type": "payment", "object_id": payment_id,
               "order_ref": f"order-{payment_id}", "request_id": f"checkout-{payment_id}", "register_poll": True,
               "state": {"provider_status": "open", "amount": 1999, "currency": "EUR",
                         "occurred_at": demo.iso(created)}}
    await pipe.post(demo.observation(pipe.material, request, "checkout: open, poll it"))
    key = f"mollie:main:payment:{payment_id}"
    return {key: [(PAYMENT, "pending", 1999, 0, 0, "sync"), (PAYMENT, "captured", 1999, 1999, 0, "poll")]}


async def next_second() -> None:
    await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)


STORIES: dict[str, Story] = {
    "stripe": stripe_story, "adyen": adyen_story, "amazon_pay": amazon_pay_story, "mollie": mollie_story,
    "standard": standard_story, "sync_observation": sync_story,
}


@pytest.mark.parametrize("name", list(STORIES))
async def test_provider_deliveries_become_the_expected_valid_status_events(pipeline: Pipeline, name: str) -> None:
    run = uuid.uuid4().hex[:8]
    expected = await STORIES[name](pipeline, run)
    for key, wanted in expected.items():
        await pipeline.wait_events(key, len(wanted))
    await pipeline.settle()
    for key, wanted in expected.items():
        events = pipeline.events_for(key)
        assert [seen(e) for e in events] == wanted, (key, [e["data"] for e in events])
        assert [e["data"]["sequence"] for e in events] == list(range(1, len(wanted) + 1))
        assert len({e["id"] for e in events}) == len(events)
        provider, account = key.split(":")[:2]
        for event in events:
            EVENT_SCHEMA.validate(event)
            assert event["source"] == f"paystream/{provider}/{account}"
            assert event["data"]["payment_key"] == key


def test_every_provider_has_a_story() -> None:
    assert set(PROVIDERS) <= set(STORIES)

