"""One flat test per failure mode and HTTP status of DESIGN §4.1, over real sockets.

Each rejection must leave the same trail: its status, a JSON ``{"error", "detail"}`` body, one warning
log line with the reason and ``paystream_ingest_rejections_total`` + 1 (see ``http_harness.assert_rejected``).
These run against ``offline_ingest``, whose broker never answers: a rejection must not depend on Kafka.
That nothing rejected reaches the inbox is checked on the real broker in test_http_broker.py.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from http_harness import (
    ACCOUNT,
    SNS_ACCOUNT,
    STANDARD_SECRET,
    Deliveries,
    RunningIngest,
    StartIngest,
    assert_rejected,
    counter_value,
    post_rejected,
    read_reply,
    rejection_trail,
    request_head,
)

from ingest.providers.signers import sign_standard
from paystream.config import Settings

STRIPE = f"/webhooks/stripe/{ACCOUNT}"
STANDARD = f"/webhooks/standard/{ACCOUNT}"
ADYEN = f"/webhooks/adyen/{ACCOUNT}"
MOLLIE = f"/webhooks/mollie/{ACCOUNT}"
SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
OBSERVATIONS = "/v1/observations"
JSON = {"Content-Type": "application/json"}
FIFTY_MB = 50 * 1024 * 1024


# --- 401: signatures ------------------------------------------------------------------------------


async def test_stripe_bad_signature_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.stripe(secret="whsec_not_the_configured_secret")
    failures_before = counter_value("paystream_signature_failures_total", provider="stripe", reason="bad_signature")

    await post_rejected(offline_ingest, STRIPE, body, headers, status=401, reason="bad_signature", provider="stripe")

    failures_after = counter_value("paystream_signature_failures_total", provider="stripe", reason="bad_signature")
    assert failures_after == failures_before + 1


async def test_stripe_body_changed_after_signing_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.stripe()
    tampered = body.replace(b'"amount":1999', b'"amount":9999')
    assert tampered != body

    await post_rejected(offline_ingest, STRIPE, tampered, headers, status=401, reason="bad_signature")


async def test_stripe_missing_signature_header_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, _ = deliveries.stripe()

    await post_rejected(offline_ingest, STRIPE, body, JSON, status=401, reason="missing_header", provider="stripe")


async def test_stripe_stale_timestamp_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.stripe(age_s=301)  # tolerance 300 s

    await post_rejected(offline_ingest, STRIPE, body, headers, status=401, reason="stale_timestamp", provider="stripe")


async def test_standard_webhooks_bad_signature_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.standard(secret="whsec_" + "QQ" * 16)

    await post_rejected(offline_ingest, STANDARD, body, headers, status=401, reason="bad_signature",
                        provider="standard")


async def test_standard_webhooks_missing_signature_header_is_401(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    body, headers = deliveries.standard()
    del headers["webhook-signature"]

    await post_rejected(offline_ingest, STANDARD, body, headers, status=401, reason="missing_header",
                        provider="standard")


async def test_standard_webhooks_stale_timestamp_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.standard(age_s=301)

    await post_rejected(offline_ingest, STANDARD, body, headers, status=401, reason="stale_timestamp",
                        provider="standard")


async def test_standard_webhooks_future_timestamp_is_401(offline_ingest: RunningIngest) -> None:
    body = b'{"type":"payment.succeeded"}'
    headers = {"Content-Type": "application/json",
               **sign_standard(body, STANDARD_SECRET, "msg_future", int(time.time()) + 301)}

    await post_rejected(offline_ingest, STANDARD, body, headers, status=401, reason="future_timestamp",
                        provider="standard")


async def test_adyen_batch_whose_every_item_fails_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    wrong_key = "00" * 32
    body, headers = deliveries.adyen([deliveries.adyen_item(key=wrong_key), deliveries.adyen_item(key=wrong_key)])

    await post_rejected(offline_ingest, ADYEN, body, headers, status=401, reason="bad_signature", provider="adyen")


async def test_adyen_item_without_hmac_signature_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    item = deliveries.adyen_item()
    item["additionalData"] = {}
    body, headers = deliveries.adyen([item])

    await post_rejected(offline_ingest, ADYEN, body, headers, status=401, reason="missing_signature",
                        provider="adyen")


async def test_sns_message_changed_after_signing_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.sns()
    message = orjson.loads(body)
    message["Message"] = message["Message"].replace("STATE_CHANGE", "STATE_CHANGED")

    await post_rejected(offline_ingest, SNS, orjson.dumps(message), headers, status=401, reason="bad_signature",
                        provider="amazon_pay")


async def test_sns_message_without_signature_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body, headers = deliveries.sns()
    message = orjson.loads(body)
    del message["Signature"]

    await post_rejected(offline_ingest, SNS, orjson.dumps(message), headers, status=401,
                        reason="missing_signature", provider="amazon_pay")


# --- 400: malformed bodies ------------------------------------------------------------------------


async def test_stripe_signed_body_that_is_not_json_is_400(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    body, headers = deliveries.stripe(b"not json at all")

    await post_rejected(offline_ingest, STRIPE, body, headers, status=400, reason="malformed_json", provider="stripe")


async def test_adyen_body_that_is_not_json_is_400(offline_ingest: RunningIngest) -> None:
    await post_rejected(offline_ingest, ADYEN, b"{notificationItems:", JSON, status=400, reason="malformed_json",
                        provider="adyen")


async def test_sns_body_that_is_not_json_is_400(offline_ingest: RunningIngest) -> None:
    await post_rejected(offline_ingest, SNS, b"Type=Notification", {"Content-Type": "text/plain"}, status=400,
                        reason="malformed_json", provider="amazon_pay")


async def test_mollie_hint_that_is_not_an_id_form_is_400(offline_ingest: RunningIngest) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    await post_rejected(offline_ingest, MOLLIE, b"id=../../etc/passwd", headers, status=400,
                        reason="malformed_hint", provider="mollie")


# --- 413 / 408: the body itself ------------------------------------------------------------------


async def test_body_over_the_limit_by_content_length_is_413(offline_ingest: RunningIngest) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", offline_ingest.port)
    try:
        with rejection_trail("body_too_large", "stripe") as trail:
            # The declared length alone decides: not one byte of the body is sent.
            writer.write(request_head(STRIPE, {**JSON, "Content-Length": str(FIFTY_MB)}))
            reply = await asyncio.wait_for(read_reply(reader), timeout=30)
    finally:
        writer.close()

    assert_rejected(reply, trail, 413)


async def test_chunked_50mb_body_is_refused_before_the_client_finished_sending(
    offline_ingest: RunningIngest,
) -> None:
    """A streamed body without Content-Length gets 413 while most of it is still unsent (never buffered)."""
    chunk = b"x" * 65536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", offline_ingest.port)
    sent = 0
    try:
        with rejection_trail("body_too_large", "stripe") as trail:
            writer.write(request_head(STRIPE, {**JSON, "Transfer-Encoding": "chunked"}))
            reply_task = asyncio.create_task(read_reply(reader))
            try:
                while sent < FIFTY_MB and not reply_task.done():
                    writer.write(framed)
                    sent += len(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)  # let the reply be read as soon as it is there
            except ConnectionError:
                pass  # the server may close on us: the reply is what counts
            reply = await asyncio.wait_for(reply_task, timeout=30)
    finally:
        writer.close()

    assert_rejected(reply, trail, 413)
    # The limit is 1 MiB; socket buffers hold a few MiB more. A server that buffered the body before
    # refusing it would have made us send all 50 MB first.
    assert sent < FIFTY_MB // 4, f"sent {sent} bytes before the 413"


async def test_trickling_body_is_408(start_ingest: StartIngest, offline_settings: Settings) -> None:
    running = await start_ingest(offline_settings, body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)

    async def trickle() -> None:
        for _ in range(10_000):  # one byte at a time, far slower than the body timeout allows
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    trickler = asyncio.create_task(trickle())
    try:
        with rejection_trail("request_timeout", "stripe") as trail:
            writer.write(request_head(STRIPE, {**JSON, "Content-Length": "4096"}))
            reply = await asyncio.wait_for(read_reply(reader), timeout=30)
    finally:
        trickler.cancel()
        writer.close()

    assert_rejected(reply, trail, 408)


# --- 503: Kafka unavailable -------------------------------------------------------------------------


async def test_verified_delivery_while_kafka_is_unavailable_is_503_with_retry_after(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    body, headers = deliveries.stripe()

    reply = await post_rejected(offline_ingest, STRIPE, body, headers, status=503, reason="kafka_unavailable",
                                provider="stripe")

    assert reply.headers["retry-after"] == str(offline_ingest.settings.http.retry_after_s)


# --- POST /v1/observations --------------------------------------------------------------------------


async def test_observation_without_bearer_token_is_401(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    await post_rejected(offline_ingest, OBSERVATIONS, deliveries.observation(), JSON, status=401,
                        reason="missing_token", provider="sync")


async def test_observation_with_wrong_bearer_token_is_401(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    headers = {**JSON, "Authorization": "Bearer not-the-token"}

    await post_rejected(offline_ingest, OBSERVATIONS, deliveries.observation(), headers, status=401,
                        reason="bad_token", provider="sync")


async def test_observation_violating_the_schema_is_400(offline_ingest: RunningIngest, deliveries: Deliveries) -> None:
    body = deliveries.observation(state={"amount": -5})  # no provider_status, negative amount

    await post_rejected(offline_ingest, OBSERVATIONS, body, offline_ingest.bearer(), status=400,
                        reason="schema_violation", provider="sync")


async def test_observation_that_is_not_json_is_400(offline_ingest: RunningIngest) -> None:
    await post_rejected(offline_ingest, OBSERVATIONS, b"provider=stripe", offline_ingest.bearer(), status=400,
                        reason="malformed_json", provider="sync")


async def test_observation_for_an_unknown_account_is_404(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    body = deliveries.observation(account="no-such-account")

    await post_rejected(offline_ingest, OBSERVATIONS, body, offline_ingest.bearer(), status=404,
                        reason="unknown_route", provider="sync")


async def test_observation_while_kafka_is_unavailable_is_503(
    offline_ingest: RunningIngest, deliveries: Deliveries
) -> None:
    reply = await post_rejected(offline_ingest, OBSERVATIONS, deliveries.observation(), offline_ingest.bearer(),
                                status=503, reason="kafka_unavailable", provider="sync")

    assert reply.headers["retry-after"] == str(offline_ingest.settings.http.retry_after_s)
