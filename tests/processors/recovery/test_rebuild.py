"""`paystream rebuild --diff` against the real broker and the real moto S3 server."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from paystream.config import Settings
from paystream.kafka import make_producer
from processors.recovery.archive_format import ArchivedRecord, encode_object, hour_of, object_key
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.rebuild import (
    DIFFERENCES_FOUND,
    RebuildReport,
    StateBuilder,
    add_rebuild_arguments,
    rebuild,
    run_rebuild,
)
from processors.recovery.rebuild import (
    observations as inputs_observations,
)
from schemas.envelopes import InboxEnvelope
from schemas.join import PaymentState, advance
from schemas.observation import Observation

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

CREATED = 1_735_700_000  # 2025-01-01T02:53:20Z
VERIFIED = {"verifier": "stripe-v1", "key_id": "0", "ok": True}


def stripe_event(event_id: str, intent: str, event_type: str, status: str, seconds: int) -> InboxEnvelope:
    body = orjson.dumps({
        "id": event_id, "object": "event", "type": f"payment_intent.{event_type}", "created": CREATED + seconds,
        "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": 1500, "currency": "eur", "status": status,
            "amount_received": 1500 if status == "succeeded" else 0, "created": CREATED, "metadata": {},
        }},
    })
    return InboxEnvelope("stripe", "eu", event_id, "event", "2025-01-01T03:00:00.000Z", body, {}, VERIFIED,
                         {"object_type": "payment_intent", "object_id": intent})


ARCHIVE = [
    stripe_event("evt_1", "pi_1", "amount_capturable_updated", "requires_capture", 1),
    stripe_event("evt_2", "pi_1", "succeeded", "succeeded", 2),
    stripe_event("evt_3", "pi_2", "processing", "processing", 1),
    stripe_event("evt_4", "pi_2", "canceled", "canceled", 3),
]


def with_archive(settings: Settings, endpoint: str, bucket: str) -> tuple[Settings, ArchiveStore]:
    settings = settings.model_copy(
        update={"s3": settings.s3.model_copy(update={"endpoint_url": endpoint, "bucket": bucket, "prefix": "raw"})}
    )
    store = ArchiveStore(settings.s3, aws_access_key_id="test", aws_secret_access_key="test")
    topic = settings.topics.inbox
    records = [
        ArchivedRecord(topic, 0, offset, CREATED * 1000 + offset, env.key, env.to_bytes())
        for offset, env in enumerate(ARCHIVE)
    ]
    key = object_key("raw", topic, 0, 0, hour_of(records[0].timestamp_ms))
    store.put(key, encode_object(record.to_line() for record in records))
    return settings, store


def observations(settings: Settings) -> list[Observation]:
    builder = StateBuilder(settings)
    return [
        item.observation
        for env in ARCHIVE
        for item in inputs_observations(builder.normalizer.inbox(env, datetime.now(UTC)))
    ]


async def publish_live(settings: Settings, edit: dict[str, dict[str, object]] | None = None) -> None:
    """The status stream the processors would have written (the join, observation by observation), then
    for each ``edit`` (payment id → data fields) one more event, made wrong on purpose."""
    states: dict[str, PaymentState] = {}
    last_event: dict[str, dict[str, Any]] = {}
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        for obs in observations(settings):
            step = advance(states.get(obs.payment_key), obs, datetime.now(UTC))
            states[obs.payment_key] = step.state
            if step.event is not None:
                last_event[obs.payment_key] = step.event
                value = orjson.dumps(step.event)
                await producer.send_and_wait(settings.topics.status, value, key=obs.payment_key.encode())
        for object_id, fields in (edit or {}).items():
            key = f"stripe:eu:payment_intent:{object_id}"
            base = last_event.get(key, {"data": {"payment_key": key, "amount": 1500, "currency": "EUR"}})
            event = {**base, "data": {**base["data"], **fields}}
            await producer.send_and_wait(settings.topics.status, orjson.dumps(event), key=key.encode())
    finally:
        await producer.stop()


async def run(settings: Settings, store: ArchiveStore) -> RebuildReport:
    return await rebuild(settings, with_diff=True, store=store, show_progress=False)


async def test_rebuild_reports_nothing_when_the_live_status_agrees(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    await publish_live(settings)

    report = await run(settings, store)

    assert report.differences == []
    assert dict(report.by_status) == {"captured": 1, "canceled": 1}
    assert report.live_payments == 2


async def test_rebuild_diff_finds_the_payment_whose_live_status_was_made_wrong(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    await publish_live(settings, edit={"pi_2": {"status": "captured", "captured_amount": 1500}})

    report = await run(settings, store)

    assert report.differences is not None
    assert [(d.payment_key, d.fields) for d in report.differences] == [
        ("stripe:eu:payment_intent:pi_2", ("status", "captured_amount"))
    ]
    assert report.differences[0].rebuilt is not None and report.differences[0].rebuilt.status == "canceled"


async def test_rebuild_diff_reports_a_live_payment_the_archive_does_not_derive(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    await publish_live(settings, edit={"pi_unknown": {"status": "captured"}})

    report = await run(settings, store)

    assert report.differences is not None
    assert [(d.payment_key, d.rebuilt) for d in report.differences] == [("stripe:eu:payment_intent:pi_unknown", None)]


def test_cli_rebuild_diff_exits_4_with_a_json_report_when_states_differ(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # what the Makefile exports for the local moto server
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings, _ = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    asyncio.run(publish_live(settings, edit={"pi_1": {"refunded_amount": 700}}))
    parser = argparse.ArgumentParser()
    add_rebuild_arguments(parser)

    code = run_rebuild(settings, parser.parse_args(["--diff", "--json", "--no-progress"]))

    report = orjson.loads(capsys.readouterr().out)
    assert code == DIFFERENCES_FOUND
    assert [(d["payment_key"], d["fields"]) for d in report["differences"]] == [
        ("stripe:eu:payment_intent:pi_1", ["refunded_amount"])
    ]
