"""Each provider end to end on the real broker: signed pushes (or a checkout's sync observation) over HTTP to
ingest, fetches through the provider double where the push is thin, and the exact normalized events on
payments.status.v1, each valid against the JSON Schema.

One pipeline (ingest, fetcher, processor worker; e2e_pipeline.py) serves the whole module, and the stories
of all providers run at once (they share nothing but the pipeline). Each story sends a payment's steps one
at a time and waits for the status event a step must cause before sending the next: a payment's deliveries
have different inbox keys (delivery ids), so without the wait they could be normalized in any order. Steps
that must cause nothing (a duplicate delivery, an older event arriving late) are checked by the exact
sequence once the worker has drained its inputs.

The shuffled test then sends every provider's deliveries at once, in a random order, many twice or three
times, and holds the stream to the pure join: the final state of each payment is ``schemas.join.fold`` over
the observations in the inbox and fetch-result records, and its events are exactly those the join emits
when it is fed the payment's inputs in the order the reconcile stage consumed them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from e2e_pipeline import ACCOUNT, EVENT_SCHEMA, Pipeline, account_of, running_pipeline, told_events
from e2e_pipeline import demo_traffic as demo
from processor_harness import envelope, produce, read_all, send_inbox

from ingest.providers import parsing as providers
from paystream.config import PROVIDERS, Settings
from schemas.envelopes import FetchResult, InboxEnvelope, from_rfc3339, to_rfc3339
from schemas.event import format_time
from schemas.join import PaymentState, fold
from schemas.observation import Observation
from schemas.status import Source
from schemas.transitions import TABLE, parse_status

pytestmark = pytest.mark.kafka

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


@pytest.fixture(scope="module")
async def told(pipeline: Pipeline) -> dict[str, dict[str, list[Expected]] | BaseException]:
    """Every story, run at once: what each expects (or how it failed)."""
    run = uuid.uuid4().hex[:6]
    names = list(STORIES)
    results = await asyncio.gather(*(STORIES[name](pipeline, f"{run}{n}") for n, name in enumerate(names)),
                                   return_exceptions=True)
    told = dict(zip(names, results, strict=True))
    for name, expected in told.items():
        if not isinstance(expected, BaseException):
            try:
                for key, wanted in expected.items():
                    await pipeline.wait_events(key, len(wanted))
            except AssertionError as exc:
                told[name] = exc
    await pipeline.settle()  # a late or extra event of any story shows now
    return told


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
async def test_provider_deliveries_become_the_expected_valid_status_events(
    pipeline: Pipeline, told: dict[str, dict[str, list[Expected]] | BaseException], name: str,
) -> None:
    for key, events in told_events(pipeline, told, name, seen):
        assert len({e["id"] for e in events}) == len(events)
        provider, account = key.split(":")[:2]
        for event in events:
            assert event["source"] == f"paystream/{provider}/{account}"
            assert event["data"]["payment_key"] == key


def test_every_provider_has_a_story() -> None:
    assert set(PROVIDERS) <= set(STORIES)



# --- every provider at once, shuffled and duplicated ----------------------------------------------------

# The final (status, amount, captured, refunded) each shuffled payment must reach, by provider.
SHUFFLED_FINAL = {
    "stripe": ("refunded", 2500, 2500, 2500), "adyen": ("partially_refunded", 1000, 1000, 300),
    "standard": ("captured", 3100, 3100, 0), "amazon_pay": ("partially_refunded", 1400, 1400, 500),
    "mollie": ("captured", 1000, 1000, 0),
}
SHUFFLED_PAYMENTS = 3  # per provider


@dataclass
class Shuffled:
    """What the shuffled test sends: HTTP deliveries and fetch results, each with its copies."""

    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    results: list[FetchResult] = field(default_factory=list)
    provider_of: dict[str, str] = field(default_factory=dict)  # payment key -> provider
    amazon_ipns: int = 0  # distinct IPNs: one signed Get each
    mollie_hints: list[InboxEnvelope] = field(default_factory=list)


def copies(rng: random.Random) -> int:
    """A provider retry with probability 1/2, a second one with 1/4."""
    return 1 + (rng.random() < 0.5) + (rng.random() < 0.25)


def snapshot(provider: str, object_type: str, object_id: str, key: str, body: dict[str, Any],
             reason: str) -> FetchResult:
    return FetchResult(payment_key=key, provider=provider, account=account_of(provider), object_type=object_type,
                       object_id=object_id, fetch_id=f"snap-{uuid.uuid4().hex[:12]}",
                       request_id=f"snap-{uuid.uuid4().hex[:12]}", reason=reason,  # type: ignore[arg-type]
                       fetched_at=to_rfc3339(datetime.now(UTC)), outcome="ok", http_status=200,
                       body=orjson.dumps(body))


def build_shuffled(pipe: Pipeline, run: str, rng: random.Random) -> Shuffled:
    plan = Shuffled()
    now = time.time() - 60  # provider times: in the past, one second apart per step

    def post(delivery: demo.Delivery) -> None:
        path = f"/webhooks/{delivery.provider}/{account_of(delivery.provider)}"
        plan.posts.extend([(path, delivery.body, delivery.headers)] * copies(rng))

    for n in range(SHUFFLED_PAYMENTS):
        at = now + 10 * n
        # Stripe: created, authorized, captured, refunded.
        pi = f"pi_sh_{run}_{n}"
        plan.provider_of[f"stripe:main:payment_intent:{pi}"] = "stripe"
        intent = demo.stripe_intent(pi, "requires_payment_method", 2500, int(at))
        authorized = {**intent, "status": "requires_capture", "latest_charge": f"ch_sh_{run}_{n}"}
        captured = {**authorized, "status": "succeeded", "amount_received": 2500}
        refunded = demo.stripe_refunded_charge(f"ch_sh_{run}_{n}", pi, 2500, f"re_sh_{run}_{n}", int(at) + 4)
        for step, (event_type, obj) in enumerate((("payment_intent.created", intent),
                                                  ("payment_intent.amount_capturable_updated", authorized),
                                                  ("payment_intent.succeeded", captured),
                                                  ("charge.refunded", refunded)), start=1):
            post(demo.stripe_push(pipe.material, demo.stripe_event(event_type, obj, int(at) + step), time.time()))
        # Adyen: authorise, capture, refund part (one item per batch).
        psp = f"SH{run}{n}"
        plan.provider_of[f"adyen:main:payment:{psp}"] = "adyen"
        for item, what in ((demo.adyen_item(psp, "AUTHORISATION", True, 1000, at + 1), "AUTHORISATION"),
                           (demo.adyen_item(f"{psp}C", "CAPTURE", True, 1000, at + 2, originalReference=psp),
                            "CAPTURE"),
                           (demo.adyen_item(f"{psp}R", "REFUND", True, 300, at + 3, originalReference=psp),
                            "REFUND")):
            post(demo.adyen_push(pipe.material, psp, what, [item]))
        # Standard Webhooks: pending, authorized, succeeded.
        data = {"id": f"pay_sh_{run}_{n}", "amount": 3100, "currency": "EUR", "order_ref": f"order-sh-{run}-{n}"}
        plan.provider_of[f"standard:main:payment:{data['id']}"] = "standard"
        for step, (event_type, fields) in enumerate((("payment.pending", data), ("payment.authorized", data),
                                                     ("payment.succeeded", {**data, "captured_amount": 3100})),
                                                    start=1):
            post(demo.standard_push(pipe.material, event_type, fields, at + step))
        # Amazon Pay: thin IPNs (each names an object the fetcher gets from the double: the final charge, the
        # refund) and the charge's history as fetch results: authorized, captured, and the refund.
        permission = f"S02-{run}{n}-0000001"
        charge, refund = f"{permission}-C000001", f"{permission}-R000001"
        charge_key = f"amazon_pay:eu-main:charge:{charge}"
        plan.provider_of[charge_key] = "amazon_pay"
        history = [demo.amazon_charge(charge, permission, state, "14.00", at + step)
                   for step, state in enumerate(("Authorized", "Captured"), start=1)]
        refund_body = {"refundId": refund, "chargeId": charge,
                       "refundAmount": {"amount": "5.00", "currencyCode": "EUR"},
                       "statusDetails": demo.amazon_status("Refunded", at + 3),
                       "creationTimestamp": demo.amazon_time(at + 3), "releaseEnvironment": "Sandbox"}
        pipe.double.set_object("amazon_pay", "charge", charge, history[-1])
        pipe.double.set_object("amazon_pay", "refund", refund, refund_body)
        for body in history:
            plan.results += [snapshot("amazon_pay", "charge", charge, charge_key, body, "thin_push")] * copies(rng)
        plan.results += [snapshot("amazon_pay", "refund", refund,
                                  f"amazon_pay:eu-main:refund:{refund}", refund_body, "thin_push")] * copies(rng)
        for object_type, object_id in (("CHARGE", charge), ("CHARGE", charge), ("REFUND", refund)):
            message = pipe.deliveries.sns_message()
            message["Message"] = orjson.dumps({
                "ObjectType": object_type, "ObjectId": object_id, "ChargePermissionId": permission,
                "NotificationType": "STATE_CHANGE", "NotificationId": str(uuid.uuid4()),
                "NotificationVersion": "V1"}).decode()
            body, headers = pipe.deliveries.sns(message)
            plan.posts.extend([("/webhooks/amazon_pay/eu-main", body, headers)] * copies(rng))
            plan.amazon_ipns += 1
        # Mollie: the payment's history as fetch results (open, paid), and a hint for it, delivered twice.
        # (Straight to the inbox, as ingest writes it: the ingest harness's Mollie account admits 3 hints
        # per test run, the stories use two.)
        payment_id = f"tr_sh{run}{n}"
        mollie_key = f"mollie:main:payment:{payment_id}"
        plan.provider_of[mollie_key] = "mollie"
        opened, paid = (demo.mollie_payment(payment_id, status, "10.00", at, at + step)
                        for step, status in ((1, "open"), (2, "paid")))
        pipe.double.set_object("mollie", "payment", payment_id, paid)
        for body in (opened, paid):
            plan.results += [snapshot("mollie", "payment", payment_id, mollie_key, body, "hint")] * copies(rng)
        hint = envelope("mollie", ACCOUNT, f"hint:{payment_id}:{int(time.time())}", demo.mollie_hint_push(
            payment_id).body, kind="hint")
        plan.mollie_hints += [hint, hint]
    rng.shuffle(plan.posts)
    rng.shuffle(plan.results)
    rng.shuffle(plan.mollie_hints)
    return plan


def observations_of(settings: Settings, inbox: list[Any], results: list[Any], keys: set[str]) -> dict[
        str, list[Observation]]:
    """The observations the provider parsers read in the inbox and fetch-result records, for ``keys``."""
    found: dict[str, list[Observation]] = {}

    def parse(provider: str, account: str, body: bytes, source: Source, evidence: str, observed: str,
              object_kind: str) -> None:
        for obs in providers.parse(provider, body, account=account, account_config=settings.account(provider, account),
                                   source=source, evidence_id=evidence, observed_at=from_rfc3339(observed),
                                   object_kind=object_kind):
            if obs.payment_key in keys:
                found.setdefault(obs.payment_key, []).append(obs)

    for record in inbox:
        envelope = InboxEnvelope.from_bytes(record.value)
        if envelope.kind == "event":
            parse(envelope.provider, envelope.account, envelope.body, Source.PUSH, envelope.delivery_id,
                  envelope.received_at, "event")
    for record in results:
        result = FetchResult.from_bytes(record.value)
        if result.outcome == "ok":
            parse(result.provider, result.account, result.body, Source.POLL, result.fetch_id, result.fetched_at,
                  result.object_kind)
    return found


def without_emit_time(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "data": {**event["data"], "emitted_at": None}}


def state_fields(state: PaymentState) -> tuple[Any, ...]:
    return (state.status.value if state.status else None, state.amount, state.captured_amount,
            state.refunded_amount, state.currency, state.provider_status, state.reason_code, state.order_ref,
            state.source.value if state.source else None, format_time(state.occurred_at) if state.occurred_at
            else None)


def event_fields(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["status"], data["amount"], data["captured_amount"], data["refunded_amount"], data["currency"],
            data["provider_status"], data["reason_code"], data["order_ref"], data["source"], data["occurred_at"])


async def test_shuffled_and_duplicated_deliveries_of_every_provider_give_the_pure_join(pipeline: Pipeline) -> None:
    pipe, settings = pipeline, pipeline.settings
    topics = settings.topics
    run = uuid.uuid4().hex[:6]
    plan = build_shuffled(pipe, run, random.Random(11))
    keys = set(plan.provider_of)
    assert set(plan.provider_of.values()) == set(PROVIDERS)
    # Everything at once: the HTTP deliveries in their shuffled order, the fetch results and hints alongside.
    await asyncio.gather(*(pipe.post_raw(path, body, headers) for path, body, headers in plan.posts),
                         produce(settings, topics.fetch_results, [(r.key, r.to_bytes()) for r in plan.results]),
                         send_inbox(settings, plan.mollie_hints))

    def final(key: str) -> tuple[Any, ...] | None:
        events = pipe.events_for(key)
        return seen(events[-1])[1:5] if events else None

    deadline = time.monotonic() + 90
    while any(final(key) != SHUFFLED_FINAL[provider][:4] for key, provider in plan.provider_of.items()):
        assert time.monotonic() < deadline and pipe.worker.process.poll() is None, (
            {key: final(key) for key in keys}, pipe.worker.log_tail())
        await asyncio.sleep(0.3)
    # The fetcher got each distinct IPN's object once (redelivered IPNs asked for nothing) and each payment
    # hinted at Mollie once (the second hint of the same second is the same delivery).
    fetched = {"amazon_pay": plan.amazon_ipns, "mollie": SHUFFLED_PAYMENTS}
    deadline = time.monotonic() + 60

    def gets(provider: str) -> int:
        mark = {"amazon_pay": f"/S02-{run}", "mollie": f"/tr_sh{run}"}[provider]
        return sum(1 for r in pipe.double.requests if r.provider == provider and mark in r.path)

    while any(gets(provider) < count for provider, count in fetched.items()):
        assert time.monotonic() < deadline, {provider: gets(provider) for provider in fetched}
        await asyncio.sleep(0.3)
    await pipe.settle()
    assert {provider: gets(provider) for provider in fetched} == fetched

    inbox, results = await asyncio.gather(read_all(settings, topics.inbox), read_all(settings, topics.fetch_results))
    observed = observations_of(settings, inbox, results, keys)
    for key, provider in plan.provider_of.items():
        events = pipe.events_for(key)
        # one event per real change, gap-free, and the stream a legal path of the transition table
        assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1)), key
        for event in events[1:]:
            data = event["data"]
            assert TABLE.allows_emitted(parse_status(data["previous_status"]), parse_status(data["status"]),
                                        Source(data["source"])), (key, data)
        assert all(seen(a)[1:5] != seen(b)[1:5] for a, b in itertools.pairwise(events)), key
        # and the final state is the join of all the observations, whatever their order and copies (the last
        # event's evidence is what supported it when emitted: later copies and confirming polls add evidence
        # to the state without an event)
        joined = fold(observed[key])
        assert event_fields(events[-1]) == state_fields(joined), key
        assert set(events[-1]["data"]["evidence"]) <= set(joined.evidence), key
        assert seen(events[-1])[1:5] == SHUFFLED_FINAL[provider][:4], key
        for event in events:
            EVENT_SCHEMA.validate(event)
    # Duplicates and shuffling really happened: more deliveries than distinct ones, out of provider-time order.
    assert len(plan.posts) > len({body for _, body, _ in plan.posts})
    assert len(plan.results) > len({r.fetch_id for r in plan.results})

