"""Deliveries through the real server onto the real broker (each test has its own fresh inbox topic)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from http_harness import (
    ACCOUNT,
    ADYEN_HEX_KEY,
    FOREIGN_TOPIC,
    HINT_BURST,
    SNS_ACCOUNT,
    Deliveries,
    RunningIngest,
    counter_value,
    post_rejected,
    read_inbox,
    read_reply,
    rejection_trail,
    request_head,
)

pytestmark = pytest.mark.kafka

STRIPE = f"/webhooks/stripe/{ACCOUNT}"
JSON = {"Content-Type": "application/json"}


async def test_stripe_delivery_lands_on_the_inbox_with_its_exact_bytes(
    ingest: RunningIngest, deliveries: Deliveries
) -> None:
    body, headers = deliveries.stripe(deliveries.stripe_event(padding=1200))
    event_id = orjson.loads(body)["id"]
    published_before = counter_value("paystream_ingest_published_total", provider="stripe", kind="event")

    reply = await ingest.post(STRIPE, body, headers)

    assert reply.status == 200
    assert reply.json() == {"status": "accepted"}
    [(key, envelope)] = await read_inbox(ingest.settings)
    # Keyed by the payment it is about (ingest.providers.routing): one partition holds the payment's history.
    intent_id = orjson.loads(body)["data"]["object"]["id"]
    assert key == envelope.payment_key.encode() == f"stripe:{ACCOUNT}:payment_intent:{intent_id}".encode()
    assert envelope.body == body
    assert (envelope.provider, envelope.account, envelope.delivery_id, envelope.kind) == (
        "stripe", ACCOUNT, event_id, "event")
    assert envelope.verification == {"verifier": "stripe-v1", "key_id": "secret[0]", "ok": True}
    assert envelope.headers["stripe-signature"] == headers["Stripe-Signature"]
    assert envelope.object_ids["event_type"] == "payment_intent.succeeded"
    assert counter_value("paystream_ingest_published_total", provider="stripe", kind="event") == published_before + 1


async def test_standard_webhooks_delivery_lands_on_the_inbox(ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.standard()

    reply = await ingest.post(f"/webhooks/standard/{ACCOUNT}", body, headers)

    assert reply.status == 200
    [(key, envelope)] = await read_inbox(ingest.settings)
    assert key == f"standard:{ACCOUNT}:{headers['webhook-id']}".encode()
    assert envelope.body == body
    assert envelope.verification["verifier"] == "standard-v1"


async def test_adyen_batch_with_one_bad_item_answers_accepted_and_publishes_only_the_good_one(
    ingest: RunningIngest, deliveries: Deliveries
) -> None:
    good = deliveries.adyen_item(key=ADYEN_HEX_KEY)
    bad = deliveries.adyen_item(key="00" * 32)
    body, headers = deliveries.adyen([good, bad])
    bad_before = counter_value("paystream_ingest_rejections_total", provider="adyen", reason="bad_signature")

    with rejection_trail("bad_signature", "adyen") as trail:
        reply = await ingest.post(f"/webhooks/adyen/{ACCOUNT}", body, headers)

    assert reply.status == 200
    assert reply.body == b"[accepted]"
    [(key, envelope)] = await read_inbox(ingest.settings)
    assert key == f"adyen:{ACCOUNT}:payment:{good['pspReference']}".encode()
    assert orjson.loads(envelope.body) == good
    assert envelope.verification["verifier"] == "adyen-hmac"
    assert counter_value("paystream_ingest_rejections_total", provider="adyen", reason="bad_signature") == (
        bad_before + 1)
    assert [entry for entry in trail.logs if entry.get("reason") == "bad_signature" and entry.get("batch_item")]


async def test_mollie_hint_flood_is_429_with_retry_after(ingest: RunningIngest, deliveries: Deliveries) -> None:
    path = f"/webhooks/mollie/{ACCOUNT}"
    for _ in range(HINT_BURST):
        body, headers = deliveries.mollie()
        assert (await ingest.post(path, body, headers)).status == 200
    flooded = counter_value("paystream_hints_rate_limited_total", provider="mollie", account=ACCOUNT)

    body, headers = deliveries.mollie()
    reply = await post_rejected(ingest, path, body, headers, status=429, reason="rate_limited", provider="mollie")

    assert int(reply.headers["retry-after"]) >= 1
    assert counter_value("paystream_hints_rate_limited_total", provider="mollie", account=ACCOUNT) == flooded + 1
    inbox = await read_inbox(ingest.settings)
    assert len(inbox) == HINT_BURST
    assert {envelope.kind for _, envelope in inbox} == {"hint"}
    assert {envelope.verification["verifier"] for _, envelope in inbox} == {"unsigned-hint"}


async def test_observation_is_published_as_a_sync_record(ingest: RunningIngest, deliveries: Deliveries) -> None:
    body = deliveries.observation()
    request = orjson.loads(body)

    reply = await ingest.post("/v1/observations", body, ingest.bearer())

    assert reply.status == 202
    assert reply.json() == {"status": "accepted", "delivery_id": f"sync:{request['request_id']}"}
    [(key, envelope)] = await read_inbox(ingest.settings)
    assert key == f"stripe:{ACCOUNT}:payment_intent:{request['object_id']}".encode()
    assert envelope.kind == "sync"
    assert envelope.body == body
    assert envelope.verification == {"verifier": "bearer-token", "key_id": "token[0]", "ok": True}
    assert envelope.object_ids == {"object_type": "payment_intent", "object_id": request["object_id"]}


async def _refused_by_declared_length(ingest: RunningIngest) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        writer.write(request_head(STRIPE, {**JSON, "Content-Length": str(50 * 1024 * 1024)}))
        return (await asyncio.wait_for(read_reply(reader), timeout=30)).status
    finally:
        writer.close()


async def test_nothing_rejected_reaches_the_inbox(ingest: RunningIngest, deliveries: Deliveries) -> None:
    """Every failure mode against a live publisher; then the topic holds exactly the accepted deliveries."""
    forged_sns = orjson.loads(deliveries.sns()[0])
    forged_sns["Message"] = forged_sns["Message"].replace("CHARGE", "REFUND")
    sns_path = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
    wrong_key = "00" * 32
    rejected = {
        "stripe bad signature": (STRIPE, *deliveries.stripe(secret="whsec_wrong")),
        "stripe stale": (STRIPE, *deliveries.stripe(age_s=400)),
        "stripe no header": (STRIPE, deliveries.stripe()[0], JSON),
        "stripe signed non-JSON": (STRIPE, *deliveries.stripe(b"[1, 2")),
        "stripe unknown account": ("/webhooks/stripe/nobody", *deliveries.stripe()),
        "standard bad signature": (f"/webhooks/standard/{ACCOUNT}", *deliveries.standard(secret="whsec_" + "QQ" * 16)),
        "standard stale": (f"/webhooks/standard/{ACCOUNT}", *deliveries.standard(age_s=400)),
        "adyen all bad": (f"/webhooks/adyen/{ACCOUNT}", *deliveries.adyen([deliveries.adyen_item(key=wrong_key)])),
        "sns forged": (sns_path, orjson.dumps(forged_sns), {"Content-Type": "text/plain"}),
        "sns foreign topic": (sns_path, *deliveries.sns(deliveries.sns_message(topic=FOREIGN_TOPIC))),
        "mollie malformed": (f"/webhooks/mollie/{ACCOUNT}", b"id=nope", {
            "Content-Type": "application/x-www-form-urlencoded"}),
        "observation bad token": ("/v1/observations", deliveries.observation(), {**JSON, "Authorization": "Bearer x"}),
        "observation schema": ("/v1/observations", deliveries.observation(provider="paypal"), ingest.bearer()),
    }
    statuses = {name: (await ingest.post(path, body, headers)).status
                for name, (path, body, headers) in rejected.items()}
    statuses["body over the limit"] = await _refused_by_declared_length(ingest)
    accepted_body, accepted_headers = deliveries.stripe()
    observation = deliveries.observation()

    assert (await ingest.post(STRIPE, accepted_body, accepted_headers)).status == 200
    assert (await ingest.post("/v1/observations", observation, ingest.bearer())).status == 202

    assert all(400 <= status < 500 for status in statuses.values()), statuses
    inbox = await read_inbox(ingest.settings)
    assert sorted(envelope.delivery_id for _, envelope in inbox) == sorted([
        orjson.loads(accepted_body)["id"], f"sync:{orjson.loads(observation)['request_id']}"])


async def test_accepted_delivery_leaves_no_rejection_trail(ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.stripe()

    with rejection_trail("bad_signature", "stripe") as trail:
        reply = await ingest.post(STRIPE, body, headers)

    assert reply.status == 200
    assert trail.after == trail.before
    assert not [entry for entry in trail.logs if entry.get("log_level") == "warning"]

