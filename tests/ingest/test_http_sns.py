"""Amazon Pay IPNs over SNS through the HTTP layer, with a local HTTPS stand-in for sns.<region>.amazonaws.com.

The signing certificate is fetched over HTTPS from ``sns_host`` (test CA, injected resolver), and the
SubscribeURL of a confirmation is fetched from it too, so these tests see exactly what ingest asks SNS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
import pytest
from http_harness import (
    CERT_NAME,
    CERT_URL,
    FOREIGN_TOPIC,
    SNS_ACCOUNT,
    Deliveries,
    RunningIngest,
    SnsHost,
    StartIngest,
    counter_value,
    post_rejected,
    read_inbox,
)

from paystream.config import Settings

SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"


async def _ingest_reaching(start_ingest: StartIngest, settings: Settings, host: SnsHost) -> RunningIngest:
    return await start_ingest(
        settings, certificates=host.certificate_store(), subscriptions=host.subscription_handler()
    )


@pytest.mark.kafka
async def test_subscription_confirmation_for_an_allowed_topic_is_confirmed_and_not_published(
    start_ingest: StartIngest, kafka_settings: Settings, sns_host: SnsHost, deliveries: Deliveries
) -> None:
    running = await _ingest_reaching(start_ingest, kafka_settings, sns_host)
    await running.wait_ready()
    message = deliveries.sns_message("SubscriptionConfirmation")
    body, headers = deliveries.sns(message)
    confirmed = counter_value("paystream_sns_subscription_confirmations_total", outcome="confirmed")

    reply = await running.post(SNS, body, headers)

    assert reply.status == 200
    subscribe_url = urlsplit(str(message["SubscribeURL"]))
    assert sns_host.confirmations() == [f"{subscribe_url.path}?{subscribe_url.query}"]
    assert counter_value("paystream_sns_subscription_confirmations_total", outcome="confirmed") == confirmed + 1
    assert await read_inbox(running.settings) == []  # a control message is handled, never published


async def test_subscription_confirmation_for_a_foreign_topic_is_401_and_nothing_is_fetched(
    start_ingest: StartIngest, offline_settings: Settings, sns_host: SnsHost, deliveries: Deliveries
) -> None:
    running = await _ingest_reaching(start_ingest, offline_settings, sns_host)
    body, headers = deliveries.sns(deliveries.sns_message("SubscriptionConfirmation", topic=FOREIGN_TOPIC))

    await post_rejected(running, SNS, body, headers, status=401, reason="topic_not_allowed", provider="amazon_pay")

    assert sns_host.requests == []  # neither the certificate nor the SubscribeURL


async def test_notification_for_a_foreign_topic_is_401_and_nothing_is_fetched(
    start_ingest: StartIngest, offline_settings: Settings, sns_host: SnsHost, deliveries: Deliveries
) -> None:
    running = await _ingest_reaching(start_ingest, offline_settings, sns_host)
    body, headers = deliveries.sns(deliveries.sns_message("Notification", topic=FOREIGN_TOPIC))

    await post_rejected(running, SNS, body, headers, status=401, reason="topic_not_allowed", provider="amazon_pay")

    assert sns_host.requests == []


async def test_subscribe_url_that_fails_is_503_so_sns_resends_the_confirmation(
    start_ingest: StartIngest, offline_settings: Settings, sns_host: SnsHost, deliveries: Deliveries
) -> None:
    running = await _ingest_reaching(start_ingest, offline_settings, sns_host)
    sns_host.confirm_status = 500
    body, headers = deliveries.sns(deliveries.sns_message("SubscriptionConfirmation"))

    reply = await post_rejected(running, SNS, body, headers, status=503, reason="dependency_unavailable",
                                provider="amazon_pay")

    assert "retry-after" in reply.headers
    assert len(sns_host.confirmations()) == 1


@pytest.mark.kafka
async def test_sns_notifications_land_on_the_inbox_as_thin_deliveries_with_one_certificate_fetch(
    start_ingest: StartIngest, kafka_settings: Settings, sns_host: SnsHost, deliveries: Deliveries
) -> None:
    running = await _ingest_reaching(start_ingest, kafka_settings, sns_host)
    await running.wait_ready()
    first, headers = deliveries.sns()
    second, _ = deliveries.sns()

    replies = [await running.post(SNS, body, headers) for body in (first, second)]

    assert [reply.status for reply in replies] == [200, 200]
    assert sns_host.requests == [f"/{CERT_NAME}"]  # fetched over HTTPS once, then cached
    inbox = {envelope.delivery_id: (key, envelope) for key, envelope in await read_inbox(running.settings)}
    message_id = orjson.loads(first)["MessageId"]
    key, envelope = inbox[message_id]
    inner = orjson.loads(orjson.loads(first)["Message"])
    assert key == f"amazon_pay:{SNS_ACCOUNT}:charge:{inner['ObjectId']}".encode()  # keyed by the Charge it names
    assert envelope.body == first
    assert envelope.kind == "thin"
    assert envelope.verification == {"verifier": "sns-sha256", "key_id": CERT_URL, "ok": True}
    assert envelope.object_ids["object_type"] == "charge"
    assert envelope.object_ids["object_id"] == inner["ObjectId"]
    assert len(inbox) == 2
