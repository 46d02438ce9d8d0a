"""Expired and future timestamps, and replayed deliveries with a valid signature.

Within the tolerance window a replay is indistinguishable from a provider's own retry, so it is accepted
and published under the SAME inbox key (the payment it is about, ingest.providers.routing) with the same
delivery id: the processors' join recognises its content and makes it a no-op. Beyond the window it is 401.
SNS messages carry no freshness rule by design
(ingest/providers/amazon_pay/sns.py: validity of the certificate at the message Timestamp); their
MessageId is the dedupe key, and an IPN is thin (it can only cause a fetch).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from http_harness import ACCOUNT, SNS_ACCOUNT, STANDARD_SECRET, STRIPE_SECRET, Deliveries, read_inbox
from reliability_harness import HostileTarget

from ingest.providers.routing import delivery_payment_key
from ingest.providers.signers import sign_standard, sign_stripe

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

STRIPE = f"/webhooks/stripe/{ACCOUNT}"
STANDARD = f"/webhooks/standard/{ACCOUNT}"
ADYEN = f"/webhooks/adyen/{ACCOUNT}"
SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
JSON = {"Content-Type": "application/json"}
TOLERANCE_S = 300


def routed(provider: str, body: bytes) -> bytes:
    """The inbox key ingest gives a delivery: the payment it is about."""
    key = delivery_payment_key(provider, ACCOUNT, "event", body, None)
    assert key is not None
    return key.encode()


def stripe_at(body: bytes, timestamp: int | str) -> dict[str, str]:
    if isinstance(timestamp, str):  # a malformed t=: signed as if it were the text
        header = sign_stripe(body, STRIPE_SECRET, 0).replace("t=0", f"t={timestamp}")
        return {**JSON, "Stripe-Signature": header}
    return {**JSON, "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, timestamp)}


# --- timestamps -----------------------------------------------------------------------------------


async def test_stripe_signature_older_than_the_tolerance_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body = rel_deliveries.stripe_event()
    reply = await hostile_target.refused(STRIPE, body, stripe_at(body, int(time.time()) - TOLERANCE_S - 5))
    assert (reply.status, reply.json()["error"]) == (401, "stale_timestamp")


async def test_stripe_signature_from_the_future_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body = rel_deliveries.stripe_event()
    reply = await hostile_target.refused(STRIPE, body, stripe_at(body, int(time.time()) + TOLERANCE_S + 5))
    assert (reply.status, reply.json()["error"]) == (401, "future_timestamp")


async def test_stripe_signature_from_1970_is_401(hostile_target: HostileTarget, rel_deliveries: Deliveries) -> None:
    body = rel_deliveries.stripe_event()
    reply = await hostile_target.refused(STRIPE, body, stripe_at(body, 0))
    assert (reply.status, reply.json()["error"]) == (401, "stale_timestamp")


async def test_stripe_signature_from_the_year_5000_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body = rel_deliveries.stripe_event()
    reply = await hostile_target.refused(STRIPE, body, stripe_at(body, 95_617_584_000))
    assert (reply.status, reply.json()["error"]) == (401, "future_timestamp")


@pytest.mark.parametrize("timestamp", ["-5", "1.7e9", "0x65000000", " 1700000000", "1" * 40, ""])
async def test_stripe_timestamp_that_is_not_plain_unix_seconds_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, timestamp: str
) -> None:
    body = rel_deliveries.stripe_event()
    reply = await hostile_target.refused(STRIPE, body, stripe_at(body, timestamp))
    assert (reply.status, reply.json()["error"]) == (401, "malformed_header")


async def test_standard_webhooks_signature_older_than_the_tolerance_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body, headers = rel_deliveries.standard(age_s=TOLERANCE_S + 5)
    reply = await hostile_target.refused(STANDARD, body, headers)
    assert (reply.status, reply.json()["error"]) == (401, "stale_timestamp")


async def test_standard_webhooks_signature_from_the_future_is_401(hostile_target: HostileTarget) -> None:
    body = b'{"type":"payment.succeeded"}'
    headers = {**JSON, **sign_standard(body, STANDARD_SECRET, "msg_future", int(time.time()) + TOLERANCE_S + 5)}
    reply = await hostile_target.refused(STANDARD, body, headers)
    assert (reply.status, reply.json()["error"]) == (401, "future_timestamp")


@pytest.mark.parametrize("stamp", ["2019-06-01T00:00:00.000Z", "2041-06-01T00:00:00.000Z"])
async def test_sns_message_signed_outside_its_certificate_validity_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, stamp: str
) -> None:
    message = rel_deliveries.sns_message()
    message["Timestamp"] = stamp  # the test certificate is valid 2020-2040
    body, headers = rel_deliveries.sns(message)
    reply = await hostile_target.refused(SNS, body, headers)
    assert (reply.status, reply.json()["error"]) == (401, "cert_not_valid")


# --- replays of validly signed deliveries ----------------------------------------------------------


async def _accepted_twice(target: HostileTarget, path: str, body: bytes, headers: dict[str, str], key: bytes) -> None:
    replies = [await target.running.post(path, body, headers) for _ in range(2)]
    assert [reply.status for reply in replies] == [200, 200], [reply.body for reply in replies]
    target.accepted_keys.add(key)


async def test_stripe_replay_within_the_window_is_accepted_under_the_same_inbox_key(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body, headers = rel_deliveries.stripe(age_s=TOLERANCE_S - 60)
    key = routed("stripe", body)

    await _accepted_twice(hostile_target, STRIPE, body, headers, key)

    inbox = Counter(k for k, _ in await read_inbox(hostile_target.running.settings))
    assert inbox[key] == 2  # two records, one delivery id: the processors' dedupe drops the second


async def test_standard_webhooks_replay_within_the_window_is_accepted_under_the_same_inbox_key(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    body, headers = rel_deliveries.standard(age_s=TOLERANCE_S - 60)
    key = f"standard:{ACCOUNT}:{headers['webhook-id']}".encode()

    await _accepted_twice(hostile_target, STANDARD, body, headers, key)

    inbox = Counter(k for k, _ in await read_inbox(hostile_target.running.settings))
    assert inbox[key] == 2


async def test_adyen_replay_is_accepted_under_the_same_inbox_key(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    """Adyen signs no timestamp: a replay is always a retry as far as ingest can tell."""
    item = rel_deliveries.adyen_item()
    body, headers = rel_deliveries.adyen([item])
    key = f"adyen:{ACCOUNT}:payment:{item['pspReference']}".encode()  # the payment the item is about

    await _accepted_twice(hostile_target, ADYEN, body, headers, key)

    inbox = Counter(k for k, _ in await read_inbox(hostile_target.running.settings))
    assert inbox[key] == 2


async def test_stripe_replay_after_the_window_closed_is_401_and_not_published(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    """The SAME signed bytes: accepted while fresh, refused once older than the tolerance."""
    signed_at = int(time.time()) - TOLERANCE_S + 3
    body = rel_deliveries.stripe_event()
    headers = stripe_at(body, signed_at)
    key = routed("stripe", body)
    assert (await hostile_target.running.post(STRIPE, body, headers)).status == 200
    hostile_target.accepted_keys.add(key)

    await asyncio.sleep(max(0.0, signed_at + TOLERANCE_S + 1.5 - time.time()))  # let the window close
    reply = await hostile_target.refused(STRIPE, body, headers)

    assert (reply.status, reply.json()["error"]) == (401, "stale_timestamp")
    inbox = Counter(k for k, _ in await read_inbox(hostile_target.running.settings))
    assert inbox[key] == 1


# --- closing check --------------------------------------------------------------------------------


async def test_only_the_accepted_replays_reached_the_inbox(hostile_target: HostileTarget) -> None:
    await hostile_target.assert_inbox_holds_only_accepted()
