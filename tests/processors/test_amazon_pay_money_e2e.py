"""Amazon Pay money moves end to end on the real broker: signed SNS IPNs over HTTP to ingest, signed Gets from
the provider double by the fetcher, and the exact status events the processor emits.

* A CHARGEBACK IPN names a dispute: the fetcher gets it with Get Dispute and the charge becomes disputed, then
  charged_back when the buyer wins — or captured again (nothing disputed) when the merchant wins.
* A declined refund: its own state (failed) under the charge, so it never counts; a refunded one does.

Refund and dispute fetches are asked for by the refund's / dispute's own id while what they find is filed under
the charge: no stale-poll chain may wait on those ids (only a charge's poll reads a payment's status).
Nothing reaches payments.dlq.v1.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from e2e_pipeline import EVENT_SCHEMA, Pipeline, running_pipeline
from e2e_pipeline import demo_traffic as demo
from processor_harness import read_all

from paystream.config import Settings
from schemas.envelopes import FetchRequest, FetchResult

pytestmark = pytest.mark.kafka

SNS_PATH = "/webhooks/amazon_pay/eu-main"


@pytest.fixture(scope="module")
async def pipeline(base_settings: Settings, kafka_bootstrap: str,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("amazon-money")) as running:
        yield running
        await running.settle()
        assert await read_all(running.settings, running.settings.topics.dlq) == []


class Story:
    """One charge: provider time one second further on every step; IPNs signed by the harness's SNS key."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.at = time.time()
        self.permission = f"S02-{uuid.uuid4().hex[:7]}-{uuid.uuid4().hex[:7]}"
        self.charge = f"{self.permission}-C000001"
        self.key = f"amazon_pay:eu-main:charge:{self.charge}"

    def tick(self) -> float:
        self.at += 1
        return self.at

    async def ipn(self, object_type: str, object_id: str) -> None:
        message = self.pipe.deliveries.sns_message()
        message["Message"] = orjson.dumps({
            "MerchantID": "A3TEST", "ObjectType": object_type, "ObjectId": object_id,
            "ChargePermissionId": self.permission, "NotificationType": "STATE_CHANGE",
            "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V2",
        }).decode()
        await self.pipe.post_raw(SNS_PATH, *self.pipe.deliveries.sns(message))

    async def captured(self) -> None:
        self.pipe.double.set_object("amazon_pay", "charge", self.charge,
                                    demo.amazon_charge(self.charge, self.permission, "Captured", "14.00", self.tick()))
        await self.ipn("CHARGE", self.charge)
        await self.pipe.wait_events(self.key, 1)

    def dispute(self, dispute_id: str, state: str, resolution: str | None = None,
                reason: str | None = None) -> dict[str, Any]:
        details = {**demo.amazon_status(state, self.tick()), "reasonCode": reason, "resolution": resolution}
        return {"disputeId": dispute_id, "chargeId": self.charge, "disputeType": "Chargeback",
                "disputeAmount": {"amount": "14.00", "currencyCode": "EUR"}, "filingReason": "Fraudulent",
                "statusDetails": details, "creationTimestamp": demo.amazon_time(self.at),
                "merchantResponseDeadline": demo.amazon_time(self.at + 11 * 86400),
                "resolutionAuthority": "AmazonPay", "releaseEnvironment": "Sandbox"}

    def refund(self, refund_id: str, state: str, amount: str, reason: str | None = None) -> dict[str, Any]:
        price = {"amount": amount, "currencyCode": "EUR"}
        return {"refundId": refund_id, "chargeId": self.charge, "refundAmount": price,
                "statusDetails": {**demo.amazon_status(state, self.tick()), "reasonCode": reason},
                "creationTimestamp": demo.amazon_time(self.at), "releaseEnvironment": "Sandbox"}

    async def fetched(self, object_id: str, times: int) -> None:
        """Until the fetcher published ``times`` results for ``object_id`` (then its effects can be settled)."""
        settings = self.pipe.settings
        deadline = time.monotonic() + 60
        while sum(1 for r in await read_all(settings, settings.topics.fetch_results)
                  if FetchResult.from_bytes(r.value).object_id == object_id) < times:
            assert time.monotonic() < deadline, f"no {times} fetch results for {object_id}"
            await asyncio.sleep(0.3)


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["status"], data["captured_amount"], data["refunded_amount"], data["disputed_amount"],
            data["provider_status"])


async def requests_for(pipe: Pipeline, object_type: str, object_id: str) -> list[str]:
    """The reasons of the fetch requests the processor wrote for ``{object_type}:{object_id}``."""
    key = f"amazon_pay:eu-main:{object_type}:{object_id}".encode()
    return [FetchRequest.from_bytes(r.value).reason
            for r in await read_all(pipe.settings, pipe.settings.topics.fetch_requests) if r.key == key]


async def test_a_chargeback_ipn_is_fetched_as_a_dispute_on_the_charge_lost_then_another_won(
    pipeline: Pipeline,
) -> None:
    lost, won = Story(pipeline), Story(pipeline)
    for story in (lost, won):
        await story.captured()
    lost_id, won_id = f"{lost.permission}-B000001", f"{won.permission}-B000001"
    double = pipeline.double
    for story, dispute_id in ((lost, lost_id), (won, won_id)):
        double.set_object("amazon_pay", "dispute", dispute_id,
                          story.dispute(dispute_id, "ActionRequired", reason="MerchantResponseRequired"))
        await story.ipn("CHARGEBACK", dispute_id)
        await pipeline.wait_events(story.key, 2)
    double.set_object("amazon_pay", "dispute", lost_id, lost.dispute(lost_id, "Resolved", "BuyerWon"))
    await lost.ipn("CHARGEBACK", lost_id)
    double.set_object("amazon_pay", "dispute", won_id, won.dispute(won_id, "Resolved", "MerchantWon"))
    await won.ipn("CHARGEBACK", won_id)
    lost_events = await pipeline.wait_events(lost.key, 3)
    won_events = await pipeline.wait_events(won.key, 3)
    await pipeline.settle()

    assert [shape(e) for e in pipeline.events_for(lost.key)] == [
        ("captured", 1400, 0, 0, "Captured"),
        ("disputed", 1400, 0, 1400, "Dispute:ActionRequired"),
        ("charged_back", 1400, 0, 1400, "Dispute:Resolved:BuyerWon"),
    ]
    assert [shape(e) for e in pipeline.events_for(won.key)] == [
        ("captured", 1400, 0, 0, "Captured"),
        ("disputed", 1400, 0, 1400, "Dispute:ActionRequired"),
        ("captured", 1400, 0, 0, "Dispute:Resolved:MerchantWon"),
    ]
    assert lost_events[1]["data"]["reason_code"] == "MerchantResponseRequired"
    assert lost_events[2]["data"]["agreement_ref"] == lost.permission  # from the charge: the latest that knows
    for event in (*lost_events, *won_events):
        EVENT_SCHEMA.validate(event)
    # Each dispute was fetched by a signed Get Dispute, once per distinct IPN.
    gets = [(r.path.rsplit("/", 1)[1], r.signature, r.status) for r in double.requests
            if r.provider == "amazon_pay" and "/disputes/" in r.path]
    assert sorted(gets) == sorted([(lost_id, "ok", 200)] * 2 + [(won_id, "ok", 200)] * 2)
    # The dispute's own id asks for no stale polls: its results are filed under the charge.
    assert await requests_for(pipeline, "dispute", lost_id) == ["thin_push", "thin_push"]


async def test_a_declined_refund_has_its_own_state_and_never_counts(pipeline: Pipeline) -> None:
    story = Story(pipeline)
    await story.captured()
    refunded, declined = f"{story.permission}-R000001", f"{story.permission}-R000002"
    double = pipeline.double
    double.set_object("amazon_pay", "refund", refunded, story.refund(refunded, "Refunded", "5.00"))
    await story.ipn("REFUND", refunded)
    await pipeline.wait_events(story.key, 2)
    double.set_object("amazon_pay", "refund", declined, story.refund(declined, "RefundInitiated", "4.00"))
    await story.ipn("REFUND", declined)
    await story.fetched(declined, 1)
    double.set_object("amazon_pay", "refund", declined, story.refund(declined, "Declined", "4.00", "AmazonRejected"))
    await story.ipn("REFUND", declined)
    await story.fetched(declined, 2)
    await pipeline.settle()

    assert [shape(e) for e in pipeline.events_for(story.key)] == [
        ("captured", 1400, 0, 0, "Captured"),
        ("partially_refunded", 1400, 500, 0, "Refund:Refunded"),
    ]
    # The declined refund was fetched both times and read (its states are on the fetch results; no DLQ record).
    bodies = [orjson.loads(FetchResult.from_bytes(r.value).body)
              for r in await read_all(pipeline.settings, pipeline.settings.topics.fetch_results)
              if FetchResult.from_bytes(r.value).object_id == declined]
    assert [b["statusDetails"]["state"] for b in bodies] == ["RefundInitiated", "Declined"]
    for refund_id in (refunded, declined):
        assert set(await requests_for(pipeline, "refund", refund_id)) == {"thin_push"}, refund_id
