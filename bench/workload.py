"""The payments the processor and end-to-end benchmarks push through the pipeline.

Each payment is a lifecycle of signed provider deliveries in which every delivery is a real change (a new
status or new amounts), so every delivery should yield exactly one event on the status topic — the most
output a delivery can cause, and a count both benchmarks can wait for:

* Stripe (10 events): ``payment_intent.created`` (pending) → ``requires_action`` →
  ``amount_capturable_updated`` (authorized) → ``succeeded`` (captured) → six ``charge.refunded`` events
  whose charge lists one more succeeded refund each (five partial refunds, then the rest: refunded).
* Adyen (10 items): AUTHORISATION → CAPTURE → eight REFUND modifications of an eighth of the amount each.

The inbox is keyed by delivery (``provider:account:delivery_id``), so one payment's deliveries normally
spread over the inbox partitions and may be read out of order — the join then ignores the older ones and
fewer events are emitted, a count that depends on the interleaving. To keep the expected output exact,
the delivery ids of one payment are chosen so that all its inbox keys land in the same partition (ids are
opaque to every stage; only their hash is steered). Order within a payment is then the order sent.

:func:`expected_events` runs the same deliveries through the pure normalize + reconcile code in process,
so the benchmark checks the worker's output against what the processors themselves say is right.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from ingest.providers.signers import adyen_batch, sign_adyen_item, sign_stripe

ACCOUNT = "bench"
STRIPE_SECRET = "whsec_bench_" + "k" * 24
ADYEN_HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"  # any hex key
AMOUNT = 2000
STRIPE_STEPS = 10
ADYEN_STEPS = 10
STRIPE_REFUND = 200  # five partial refunds of 200, then the remaining 1000
ADYEN_REFUND = AMOUNT // 8


@dataclass(frozen=True, slots=True)
class Delivery:
    """One HTTP push as a provider would send it."""

    provider: str
    path: str
    body: bytes
    headers: dict[str, str]
    delivery_key: bytes  # the inbox key ingest will publish it under
    payment_key: str


def config_toml() -> str:
    """The accounts ingest and the processor need (secrets by reference, set by :func:`secret_env`)."""
    return (f'[accounts.stripe.{ACCOUNT}]\nsecrets = ["env:PAYSTREAM_BENCH_STRIPE_SECRET"]\n\n'
            f'[accounts.adyen.{ACCOUNT}]\nsecrets = ["env:PAYSTREAM_BENCH_ADYEN_KEY"]\n')


def accounts() -> dict[str, dict[str, Any]]:
    """The same accounts as :func:`config_toml`, for settings built in this process."""
    from paystream.config import AccountConfig

    return {"stripe": {ACCOUNT: AccountConfig(secrets=["env:PAYSTREAM_BENCH_STRIPE_SECRET"])},
            "adyen": {ACCOUNT: AccountConfig(secrets=["env:PAYSTREAM_BENCH_ADYEN_KEY"])}}


def secret_env() -> dict[str, str]:
    return {"PAYSTREAM_BENCH_STRIPE_SECRET": STRIPE_SECRET, "PAYSTREAM_BENCH_ADYEN_KEY": ADYEN_HMAC_KEY}


def partition_of(key: bytes, partitions: int) -> int:
    """Where Kafka's default partitioner (and ingest's publisher) puts ``key``."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def _steered(make_key: Any, partition: int | None, partitions: int) -> str:
    """A fresh random id whose key lands in ``partition`` (any partition when None): ~``partitions`` tries."""
    while True:
        candidate = uuid.uuid4().hex[:24]
        if partition is None or partition_of(make_key(candidate), partitions) == partition:
            return str(candidate)


# --- Stripe -------------------------------------------------------------------------------------------


def _stripe_key(event_id: str) -> bytes:
    return f"stripe:{ACCOUNT}:{event_id}".encode()


def stripe_events(step_count: int, partitions: int, created: int) -> tuple[str, list[dict[str, Any]]]:
    """The first ``step_count`` events of one Stripe payment (see the module docstring)."""
    pi = f"pi_{uuid.uuid4().hex[:24]}"
    charge = f"ch_{uuid.uuid4().hex[:24]}"
    first = _steered(lambda c: _stripe_key(f"evt_{c}"), None, partitions)
    target = partition_of(_stripe_key(f"evt_{first}"), partitions)
    ids = [f"evt_{first}"] + [f"evt_{_steered(lambda c: _stripe_key(f'evt_{c}'), target, partitions)}"
                              for _ in range(step_count - 1)]
    intent: dict[str, Any] = {"id": pi, "object": "payment_intent", "amount": AMOUNT, "currency": "eur",
                              "metadata": {"order_ref": f"order-{pi[3:13]}"}, "created": created}
    lifecycle: list[tuple[str, dict[str, Any]]] = [
        ("payment_intent.created", {**intent, "status": "requires_payment_method"}),
        ("payment_intent.requires_action", {**intent, "status": "requires_action"}),
        ("payment_intent.amount_capturable_updated", {**intent, "status": "requires_capture"}),
        ("payment_intent.succeeded", {**intent, "status": "succeeded", "amount_received": AMOUNT,
                                      "latest_charge": charge}),
    ]
    refunds: list[dict[str, Any]] = []
    for index in range(6):
        amount = STRIPE_REFUND if index < 5 else AMOUNT - 5 * STRIPE_REFUND
        refunds.append({"id": f"re_{uuid.uuid4().hex[:24]}", "object": "refund", "amount": amount,
                        "status": "succeeded", "charge": charge, "payment_intent": pi})
        refunded = sum(r["amount"] for r in refunds)
        lifecycle.append(("charge.refunded", {
            "id": charge, "object": "charge", "payment_intent": pi, "amount": AMOUNT, "amount_captured": AMOUNT,
            "amount_refunded": refunded, "captured": True, "refunded": refunded == AMOUNT, "status": "succeeded",
            "currency": "eur", "metadata": intent["metadata"],
            "refunds": {"object": "list", "data": list(refunds)},
        }))
    events = [{"id": event_id, "object": "event", "type": kind, "created": created + step, "livemode": False,
               "api_version": "2024-06-20", "data": {"object": obj}}
              for step, (event_id, (kind, obj)) in enumerate(zip(ids, lifecycle[:step_count], strict=True))]
    return f"stripe:{ACCOUNT}:payment_intent:{pi}", events


def stripe_delivery(payment_key: str, event: dict[str, Any], signed_at: int) -> Delivery:
    body = orjson.dumps(event)
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, signed_at)}
    return Delivery("stripe", f"/webhooks/stripe/{ACCOUNT}", body, headers, _stripe_key(event["id"]), payment_key)


def stripe_payment(partitions: int, step_count: int = STRIPE_STEPS) -> list[Delivery]:
    now = int(time.time())
    key, events = stripe_events(step_count, partitions, now - 3600)
    return [stripe_delivery(key, event, now) for event in events]


# --- Adyen --------------------------------------------------------------------------------------------


def _adyen_key(psp: str, code: str) -> bytes:
    return f"adyen:{ACCOUNT}:{psp}:{code}:true".encode()


def _psp(make_key: Any, partition: int | None, partitions: int) -> str:
    # pspReferences are 16 characters; digits only.
    while True:
        candidate = str(int(uuid.uuid4().hex[:14], 16) % 10**16).zfill(16)
        if partition is None or partition_of(make_key(candidate), partitions) == partition:
            return candidate


def adyen_payment(partitions: int) -> list[Delivery]:
    payment = _psp(lambda p: _adyen_key(p, "AUTHORISATION"), None, partitions)
    target = partition_of(_adyen_key(payment, "AUTHORISATION"), partitions)
    base = datetime.now(UTC).replace(microsecond=0).timestamp() - 3600
    codes = ["AUTHORISATION", "CAPTURE"] + ["REFUND"] * (ADYEN_STEPS - 2)
    deliveries = []
    for step, code in enumerate(codes):
        psp = payment if code == "AUTHORISATION" else _psp(lambda p, c=code: _adyen_key(p, c), target, partitions)
        value = AMOUNT if code != "REFUND" else ADYEN_REFUND
        item: dict[str, Any] = {
            "pspReference": psp, "merchantAccountCode": "BenchMerchant", "merchantReference": f"order-{payment}",
            "amount": {"currency": "EUR", "value": value}, "eventCode": code, "success": "true",
            "eventDate": datetime.fromtimestamp(base + step, UTC).isoformat(), "paymentMethod": "visa",
            "additionalData": {"authCode": "1234"},
        }
        if code != "AUTHORISATION":
            item["originalReference"] = payment
        body = adyen_batch([sign_adyen_item(item, ADYEN_HMAC_KEY)])
        deliveries.append(Delivery("adyen", f"/webhooks/adyen/{ACCOUNT}", body, {"Content-Type": "application/json"},
                                   _adyen_key(psp, code), f"adyen:{ACCOUNT}:payment:{payment}"))
    return deliveries


def mixed_payments(count: int, partitions: int) -> list[list[Delivery]]:
    """``count`` payments, alternately Stripe and Adyen, ten deliveries each."""
    return [stripe_payment(partitions) if index % 2 == 0 else adyen_payment(partitions) for index in range(count)]


def interleave(payments: list[list[Delivery]]) -> Iterator[Delivery]:
    """Round-robin over payments: every payment's deliveries stay in order, payments are interleaved."""
    for layer in itertools.zip_longest(*payments):
        yield from (delivery for delivery in layer if delivery is not None)


# --- inbox envelopes through the real verifiers ----------------------------------------------------------


def envelopes(deliveries: list[Delivery], settings: Any) -> list[Any]:
    """The inbox envelopes ingest would publish for ``deliveries``: the real verifiers, same fields."""
    from ingest.accounts import AccountBook
    from ingest.delivery import IncomingDelivery
    from ingest.providers import PUSH_PROVIDERS
    from ingest.providers.routing import delivery_payment_key
    from schemas.envelopes import InboxEnvelope, to_rfc3339

    book = AccountBook.from_settings(settings)

    async def verify_all() -> list[Any]:
        out = []
        for delivery in deliveries:
            received = time.time()
            headers = {name.lower(): value for name, value in delivery.headers.items()}
            incoming = IncomingDelivery(delivery.provider, ACCOUNT, delivery.body, headers, received)
            spec = PUSH_PROVIDERS[delivery.provider]
            result = await spec.verify(incoming, book.require(delivery.provider, ACCOUNT))
            kept = {name: headers[name] for name in spec.kept_headers if name in headers}
            for verified in result.accepted:
                assert verified.kind != "control"  # SNS subscription handling: not in this workload
                out.append(InboxEnvelope(
                    provider=delivery.provider, account=ACCOUNT, delivery_id=verified.delivery_id, kind=verified.kind,
                    received_at=to_rfc3339(datetime.fromtimestamp(received, UTC)), body=verified.body, headers=kept,
                    verification={"verifier": verified.verification.verifier, "key_id": verified.verification.key_id,
                                  "ok": verified.verification.ok},
                    object_ids=dict(verified.object_ids),
                    payment_key=delivery_payment_key(delivery.provider, ACCOUNT, verified.kind, verified.body,
                                                     book.require(delivery.provider, ACCOUNT).config)))
        return out

    return asyncio.run(verify_all())


def expected_events(inbox: list[Any], settings: Any) -> dict[str, tuple[int, str]]:
    """payment key → (events emitted, final status) by the pure normalize + reconcile, in the given order."""
    from ingest.providers.parsing import POLLABLE
    from processors.normalize import Normalizer
    from processors.reconcile import Reconciler
    from processors.scheduling import PollSchedule

    conf = settings.processor
    normalizer = Normalizer(settings)
    reconcile = Reconciler(PollSchedule(conf.poll_schedule_s, conf.poll_repeat_s), POLLABLE, conf.dedupe_ttl_s)
    records: dict[str, Any] = {}
    out: dict[str, tuple[int, str]] = {}
    now = datetime.now(UTC)
    for envelope in inbox:
        for item in normalizer.inbox(envelope, now):
            key = item.payment_key
            result = reconcile(records.get(key), item, now)
            records[key] = result.record
            count, _ = out.get(key, (0, ""))
            state = result.record.state
            status = None if state is None else state.status
            out[key] = (count + (result.event is not None), str(getattr(status, "value", status)))
    return out
