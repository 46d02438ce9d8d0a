"""Stripe's money-moving sequences end to end on the real broker: signed webhooks over HTTP to ingest, the
processor worker, and the exact events on payments.status.v1 (each valid against the JSON Schema).

* a refund that fails after ``charge.refunded`` — with the embedded refunds list (API versions before
  2022-11-15) and without it (``amount_refunded``) — takes the payment back to captured, refunded 0;
* a dispute opened, then won (back to captured, nothing disputed) or lost (charged back);
* every Checkout Session event reaches the session's PaymentIntent (one payment whichever events arrive);
* an early fraud warning on a captured payment sets ``risk`` (the status stays captured), and clears it;
* every one of the 275 event types Stripe documents, each event built from Stripe's own example object and
  signed like a real Stripe webhook, goes through the running pipeline with 0 records on the DLQ.

One pipeline (ingest, fetcher, processor worker; e2e_pipeline.py) serves the module. Each story sends a
payment's steps one at a time and waits for the status event a step must cause before sending the next (a
payment's deliveries have different inbox keys, so without the wait they could be normalized in any order).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import stripe as stripe_sdk
from e2e_pipeline import EVENT_SCHEMA, Pipeline, running_pipeline
from e2e_pipeline import demo_traffic as demo
from processor_harness import read_all

from ingest.providers import parsing as providers
from ingest.providers.catalog import load_catalog
from ingest.providers.signers import sign_stripe
from paystream.config import Settings
from schemas.status import Source

pytestmark = pytest.mark.kafka

CATALOGS = Path(__file__).resolve().parents[1] / "fixtures" / "catalogs"
# (status, amount, captured_amount, refunded_amount, disputed_amount, reason_code) of one status event.
Seen = tuple[str, int | None, int, int, int, str | None]


def seen(event: dict[str, Any]) -> Seen:
    data = event["data"]
    return (data["status"], data["amount"], data["captured_amount"], data["refunded_amount"],
            data["disputed_amount"], data["reason_code"])


@pytest.fixture(scope="module")
async def pipeline(
    base_settings: Settings, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("stripe-e2e")) as running:
        yield running


class Story:
    """One payment's Stripe events, in provider time one second apart, each signed and posted as Stripe would."""

    def __init__(self, pipe: Pipeline, name: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.pipe = pipe
        self.pi, self.ch, self.pm = f"pi_{name}_{run}", f"ch_{name}_{run}", f"pm_{name}_{run}"
        self.key = f"stripe:main:payment_intent:{self.pi}"
        self.at = int(time.time()) - 600

    async def send(self, event_type: str, obj: dict[str, Any]) -> None:
        self.at += 1
        await self.pipe.post(demo.stripe_push(self.pipe.material, demo.stripe_event(event_type, obj, self.at),
                                              time.time()))

    async def step(self, event_type: str, obj: dict[str, Any], events: int) -> list[dict[str, Any]]:
        """Send, and wait until the payment has ``events`` status events."""
        await self.send(event_type, obj)
        return await self.pipe.wait_events(self.key, events)

    async def settled(self) -> list[dict[str, Any]]:
        """Every status event of the payment once the worker drained its inputs (a late extra event shows)."""
        await self.pipe.settle()
        events = self.pipe.events_for(self.key)
        for event in events:
            EVENT_SCHEMA.validate(event)
        assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1))
        return events

    def intent(self, status: str, **fields: Any) -> dict[str, Any]:
        return demo.stripe_intent(self.pi, status, 2500, self.at, latest_charge=self.ch, payment_method=self.pm,
                                  **fields)

    def charge(self, **fields: Any) -> dict[str, Any]:
        return {"id": self.ch, "object": "charge", "amount": 2500, "amount_captured": 2500, "amount_refunded": 0,
                "captured": True, "refunded": False, "disputed": False, "status": "succeeded", "paid": True,
                "currency": "eur", "payment_intent": self.pi, "payment_method": self.pm, "created": self.at,
                "metadata": {"order_ref": f"order-{self.pi}"},
                "payment_method_details": {"type": "card", "card": {"brand": "visa", "mandate": None}}, **fields}

    def refund(self, status: str, **fields: Any) -> dict[str, Any]:
        return {"id": f"re_{self.pi}", "object": "refund", "amount": 2500, "currency": "eur", "status": status,
                "charge": self.ch, "payment_intent": self.pi, "created": self.at, **fields}

    def dispute(self, status: str) -> dict[str, Any]:
        return {"id": f"dp_{self.pi}", "object": "dispute", "amount": 2500, "currency": "eur", "status": status,
                "charge": self.ch, "payment_intent": self.pi, "reason": "fraudulent", "created": self.at}

    def session(self, payment_status: str, status: str = "complete", **fields: Any) -> dict[str, Any]:
        return {"id": f"cs_{self.pi}", "object": "checkout.session", "mode": "payment", "payment_intent": self.pi,
                "payment_status": payment_status, "status": status, "amount_total": 2500, "currency": "eur",
                "client_reference_id": f"cart-{self.pi}", "metadata": {}, "created": self.at, **fields}


CAPTURED: Seen = ("captured", 2500, 2500, 0, 0, None)


# --- refunds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded-refunds-list", "amount-refunded-only"])
async def test_a_refund_failing_after_charge_refunded_takes_the_payment_back_to_captured(
    pipeline: Pipeline, embedded: bool
) -> None:
    story = Story(pipeline, "refail")
    await story.step("payment_intent.succeeded", story.intent("succeeded", amount_received=2500), 1)
    refunded = story.charge(amount_refunded=2500, refunded=True)
    if embedded:
        refunded["refunds"] = {"object": "list", "has_more": False, "data": [story.refund("succeeded")]}
    await story.step("charge.refunded", refunded, 2)
    failed = story.refund("failed", failure_reason="expired_or_canceled_card")
    await story.step("refund.failed", failed, 3)
    await story.send("charge.refund.updated", failed)  # the same failure, told again: nothing new
    events = await story.settled()
    assert [seen(e) for e in events] == [CAPTURED, ("refunded", 2500, 2500, 2500, 0, None),
                                         ("captured", 2500, 2500, 0, 0, "expired_or_canceled_card")]
    assert events[-1]["data"]["previous_status"] == "refunded"


# --- disputes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "final"), [("won", ("captured", 2500, 2500, 0, 0, "fraudulent")),
                                                ("lost", ("charged_back", 2500, 2500, 0, 2500, "fraudulent"))])
async def test_a_dispute_opens_and_is_won_or_lost(pipeline: Pipeline, outcome: str, final: Seen) -> None:
    story = Story(pipeline, f"dp{outcome}")
    await story.step("charge.captured", story.charge(), 1)
    await story.step("charge.dispute.created", story.dispute("needs_response"), 2)
    await story.send("charge.updated", story.charge(disputed=True))  # the charge cannot say how the dispute stands
    await story.send("charge.dispute.funds_withdrawn", story.dispute("needs_response"))  # no change
    await story.step("charge.dispute.closed", story.dispute(outcome), 3)
    events = await story.settled()
    assert [seen(e) for e in events] == [CAPTURED, ("disputed", 2500, 2500, 0, 2500, "fraudulent"), final]


# --- Checkout Sessions ---------------------------------------------------------------------------------


async def test_a_paid_session_and_its_intent_are_one_payment(pipeline: Pipeline) -> None:
    story = Story(pipeline, "cspaid")
    events = await story.step("checkout.session.completed", story.session("paid"), 1)
    assert events[0]["data"]["order_ref"] == f"cart-{story.pi}"  # the session's client_reference_id
    await story.step("payment_intent.succeeded", story.intent("succeeded", amount_received=2500), 2)
    events = await story.settled()
    # The session says paid but names no charge to count a capture by; the PaymentIntent then does.
    assert [seen(e) for e in events] == [("captured", 2500, 0, 0, 0, None), CAPTURED]
    assert events[-1]["data"]["agreement_ref"] == story.pm


@pytest.mark.parametrize(("event_type", "final"), [("checkout.session.async_payment_succeeded", "captured"),
                                                   ("checkout.session.async_payment_failed", "failed")])
async def test_an_asynchronous_session_is_pending_until_its_outcome(pipeline: Pipeline, event_type: str,
                                                                     final: str) -> None:
    story = Story(pipeline, "csasync")
    await story.step("checkout.session.completed", story.session("unpaid"), 1)
    paid = "paid" if final == "captured" else "unpaid"
    await story.step(event_type, story.session(paid), 2)
    events = await story.settled()
    assert [seen(e)[0] for e in events] == ["pending", final]
    assert all(e["data"]["provider"] == "stripe" and e["subject"] == story.key for e in events)


async def test_an_expired_session_cancels_its_intent_and_sessions_without_a_payment_cause_nothing(
    pipeline: Pipeline,
) -> None:
    story = Story(pipeline, "csexp")
    nothing = Story(pipeline, "csnone")
    # Sessions that name no payment: expired before any attempt, setup mode, nothing to pay.
    await nothing.send("checkout.session.expired", nothing.session("unpaid", status="expired", payment_intent=None))
    await nothing.send("checkout.session.completed", nothing.session("no_payment_required", mode="setup",
                                                                     payment_intent=None))
    await nothing.send("checkout.session.completed", nothing.session("no_payment_required"))
    await story.step("checkout.session.expired", story.session("unpaid", status="expired"), 1)
    events = await story.settled()
    assert [seen(e)[0] for e in events] == ["canceled"]
    assert nothing.pipe.events_for(nothing.key) == []
    assert [e for e in pipeline.follower.events if nothing.pi in e["subject"]] == []


# --- risk ----------------------------------------------------------------------------------------------


async def test_a_fraud_warning_on_a_captured_payment_sets_risk_and_keeps_the_status(pipeline: Pipeline) -> None:
    story = Story(pipeline, "efw")
    await story.step("payment_intent.succeeded", story.intent("succeeded", amount_received=2500), 1)
    warning = {"id": f"issfr_{story.pi}", "object": "radar.early_fraud_warning", "actionable": True,
               "charge": story.ch, "payment_intent": story.pi, "fraud_type": "made_with_stolen_card",
               "created": story.at}
    await story.step("radar.early_fraud_warning.created", warning, 2)
    await story.step("radar.early_fraud_warning.updated", {**warning, "actionable": False}, 3)
    events = await story.settled()
    # The status stays captured; the events that change the risk say why (the issuer's fraud type).
    assert [seen(e) for e in events] == [CAPTURED, *[("captured", 2500, 2500, 0, 0, "made_with_stolen_card")] * 2]
    signal = {"id": f"issfr_{story.pi}", "kind": "early_fraud_warning", "reason": "made_with_stolen_card"}
    assert [e["data"]["risk"] for e in events] == [
        None, {"hold": True, "signals": [{**signal, "state": "open"}]},
        {"hold": False, "signals": [{**signal, "state": "cleared"}]}]


# --- every documented event type -----------------------------------------------------------------------


def documented_events() -> list[dict[str, Any]]:
    """An event of each of the 275 types, its data object built from Stripe's own example (fixtures3)."""
    listed = json.loads((CATALOGS / "stripe_event_types.json").read_text())["event_types"]
    resources = json.loads((CATALOGS / "stripe_fixtures3.json").read_text())["resources"]
    objects = json.loads((CATALOGS / "stripe_event_objects.json").read_text())["types"]
    start = int(time.time()) - 3600
    events = []
    for number, event_type in enumerate(listed):
        spec = objects[event_type]
        obj = (copy.deepcopy(resources[spec["resource"]]) if "resource" in spec
               else {"id": f"{spec['object'].replace('.', '_')}_1", "object": spec["object"], "livemode": False})
        obj.update(spec.get("set", {}))
        events.append(demo.stripe_event(event_type, obj, start + number))
    return events


async def test_every_documented_event_type_goes_through_without_a_dead_letter(pipeline: Pipeline) -> None:
    pipe, settings = pipeline, pipeline.settings
    catalog = load_catalog("stripe")
    events = documented_events()
    assert len(events) == 275
    sending = asyncio.Semaphore(16)
    secret = pipe.material.stripe_secret

    def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps(event)
        return body, {"Content-Type": "application/json; charset=utf-8",
                      "Stripe-Signature": sign_stripe(body, secret, int(time.time()))}

    body, headers = signed(events[0])  # the official SDK, as an oracle, accepts the signature
    assert stripe_sdk.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], secret).id == events[0]["id"]

    async def post(event: dict[str, Any]) -> None:
        async with sending:
            await pipe.post_raw("/webhooks/stripe/main", *signed(event))  # 2xx once Kafka acknowledged

    started = time.monotonic()
    await asyncio.gather(*(post(event) for event in events))
    await pipe.settle()
    dead = await read_all(settings, settings.topics.dlq)
    known = [e for e in events if e["type"] in catalog.entries]
    outcomes = Counter("ignored" if catalog.entry(e["type"]).outcome == "ignore" else "mapped" for e in known)
    print(f"\nstripe: {len(events)} documented event types sent in {time.monotonic() - started:.1f}s: "
          f"mapped {outcomes['mapped']}, ignored {outcomes['ignored']}, unknown {len(events) - len(known)}; "
          f"records on {settings.topics.dlq}: {len(dead)}")
    assert [(dict(r.headers), r.value[:200]) for r in dead] == []
    # The mapped events really went through: every payment or agreement one of them gives a status to has
    # status events (those it names only amounts or risk for wait, parked, for a status).
    decided = {obs.payment_key for event in known
               for obs in providers.parse("stripe", orjson.dumps(event), account="main", account_config=None,
                                          source=Source.PUSH, evidence_id=event["id"], observed_at=datetime.now(UTC),
                                          object_kind="event")
               if obs.status is not None}
    assert {key.split(":")[2] for key in decided} == {"payment_intent", "charge", "mandate", "payment_method"}
    assert {key for key in decided if not pipe.events_for(key)} == set()
