"""Adyen's money-moving sequences on the real broker: signed notification items over HTTP to ingest, through the
processor worker, to the exact events on payments.status.v1 (each valid against the JSON Schema).

The stories run at once (they share nothing but the pipeline); each sends a payment's items one at a time and
waits for the event a step must cause before sending the next (a payment's deliveries have different inbox
keys, so without the wait they could be normalized in any order). Then every eventCode Adyen documents, with
success "true" and "false", goes through the running pipeline: nothing may reach payments.dlq.v1.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import ACCOUNT, ADYEN_HEX_KEY, Pipeline, running_pipeline, tell_stories, told_events
from processor_harness import read_all

from ingest.providers.adyen import parse as adyen
from ingest.providers.signers import adyen_batch, sign_adyen_item
from paystream.config import Settings
from paystream.errors import UnknownProviderStatus
from schemas.envelopes import InboxEnvelope, from_rfc3339
from schemas.status import Source

pytestmark = pytest.mark.kafka

PATH = f"/webhooks/adyen/{ACCOUNT}"
CODES: list[str] = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "catalogs" /
                               "adyen_event_codes.json").read_text())["event_codes"]
# One expected event: (status, captured_amount, refunded_amount, disputed_amount, reason_code, risk hold).
Expected = tuple[str, int, int, int, str | None, bool | None]
Story = Callable[[Pipeline, str], Awaitable[dict[str, list[Expected]]]]


def seen(event: dict[str, Any]) -> Expected:
    data = event["data"]
    risk = data["risk"]
    return (data["status"], data["captured_amount"], data["refunded_amount"], data["disputed_amount"],
            data["reason_code"], None if risk is None else risk["hold"])


class Payment:
    """One Adyen payment of a story: its items, signed and posted one at a time, each a second later in
    provider time than the one before."""

    def __init__(self, pipe: Pipeline, psp: str, amount: int = 1000) -> None:
        self.pipe, self.psp, self.amount = pipe, psp, amount
        self.key = f"adyen:{ACCOUNT}:payment:{psp}"
        self.at = time.time() - 600
        self.steps = 0

    def item(self, code: str, psp: str, value: int, *, success: bool = True, **fields: Any) -> dict[str, Any]:
        self.at += 1
        item = {"pspReference": psp, "merchantAccountCode": "PaystreamTestECOM",
                "merchantReference": f"order-{self.psp}", "amount": {"currency": "EUR", "value": value},
                "eventCode": code, "success": "true" if success else "false", "paymentMethod": "visa",
                "eventDate": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds"), **fields}
        if psp != self.psp:
            item["originalReference"] = self.psp
        return item

    async def send(self, item: dict[str, Any], events: int) -> None:
        """Post ``item`` and wait until the payment has ``events`` status events."""
        body = adyen_batch([sign_adyen_item(item, ADYEN_HEX_KEY)])
        await self.pipe.post_raw(PATH, body, {"content-type": "application/json"})
        await self.pipe.wait_events(self.key, events)

    async def authorised_and_captured(self) -> None:
        await self.send(self.item("AUTHORISATION", self.psp, self.amount), 1)
        await self.send(self.item("CAPTURE", f"{self.psp}C", self.amount), 2)


AUTHORIZED: Expected = ("authorized", 0, 0, 0, None, None)
CAPTURED: Expected = ("captured", 1000, 0, 0, None, None)


async def refund_failed(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"RF{run}")
    await pay.authorised_and_captured()
    await pay.send(pay.item("REFUND", f"{pay.psp}R", 1000), 3)
    await pay.send(pay.item("REFUND_FAILED", f"{pay.psp}R", 1000, reason="Refund Failed"), 4)
    return {pay.key: [AUTHORIZED, CAPTURED, ("refunded", 1000, 1000, 0, None, None),
                      ("captured", 1000, 0, 0, "Refund Failed", None)]}


async def refund_reversed(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"RR{run}")
    await pay.authorised_and_captured()
    await pay.send(pay.item("REFUND", f"{pay.psp}R", 400), 3)
    await pay.send(pay.item("REFUNDED_REVERSED", f"{pay.psp}R", 400), 4)
    return {pay.key: [AUTHORIZED, CAPTURED, ("partially_refunded", 1000, 400, 0, None, None), CAPTURED]}


async def cancel_or_refund_cancel(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"CC{run}")
    await pay.send(pay.item("AUTHORISATION", pay.psp, 1000), 1)
    await pay.send(pay.item("CANCEL_OR_REFUND", f"{pay.psp}X", 1000,
                            additionalData={"modification.action": "cancel"}), 2)
    return {pay.key: [AUTHORIZED, ("canceled", 0, 0, 0, None, None)]}


async def cancel_or_refund_refund(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"CR{run}")
    await pay.authorised_and_captured()
    await pay.send(pay.item("CANCEL_OR_REFUND", f"{pay.psp}X", 1000,
                            additionalData={"modification.action": "refund"}), 3)
    return {pay.key: [AUTHORIZED, CAPTURED, ("refunded", 1000, 1000, 0, None, None)]}


async def expiry(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"EX{run}")
    await pay.send(pay.item("AUTHORISATION", pay.psp, 1000), 1)
    await pay.send(pay.item("EXPIRE", pay.psp, 1000), 2)  # the payment's own pspReference, as Adyen sends it
    return {pay.key: [AUTHORIZED, ("canceled", 0, 0, 0, "expired", None)]}


async def dispute_won(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"DW{run}")
    await pay.authorised_and_captured()
    dispute = f"{pay.psp}D"
    data: dict[str, Any] = {"additionalData": {"chargebackReasonCode": "10.4", "disputeStatus": "Undefended"}}
    await pay.send(pay.item("NOTIFICATION_OF_CHARGEBACK", dispute, 1000, **data), 3)
    await pay.send(pay.item("CHARGEBACK", dispute, 1000, **data), 4)
    await pay.send(pay.item("CHARGEBACK_REVERSED", dispute, 1000,
                            additionalData={"chargebackReasonCode": "10.4", "disputeStatus": "Won"}), 5)
    return {pay.key: [AUTHORIZED, CAPTURED, ("disputed", 1000, 0, 1000, "10.4", None),
                      ("charged_back", 1000, 0, 1000, "10.4", None), ("captured", 1000, 0, 0, "10.4", None)]}


async def dispute_lost(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    """Defended, reversed for a while, then lost for good: the second chargeback."""
    pay = Payment(pipe, f"DL{run}")
    await pay.authorised_and_captured()
    dispute = f"{pay.psp}D"
    await pay.send(pay.item("NOTIFICATION_OF_CHARGEBACK", dispute, 1000), 3)
    await pay.send(pay.item("CHARGEBACK", dispute, 1000, additionalData={"disputeStatus": "Pending"}), 4)
    await pay.send(pay.item("CHARGEBACK_REVERSED", dispute, 1000, additionalData={"disputeStatus": "Pending"}), 5)
    await pay.send(pay.item("SECOND_CHARGEBACK", dispute, 1000, reason="Cardholder Dispute",
                            additionalData={"disputeStatus": "Lost"}), 6)
    return {pay.key: [AUTHORIZED, CAPTURED, ("disputed", 1000, 0, 1000, None, None),
                      ("charged_back", 1000, 0, 1000, None, None), CAPTURED,
                      ("charged_back", 1000, 0, 1000, "Cardholder Dispute", None)]}


async def fraud_on_captured(pipe: Pipeline, run: str) -> dict[str, list[Expected]]:
    pay = Payment(pipe, f"FR{run}")
    await pay.authorised_and_captured()
    await pay.send(pay.item("NOTIFICATION_OF_FRAUD", f"{pay.psp}F", 1000, reason="Fraudulent Use of Account Number",
                            additionalData={"nofReasonCode": "6", "nofSchemeCode": "visa"}), 3)
    # The status does not change; the event carries the risk, and fulfillment holds.
    return {pay.key: [AUTHORIZED, CAPTURED, ("captured", 1000, 0, 0, "6", True)]}


STORIES: dict[str, Story] = {
    "refund failed": refund_failed, "refund reversed": refund_reversed,
    "cancel-or-refund (cancel)": cancel_or_refund_cancel, "cancel-or-refund (refund)": cancel_or_refund_refund,
    "expiry": expiry, "dispute won": dispute_won, "dispute lost": dispute_lost,
    "fraud notification on a captured payment": fraud_on_captured,
}


@pytest.fixture(scope="module")
async def pipeline(
    base_settings: Settings, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    async with running_pipeline(base_settings, tmp_path_factory.mktemp("adyen-e2e")) as running:
        yield running


@pytest.fixture(scope="module")
async def told(pipeline: Pipeline) -> dict[str, dict[str, list[Expected]] | BaseException]:
    """Every story, run at once: what each expects (or how it failed)."""
    return await tell_stories(pipeline, STORIES)


@pytest.mark.parametrize("name", list(STORIES))
async def test_story(name: str, told: dict[str, dict[str, list[Expected]] | BaseException],
                     pipeline: Pipeline) -> None:
    for _, events in told_events(pipeline, told, name, seen):
        for event in events:
            assert event["data"]["provider_status"].split(":")[0] in CODES


def every_code_batches(run: str) -> list[tuple[bytes, list[tuple[str, str]]]]:
    """One signed batch per documented eventCode, with a success "true" and a success "false" item."""
    batches = []
    payment = f"EV{run}P"
    for n, code in enumerate(CODES):
        items = []
        for success in ("true", "false"):
            item: dict[str, Any] = {
                "pspReference": f"EV{run}{n:02d}{success[0].upper()}", "originalReference": payment,
                "merchantAccountCode": "PaystreamTestECOM", "merchantReference": f"order-{payment}",
                "amount": {"currency": "EUR", "value": 1000}, "eventCode": code, "success": success,
                "eventDate": datetime.now(UTC).isoformat(timespec="seconds"), "reason": ""}
            if code == "CANCEL_OR_REFUND":
                item["additionalData"] = {"modification.action": "refund"}
            items.append(item)
        batches.append((adyen_batch([sign_adyen_item(item, ADYEN_HEX_KEY) for item in items]),
                        [(item["pspReference"], success) for item, success in zip(items, ("true", "false"),
                                                                                 strict=True)]))
    return batches


async def test_every_adyen_code_true_and_false_leaves_the_dlq_empty(
        pipeline: Pipeline, told: dict[str, Any]) -> None:
    settings = pipeline.settings
    run = uuid.uuid4().hex[:6].upper()
    batches = every_code_batches(run)
    await asyncio.gather(*(pipeline.post_raw(PATH, body, {"content-type": "application/json"})
                           for body, _ in batches))
    await pipeline.settle()
    inbox = [InboxEnvelope.from_bytes(record.value) for record in await read_all(settings, settings.topics.inbox)]
    ours = [envelope for envelope in inbox if envelope.delivery_id.startswith(f"EV{run}")]
    assert len(ours) == 2 * len(CODES)  # every item verified and published: none refused at the door
    # What the catalog makes of them, as the worker did.
    counts: Counter[str] = Counter()
    for envelope in ours:
        try:
            observations = adyen.parse(envelope.body, account=ACCOUNT, source=Source.PUSH,
                                       evidence_id=envelope.delivery_id,
                                       observed_at=from_rfc3339(envelope.received_at), object_kind="event")
        except UnknownProviderStatus:
            counts["unknown"] += 1
            continue
        counts["mapped" if observations else "ignored"] += 1
    dlq = await read_all(settings, settings.topics.dlq)
    codes = Counter(adyen.CATALOG.entry(code).outcome != "ignore" for code in CODES)
    print(f"\nadyen: {len(CODES)} eventCodes ({codes[True]} mapped, {codes[False]} ignored, 0 unknown); "
          f"{len(ours)} items (true and false): {counts['mapped']} mapped, {counts['ignored']} ignored, "
          f"{counts['unknown']} unknown; payments.dlq.v1: {len(dlq)} records")
    assert counts["unknown"] == 0
    assert counts["mapped"] + counts["ignored"] == 2 * len(CODES)
    assert dlq == [], [(record.key, record.headers) for record in dlq[:5]]
