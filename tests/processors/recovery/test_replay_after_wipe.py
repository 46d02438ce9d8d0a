"""Replaying the S3 archive after the processors' state was wiped restores the same final statuses.

The scenario, on the real broker and the real moto S3 server: signed pushes from three providers go
through the providers' own verifiers into envelopes built exactly as ingest builds them, a processor
worker turns them into status events, and the archiver copies the inbox to S3. Then everything the
processor app owns is lost (:func:`processors.recovery.app_state.wipe_app_state`) — the worker stops, its
consumer group is deleted, so are its internal topic ``<app id>-payment-inputs`` and its state changelog
``changelog__<app id>--…`` and its local RocksDB directory — and the inbox's retained records are gone too
(``DeleteRecords`` up to the end: what retention does to a delivery older than 14 days). ``paystream replay``
from S3 is then the only source.

Replays bypass the per-payment dedupe on purpose (they must re-apply after exactly this kind of wipe), so the
provider retries in the archive are applied again too: the join collapses identical content, so they add no
event. For the same reason a second replay of the same range, onto the restored state, emits nothing.

The Kafka-source variant of "replaying a range twice emits nothing" runs under load in
tests/reliability/test_rel_fault_duplicates.py; here the second replay is the S3 one, after the restore.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from processor_harness import (
    events_of,
    processor_settings,
    send_inbox,
    start_worker,
)
from pydantic import SecretStr

from ingest.app import IngestApp
from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers import PUSH_PROVIDERS
from ingest.providers.signers import adyen_batch, sign_adyen_item, sign_standard, sign_stripe
from paystream.config import AccountConfig, Settings
from paystream.kafka import connection_options, make_consumer
from processors.internal_topics import changelog_topic
from processors.recovery.app_state import local_state_dir, wipe_app_state
from processors.recovery.archive import FlushPolicy, run_archiver
from processors.recovery.archive_format import decode_object
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.group_lag import wait_drained
from processors.recovery.rebuild_diff import Snapshot, read_live_status, read_to_end
from processors.recovery.replay import ReplayOptions, replay
from processors.settings import ProcessorSettings
from processors.topology import stream_id
from schemas.envelopes import InboxEnvelope, to_rfc3339

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

STRIPE_SECRET = "whsec_wipe_test_stripe"
ADYEN_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_ENV = {"PS_TEST_WIPE_STRIPE": STRIPE_SECRET, "PS_TEST_WIPE_ADYEN": ADYEN_KEY,
              "PS_TEST_WIPE_STANDARD": STANDARD_SECRET}
ACCOUNTS = {
    "stripe": {"eu": AccountConfig(secrets=["env:PS_TEST_WIPE_STRIPE"])},
    "adyen": {"main": AccountConfig(secrets=["env:PS_TEST_WIPE_ADYEN"])},
    "standard": {"shop": AccountConfig(secrets=["env:PS_TEST_WIPE_STANDARD"], status_map={
        "payment.authorized": "authorized", "payment.succeeded": "captured", "payment.refunded": "refunded"})},
}
CREATED = 1_735_700_000  # 2025-01-01T02:53:20Z
FAST_ARCHIVE = FlushPolicy(max_records=50, max_age_s=0.2, retry_initial_s=0.1, retry_max_s=0.5, poll_timeout_ms=100)


# --- signed deliveries, verified and enveloped the way ingest does it ---------------------------------------


Push = tuple[bytes, dict[str, str]]  # body, headers


def stripe_push(event_id: str, intent: str, event_type: str, status: str, seconds: int) -> Push:
    body = orjson.dumps({
        "id": event_id, "object": "event", "type": f"payment_intent.{event_type}", "created": CREATED + seconds,
        "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": 1500, "currency": "eur", "status": status,
            "amount_received": 1500 if status == "succeeded" else 0, "created": CREATED, "metadata": {},
        }},
    })
    return body, {"content-type": "application/json", "stripe-signature": sign_stripe(body, STRIPE_SECRET,
                                                                                        int(time.time()))}


def adyen_push(psp: str, code: str, value: int, minute: int, original: str | None = None) -> Push:
    item: dict[str, Any] = {"pspReference": psp, "merchantAccountCode": "M", "merchantReference": f"order-{psp}",
                            "amount": {"currency": "EUR", "value": value}, "eventCode": code, "success": "true",
                            "eventDate": f"2025-01-01T10:{minute:02d}:00+00:00"}
    if original:
        item["originalReference"] = original
    return adyen_batch([sign_adyen_item(item, ADYEN_KEY)]), {"content-type": "application/json"}


def standard_push(msg_id: str, event_type: str, payment: str, minute: int, **amounts: int) -> Push:
    body = orjson.dumps({"type": event_type, "timestamp": f"2025-01-01T11:{minute:02d}:00Z",
                         "data": {"id": payment, "amount": 4200, "currency": "EUR", **amounts}})
    return body, {"content-type": "application/json",
                  **sign_standard(body, STANDARD_SECRET, msg_id, int(time.time()))}


def pushes() -> list[tuple[str, str, Push]]:
    """Signed now: the verifiers refuse timestamps over 5 minutes old, and a test run takes longer than that
    from collecting this module to reaching this test."""
    return [
        ("stripe", "eu", stripe_push("evt_a1", "pi_A", "amount_capturable_updated", "requires_capture", 1)),
        ("stripe", "eu", stripe_push("evt_a2", "pi_A", "succeeded", "succeeded", 2)),
        ("stripe", "eu", stripe_push("evt_b1", "pi_B", "processing", "processing", 1)),
        ("stripe", "eu", stripe_push("evt_b2", "pi_B", "canceled", "canceled", 3)),
        ("adyen", "main", adyen_push("P1", "AUTHORISATION", 1000, 1)),
        ("adyen", "main", adyen_push("P1C", "CAPTURE", 1000, 2, original="P1")),
        ("adyen", "main", adyen_push("P1R", "REFUND", 300, 3, original="P1")),
        ("adyen", "main", adyen_push("P2", "AUTHORISATION", 2500, 1)),
        ("standard", "shop", standard_push("msg_1", "payment.authorized", "pay_1", 1)),
        ("standard", "shop", standard_push("msg_2", "payment.succeeded", "pay_1", 2, captured_amount=4200)),
        ("standard", "shop", standard_push("msg_3", "payment.refunded", "pay_1", 3, captured_amount=4200,
                                           refunded_amount=4200)),
    ]


PAYMENTS = {
    "stripe:eu:payment_intent:pi_A", "stripe:eu:payment_intent:pi_B", "adyen:main:payment:P1",
    "adyen:main:payment:P2", "standard:shop:payment:pay_1",
}


async def verified_envelopes() -> list[InboxEnvelope]:
    """Each push through its provider's verifier, then into the envelope ingest publishes."""
    envelopes = []
    for provider, account, (body, headers) in pushes():
        config = ACCOUNTS[provider][account]
        resolved = ResolvedAccount(provider, account, config, (SecretStr(SECRET_ENV[config.secrets[0][4:]]),))
        delivery = IncomingDelivery(provider, account, body, headers, time.time())
        spec = PUSH_PROVIDERS[provider]
        result = await spec.verify(delivery, resolved)
        kept = {name: headers[name] for name in spec.kept_headers if name in headers}
        received_at = to_rfc3339(datetime.now(UTC))
        envelopes += [IngestApp._envelope(delivery, item, received_at, kept, config) for item in result.accepted]
    return envelopes


# --- the broker side of the wipe ------------------------------------------------------------------------


async def wipe_processor_state(settings: Settings, conf: ProcessorSettings) -> None:
    """Wipe the app (group, internal and changelog topics, local state), and empty the inbox (retention gone)."""
    local = local_state_dir(settings, conf.app_id)
    assert local.is_dir(), f"the worker kept no state at {local}"  # the state we mean to lose exists
    wiped = await wipe_app_state(settings, conf)
    assert wiped.group_deleted
    assert wiped.topics == sorted([conf.inputs_topic(), changelog_topic(conf.app_id, stream_id(settings, conf))])
    assert wiped.state_dir == local and not local.exists()
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        inbox = [TopicPartition(settings.topics.inbox, p) for p in range(settings.topics.partitions)]
        ends = await end_offsets(settings, inbox)
        await admin.delete_records({tp: RecordsToDelete(ends[tp]) for tp in inbox if ends[tp]})
    finally:
        await admin.close()


async def end_offsets(settings: Settings, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = make_consumer(settings, group_id=None, client_suffix="test-ends")
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


def archived_count(store: ArchiveStore) -> int:
    return sum(len(list(decode_object(store.get(obj.key)))) for obj in store.list("raw/"))


async def archive_inbox(settings: Settings, store: ArchiveStore, count: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, policy=FAST_ARCHIVE, store=store))
    try:
        for _ in range(600):
            if await asyncio.to_thread(archived_count, store) >= count or task.done():
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def status_partitions(settings: Settings) -> list[TopicPartition]:
    return [TopicPartition(settings.topics.status, p) for p in range(settings.topics.partitions)]


@pytest.fixture
def wipe_settings(kafka_settings: Settings, s3_endpoint: str, s3_bucket: str,
                  monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)  # inherited by the worker subprocess too
    return kafka_settings.model_copy(update={
        "s3": kafka_settings.s3.model_copy(update={"endpoint_url": s3_endpoint, "bucket": s3_bucket, "prefix": "raw"}),
        # A unique client id gives the archiver its own consumer group.
        "kafka": kafka_settings.kafka.model_copy(update={"client_id": f"test-wipe-{uuid.uuid4().hex[:8]}"}),
        "accounts": ACCOUNTS,
    })


async def test_replay_after_the_state_was_wiped_restores_the_final_statuses(
    wipe_settings: Settings, tmp_path: Path
) -> None:
    # The harness's worker keeps its state under <log dir>/state: the wipe must find it there.
    settings = wipe_settings.model_copy(update={"state_dir": tmp_path / "state"})
    store = ArchiveStore(settings.s3, aws_access_key_id="test", aws_secret_access_key="test")
    conf = processor_settings()
    watched = [settings.topics.inbox, conf.inputs_topic()]
    envelopes = await verified_envelopes()
    assert len(envelopes) == len(pushes())

    worker = start_worker(settings, conf, tmp_path, name="before")
    try:
        await send_inbox(settings, envelopes + envelopes[:2])  # two provider retries: deduped
        lag = await wait_drained(settings, conf.app_id, watched)
        assert lag == "", f"{lag}\n{worker.log_tail()}"
    finally:
        assert worker.stop() == 0, worker.log_tail()
    before = await read_live_status(settings)
    assert set(before) == PAYMENTS
    wiped_at = await end_offsets(settings, status_partitions(settings))
    assert sum(wiped_at.values()) > 0

    await archive_inbox(settings, store, len(envelopes) + 2)
    await wipe_processor_state(settings, conf)

    first = await replay(settings, ReplayOptions(progress=False, reverify=True), store=store)
    assert (first.selected, dict(first.reverify_failed)) == (len(envelopes) + 2, {})
    # The wipe runbook (docs/operations.md): the re-derivation runs in the next epoch, so its events, numbered
    # from 1 again, never reuse an id a consumer already applied (issue 18: event ids repeated).
    rederived = conf.model_copy(update={"epoch": conf.epoch + 1})
    worker = start_worker(settings, rederived, tmp_path, name="after")  # same state dir, now empty
    try:
        lag = await wait_drained(settings, conf.app_id, watched)
        assert lag == "", f"{lag}\n{worker.log_tail()}"
        restored_at = await end_offsets(settings, status_partitions(settings))

        second = await replay(settings, ReplayOptions(progress=False), store=store)
        assert second.selected == first.selected
        lag = await wait_drained(settings, conf.app_id, watched)
        assert lag == "", f"{lag}\n{worker.log_tail()}"
        await asyncio.sleep(1.0)  # an event emitted after the drain would show now
        assert await end_offsets(settings, status_partitions(settings)) == restored_at, \
            "the second replay of the same range emitted status events"
    finally:
        assert worker.stop() == 0, worker.log_tail()

    after = await read_live_status(settings)  # the last event per payment: the restored ones come last
    assert after == before
    records = [record async for record in read_to_end(settings, settings.topics.status)]
    restored = [event for record, event in zip(records, events_of(records), strict=True)
                if record.offset >= wiped_at[TopicPartition(record.topic, record.partition)]]
    assert {event["subject"] for event in restored} == PAYMENTS
    # DESIGN §4.3: `source` is the deciding observation's; every one of them came from the replay.
    assert {event["data"]["source"] for event in restored} == {"replay"}
    for payment in PAYMENTS:  # no gaps (the wiped state knew no sequence: it starts again, in the new epoch)
        sequences = [event["data"]["sequence"] for event in restored if event["subject"] == payment]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), (payment, sequences)
    assert {event["data"]["epoch"] for event in restored} == {conf.epoch + 1}
    original_ids = {event["id"] for record, event in zip(records, events_of(records), strict=True)
                    if record.offset < wiped_at[TopicPartition(record.topic, record.partition)]}
    assert not original_ids & {event["id"] for event in restored}
    last_restored: dict[str, Snapshot] = {}
    for event in restored:
        last_restored[event["subject"]] = Snapshot.from_event_data(event["data"])
    assert last_restored == before
