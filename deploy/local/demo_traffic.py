"""Demo traffic for `make run`: a handful of payments per provider, driven through their lives.

Also a worked example of what each provider sends (this script sends it on their behalf):

* **Stripe**: thick events signed with ``Stripe-Signature: t=…,v1=<HMAC>``. Stripe also lists every event
  (the fetcher's sweep reads that list) and serves the PaymentIntent (stale polls read it), so both go
  into the local test provider first.
* **Adyen**: a batch of items, each HMAC-signed inside its ``additionalData.hmacSignature``; a CAPTURE
  names its payment in ``originalReference``.
* **Amazon Pay**: thin IPNs over SNS (an RSA-signed envelope whose ``Message`` holds only ids). The
  processors fetch the Charge / Refund from the API, so the test provider must hold it *before* the IPN.
* **Mollie**: an unsigned hint ``id=tr_…``; likewise the payment is put in the test provider first.
* **Standard Webhooks**: thick events signed with ``webhook-id/-timestamp/-signature``; their ``type`` is
  mapped by the ``status_map`` in deploy/local/demo.toml.
* **A pull-only payment**: a checkout reports ``open`` and registers it for polling
  (``POST /v1/observations``); later the provider says ``paid`` and only a scheduled poll can see it.

Plus a duplicate (one Stripe event delivered twice) and an out-of-order delivery (a capture before its
authorization). A delivery answered 429 / 5xx (or not at all) is retried after ``Retry-After``, as
providers do. Ids embed the start time, so every run (and every ``--loop`` round) makes new payments.

    python deploy/local/demo_traffic.py [--ingest URL] [--provider URL] [--loop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # demo_material, and the repo's packages

from demo_material import INGEST_URL, PROVIDER_PORT, SNS_CERT_URL, SNS_TOPIC_ARN, DemoMaterial, prepare  # noqa: E402

from ingest.providers.signers import adyen_batch, mollie_hint, sign_adyen_item, sign_sns, sign_standard, sign_stripe  # noqa: E402

ACCOUNT = "demo"  # every provider's account in demo.toml
PAUSE_S = 3.0  # between the steps of one payment: a person watching `paystream tail` sees them arrive
PULL_ONLY_DELAY_S = 10.0
LOOP_GAP_S = 20.0
RETRY_STATUSES = frozenset({0, 429, 500, 502, 503, 504})  # 0: no answer at all (ingest restarting)
MAX_ATTEMPTS = 6
Json = dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One HTTP POST to ingest, exactly as the provider (or a checkout) would send it."""

    provider: str
    object_id: str
    what: str  # what a person reads: the event type, "IPN CHARGE", "hint", …
    path: str
    body: bytes
    headers: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.provider} {self.object_id}: {self.what}"


class Sink(Protocol):
    """Where the stories go: the running stack (HttpSink) or, in tests, a recorder."""

    def now(self) -> float: ...
    async def pause(self, seconds: float) -> None: ...
    async def send(self, delivery: Delivery) -> int: ...
    async def set_object(self, provider: str, object_type: str, object_id: str, body: Json) -> None: ...
    async def add_stripe_event(self, event: Json) -> None: ...


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def iso(now: float) -> str:
    return datetime.fromtimestamp(int(now), UTC).isoformat()  # 2025-06-01T12:00:00+00:00


def webhook(provider: str) -> str:
    return f"/webhooks/{provider}/{ACCOUNT}"


# --- Stripe ------------------------------------------------------------------------------------------
def stripe_intent(pi_id: str, status: str, amount: int, created: int, **fields: Any) -> Json:
    intent = {"id": pi_id, "object": "payment_intent", "amount": amount, "amount_received": 0, "currency": "eur",
              "status": status, "created": created, "latest_charge": None, "canceled_at": None,
              "last_payment_error": None, "livemode": False, "metadata": {"order_ref": f"order-{pi_id}"}}
    return {**intent, **fields}


def stripe_refunded_charge(charge_id: str, pi_id: str, amount: int, refund_id: str, created: int) -> Json:
    refund = {"id": refund_id, "object": "refund", "amount": amount, "status": "succeeded", "currency": "eur",
              "charge": charge_id, "payment_intent": pi_id, "created": created}
    return {"id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": amount, "captured": True, "refunded": True, "status": "succeeded", "currency": "eur",
            "payment_intent": pi_id, "created": created, "metadata": {"order_ref": f"order-{pi_id}"},
            "refunds": {"object": "list", "data": [refund], "has_more": False}}


def stripe_event(event_type: str, obj: Json, created: int) -> Json:
    return {"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2024-06-20",
            "created": created, "type": event_type, "livemode": False, "pending_webhooks": 1,
            "data": {"object": obj}}


def stripe_push(material: DemoMaterial, event: Json, now: float, note: str = "") -> Delivery:
    body = orjson.dumps(event)
    obj = event["data"]["object"]
    headers = {"Content-Type": "application/json; charset=utf-8",
               "Stripe-Signature": sign_stripe(body, material.stripe_secret, int(now))}
    return Delivery("stripe", obj.get("payment_intent") or obj["id"], event["type"] + note, webhook("stripe"),
                    body, headers)


async def stripe_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """pi_1 is refunded (its capture delivered twice), pi_2 arrives out of order, pi_3 is declined."""

    async def publish(event_type: str, obj: Json, *, created: int | None = None) -> Json:
        event = stripe_event(event_type, obj, int(sink.now()) if created is None else created)
        await sink.add_stripe_event(event)  # Stripe's Events list, read by the fetcher's sweep
        return event

    async def step(event_type: str, intent: Json) -> Delivery:
        await sink.set_object("stripe", "payment_intent", intent["id"], intent)
        delivery = stripe_push(material, await publish(event_type, intent), sink.now())
        await sink.send(delivery)
        await sink.pause(PAUSE_S)
        return delivery

    pi1, ch1 = f"pi_demo_{run}_1", f"ch_demo_{run}_1"
    intent = stripe_intent(pi1, "requires_payment_method", 2500, int(sink.now()))
    await step("payment_intent.created", intent)
    intent = {**intent, "status": "requires_capture", "latest_charge": ch1}
    await step("payment_intent.amount_capturable_updated", intent)
    intent = {**intent, "status": "succeeded", "amount_received": 2500}
    captured = await step("payment_intent.succeeded", intent)
    await sink.send(dataclasses.replace(captured, what=captured.what + " (again: a duplicate delivery)"))
    await sink.pause(PAUSE_S)
    charge = stripe_refunded_charge(ch1, pi1, 2500, f"re_demo_{run}_1", int(sink.now()))
    await sink.send(stripe_push(material, await publish("charge.refunded", charge), sink.now()))
    await sink.pause(PAUSE_S)

    # Out of order: both events exist at Stripe (authorized two seconds before captured); the later one
    # is delivered first, and the earlier one must then change nothing.
    pi2, now = f"pi_demo_{run}_2", int(sink.now())
    authorized = stripe_intent(pi2, "requires_capture", 1200, now - 2, latest_charge=f"ch_demo_{run}_2")
    succeeded = {**authorized, "status": "succeeded", "amount_received": 1200}
    await sink.set_object("stripe", "payment_intent", pi2, succeeded)
    early = await publish("payment_intent.amount_capturable_updated", authorized, created=now - 2)
    late = await publish("payment_intent.succeeded", succeeded, created=now)
    await sink.send(stripe_push(material, late, sink.now(), " (sent before the earlier event)"))
    await sink.pause(PAUSE_S)
    await sink.send(stripe_push(material, early, sink.now(), " (the earlier event, arriving late)"))
    await sink.pause(PAUSE_S)

    intent = stripe_intent(f"pi_demo_{run}_3", "requires_payment_method", 900, int(sink.now()))
    await step("payment_intent.created", intent)
    error = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    await step("payment_intent.payment_failed", {**intent, "last_payment_error": error})


# --- Adyen -------------------------------------------------------------------------------------------
def adyen_item(psp: str, code: str, success: bool, value: int, now: float, **fields: str) -> Json:
    return {"amount": {"currency": "EUR", "value": value}, "eventCode": code, "eventDate": iso(now),
            "merchantAccountCode": "PaystreamDemoECOM", "merchantReference": f"order-{psp}", "pspReference": psp,
            "paymentMethod": "visa", "success": "true" if success else "false", **fields}


def adyen_push(material: DemoMaterial, object_id: str, what: str, items: list[Json]) -> Delivery:
    body = adyen_batch(sign_adyen_item(item, material.adyen_key) for item in items)
    return Delivery("adyen", object_id, what, webhook("adyen"), body, {"Content-Type": "application/json"})


async def adyen_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """Two authorisations in one batch (one refused), then the capture of the accepted one."""
    accepted, refused, capture = f"DEMO{run}0001", f"DEMO{run}0002", f"DEMO{run}0003"
    await sink.pause(PAUSE_S / 2)  # start a little after the others: easier to read
    items = [adyen_item(accepted, "AUTHORISATION", True, 4200, sink.now()),
             adyen_item(refused, "AUTHORISATION", False, 1500, sink.now(), reason="Refused")]
    await sink.send(adyen_push(material, f"{accepted}+{refused}", "AUTHORISATION true + false (a batch)", items))
    await sink.pause(3 * PAUSE_S)
    items = [adyen_item(capture, "CAPTURE", True, 4200, sink.now(), originalReference=accepted)]
    await sink.send(adyen_push(material, accepted, f"CAPTURE {capture}", items))


# --- Amazon Pay --------------------------------------------------------------------------------------
def amazon_time(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))  # Amazon Pay's basic ISO 8601


def amazon_status(state: str, now: float) -> Json:
    return {"state": state, "reasonCode": None, "reasonDescription": None, "lastUpdatedTimestamp": amazon_time(now)}


def amazon_charge(charge_id: str, permission_id: str, state: str, amount: str, now: float) -> Json:
    price = {"amount": amount, "currencyCode": "EUR"}
    charge = {"chargeId": charge_id, "chargePermissionId": permission_id, "chargeAmount": price,
              "statusDetails": amazon_status(state, now), "creationTimestamp": amazon_time(now),
              "merchantMetadata": {"merchantReferenceId": f"order-{permission_id}"}, "releaseEnvironment": "Sandbox"}
    return {**charge, "captureAmount": price} if state == "Captured" else charge


def amazon_ipn(material: DemoMaterial, object_type: str, object_id: str, permission_id: str, now: float) -> Delivery:
    """An SNS Notification whose Message is the (thin) Amazon Pay IPN."""
    ipn = {"ReleaseEnvironment": "Sandbox", "MerchantID": "A3DEMOMERCHANT", "ObjectType": object_type,
           "ObjectId": object_id, "ChargePermissionId": permission_id, "NotificationType": "STATE_CHANGE",
           "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V1"}
    moment = datetime.fromtimestamp(now, UTC)
    envelope = sign_sns({
        "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": SNS_TOPIC_ARN,
        "Message": orjson.dumps(ipn).decode(), "Timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": "2", "SigningCertURL": SNS_CERT_URL,
        "UnsubscribeURL": f"https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={SNS_TOPIC_ARN}",
    }, material.sns_private_key)
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification",
               "x-amz-sns-message-id": str(envelope["MessageId"]), "x-amz-sns-topic-arn": SNS_TOPIC_ARN}
    return Delivery("amazon_pay", object_id, f"IPN {object_type}", webhook("amazon_pay"), orjson.dumps(envelope),
                    headers)


async def amazon_pay_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """A charge permission, its charge authorized then captured, and a partial refund: every IPN is thin."""
    permission = f"S02-{run}-0000001"
    charge, refund = f"{permission}-C000001", f"{permission}-R000001"
    await sink.set_object("amazon_pay", "charge_permission", permission, {
        "chargePermissionId": permission, "statusDetails": amazon_status("Chargeable", sink.now()),
        "creationTimestamp": amazon_time(sink.now()), "releaseEnvironment": "Sandbox"})
    await sink.send(amazon_ipn(material, "CHARGE_PERMISSION", permission, permission, sink.now()))
    for state in ("Authorized", "Captured"):
        await sink.pause(PAUSE_S)
        await sink.set_object("amazon_pay", "charge", charge, amazon_charge(charge, permission, state, "14.00",
                                                                            sink.now()))
        await sink.send(amazon_ipn(material, "CHARGE", charge, permission, sink.now()))
    await sink.pause(2 * PAUSE_S)
    await sink.set_object("amazon_pay", "refund", refund, {
        "refundId": refund, "chargeId": charge, "refundAmount": {"amount": "5.00", "currencyCode": "EUR"},
        "statusDetails": amazon_status("Refunded", sink.now()), "creationTimestamp": amazon_time(sink.now()),
        "releaseEnvironment": "Sandbox"})
    await sink.send(amazon_ipn(material, "REFUND", refund, permission, sink.now()))


# --- Mollie, and a pull-only payment -----------------------------------------------------------------
def mollie_payment(payment_id: str, status: str, value: str, created: float, now: float) -> Json:
    payment = {"resource": "payment", "id": payment_id, "mode": "test", "status": status,
               "amount": {"value": value, "currency": "EUR"}, "description": f"Order {payment_id}",
               "createdAt": iso(created), "metadata": {"order_ref": f"order-{payment_id}"}}
    return {**payment, "paidAt": iso(now)} if status == "paid" else payment


def mollie_hint_push(payment_id: str) -> Delivery:
    return Delivery("mollie", payment_id, "webhook hint (id only, unsigned)", webhook("mollie"),
                    mollie_hint(payment_id), {"Content-Type": "application/x-www-form-urlencoded"})


async def mollie_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """Open, then paid: each hint makes the processors fetch the payment from the API."""
    payment_id, created = f"tr_demo{run}1", sink.now()
    await sink.pause(PAUSE_S)
    for status in ("open", "paid"):
        await sink.set_object("mollie", "payment", payment_id,
                              mollie_payment(payment_id, status, "10.00", created, sink.now()))
        await sink.send(mollie_hint_push(payment_id))
        await sink.pause(2 * PAUSE_S)


def observation(material: DemoMaterial, request: Json, what: str) -> Delivery:
    """``POST /v1/observations``: what a checkout service sends (bearer token; request_id = idempotency key)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {material.observation_token}"}
    return Delivery(request["provider"], request["object_id"], what, "/v1/observations", orjson.dumps(request),
                    headers)


async def pull_only_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """No webhook ever comes: the checkout registers the payment, and polls are all paystream gets."""
    payment_id, created = f"tr_pull{run}1", sink.now()
    await sink.set_object("mollie", "payment", payment_id,
                          mollie_payment(payment_id, "open", "19.99", created, created))
    request = {"provider": "mollie", "account": ACCOUNT, "object_type": "payment", "object_id": payment_id,
               "order_ref": f"order-{payment_id}", "request_id": f"checkout-{payment_id}", "register_poll": True,
               "state": {"provider_status": "open", "amount": 1999, "currency": "EUR", "occurred_at": iso(created)}}
    await sink.send(observation(material, request, "checkout says open and registers it for polling"))
    await sink.pause(PULL_ONLY_DELAY_S)
    await sink.set_object("mollie", "payment", payment_id,
                          mollie_payment(payment_id, "paid", "19.99", created, sink.now()))
    say(f"mollie {payment_id}: paid at the provider, no push: the next scheduled poll (~1 min) finds it")


# --- Standard Webhooks -------------------------------------------------------------------------------
def standard_push(material: DemoMaterial, event_type: str, data: Json, now: float) -> Delivery:
    body = orjson.dumps({"type": event_type, "timestamp": iso(now).replace("+00:00", "Z"), "data": data})
    headers = {"Content-Type": "application/json",
               **sign_standard(body, material.standard_secret, f"msg_{uuid.uuid4().hex}", int(now))}
    return Delivery("standard", data["id"], event_type, webhook("standard"), body, headers)


async def standard_story(sink: Sink, material: DemoMaterial, run: str) -> None:
    """pay_1 pending → authorized → succeeded; pay_2 pending → failed."""
    paid = {"id": f"pay_demo_{run}_1", "amount": 3100, "currency": "EUR", "order_ref": f"order-{run}-1"}
    failed = {"id": f"pay_demo_{run}_2", "amount": 800, "currency": "EUR", "order_ref": f"order-{run}-2"}
    await sink.pause(PAUSE_S / 2)
    steps = [("payment.pending", paid), ("payment.pending", failed), ("payment.authorized", paid),
             ("payment.failed", {**failed, "reason_code": "insufficient_funds"}),
             ("payment.succeeded", {**paid, "captured_amount": 3100})]
    for event_type, data in steps:
        await sink.send(standard_push(material, event_type, data, sink.now()))
        await sink.pause(PAUSE_S)


# --- running -----------------------------------------------------------------------------------------
async def run_once(sink: Sink, material: DemoMaterial, run: str) -> None:
    stories = (stripe_story, adyen_story, amazon_pay_story, mollie_story, pull_only_story, standard_story)
    await asyncio.gather(*(story(sink, material, run) for story in stories))


def run_id(now: float) -> str:
    """Time-based, so a re-run (or the next --loop round) makes new payments."""
    return f"{int(now) % 10**8:08d}"


class HttpSink:
    """The running stack: ingest for deliveries, the test provider's ``/_double/`` API for provider state."""

    def __init__(self, session: aiohttp.ClientSession, ingest_url: str, provider_url: str) -> None:
        self.session, self.ingest, self.provider = session, ingest_url.rstrip("/"), provider_url.rstrip("/")

    def now(self) -> float:
        return time.time()

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def send(self, delivery: Delivery) -> int:
        attempt = 1
        while True:
            status, retry_after = await self._post(delivery)
            answer = status or "no answer"
            if status not in RETRY_STATUSES or attempt == MAX_ATTEMPTS:
                say(f"{delivery.label} → {answer}")
                return status
            delay = retry_delay(retry_after, attempt)
            say(f"{delivery.label} → {answer}, retrying in {delay:g} s")
            await asyncio.sleep(delay)
            attempt += 1

    async def _post(self, delivery: Delivery) -> tuple[int, str | None]:
        try:
            async with self.session.post(self.ingest + delivery.path, data=delivery.body,
                                         headers=delivery.headers) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientConnectionError, TimeoutError):
            return 0, None

    async def _control(self, path: str, item: Json) -> None:
        async with self.session.post(f"{self.provider}/_double/{path}", json=item) as response:
            response.raise_for_status()

    async def set_object(self, provider: str, object_type: str, object_id: str, body: Json) -> None:
        item = {"provider": provider, "object_type": object_type, "object_id": object_id, "body": body}
        await self._control("objects", item)
        state = body.get("status") or body.get("statusDetails", {}).get("state")
        say(f"{provider} {object_id}: provider API now holds the {object_type}, {state}")

    async def add_stripe_event(self, event: Json) -> None:
        await self._control("stripe/events", {"event": event, "delivered": True})


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """``Retry-After`` in seconds when given (capped at 30 s), else exponential backoff."""
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(30.0, max(0.0, float(retry_after)))
    return min(30.0, 2.0**attempt)


async def drive(args: argparse.Namespace, material: DemoMaterial) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        sink = HttpSink(session, args.ingest, args.provider)
        while True:
            run = run_id(time.time())
            say(f"demo run {run}: ingest {args.ingest}, test provider {args.provider}")
            try:
                await run_once(sink, material, run)
            except aiohttp.ClientError as exc:
                say(f"the local test provider did not answer ({exc}); is it running?")
                return 1
            if not args.loop:
                say(f"demo run {run} done")
                return 0
            say(f"demo run {run} done; the next one starts in {LOOP_GAP_S:g} s")
            await asyncio.sleep(LOOP_GAP_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send `make run`'s demo traffic to a running paystream.")
    parser.add_argument("--ingest", default=INGEST_URL, help="paystream ingest base URL (default: %(default)s)")
    parser.add_argument("--provider", default=f"http://127.0.0.1:{PROVIDER_PORT}",
                        help="the local test provider's base URL (default: %(default)s)")
    parser.add_argument("--loop", action="store_true", help="keep going with new payments until interrupted")
    args = parser.parse_args(argv)
    material = prepare()  # the same throw-away keys `make run` gave the pipeline (created if missing)
    try:
        return asyncio.run(drive(args, material))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
