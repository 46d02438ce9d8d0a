"""`paystream replay` against the real broker and the real moto S3 server."""

from __future__ import annotations

import argparse
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import TopicPartition

from paystream.config import AccountConfig, Settings
from paystream.kafka import make_consumer, make_producer
from processors.recovery.archive_format import ArchivedRecord, encode_object, hour_of, object_key
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.replay import ReplayOptions, ReplaySummary, add_replay_arguments, replay, run_replay
from schemas.envelopes import InboxEnvelope, ReplayMark, to_rfc3339

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

HOUR = datetime(2025, 3, 4, 10, tzinfo=UTC)
VERIFIED = {"verifier": "stripe-v1", "key_id": "0", "ok": True}


def envelope(provider: str, account: str, delivery_id: str, kind: str = "event", **extra: object) -> InboxEnvelope:
    return InboxEnvelope(
        provider=provider,
        account=account,
        delivery_id=delivery_id,
        kind=kind,  # type: ignore[arg-type]
        received_at="2025-03-04T10:00:00.000Z",
        body=b'{"id": "%s", "raw": "\\u00e9"}' % delivery_id.encode(),
        headers={"stripe-signature": "t=1,v1=abc"},
        verification=VERIFIED,
        object_ids={"object_type": "payment_intent", "object_id": f"pi_{delivery_id}"},
        **extra,  # type: ignore[arg-type]
    )


def settings_for(settings: Settings, endpoint: str, bucket: str) -> Settings:
    return settings.model_copy(
        update={"s3": settings.s3.model_copy(update={"endpoint_url": endpoint, "bucket": bucket, "prefix": "raw"})}
    )


def store_for(settings: Settings) -> ArchiveStore:
    return ArchiveStore(settings.s3, aws_access_key_id="test", aws_secret_access_key="test")


def write_archive(settings: Settings, envelopes: list[tuple[datetime, InboxEnvelope]]) -> list[ArchivedRecord]:
    """Archive objects as the archiver writes them, 3 partitions, one object per partition and hour."""
    topic = settings.topics.inbox
    records = [
        ArchivedRecord(
            topic, i % 3, i // 3, int(at.timestamp() * 1000), env.key, env.to_bytes(), (("trace", b"t%d" % i),)
        )
        for i, (at, env) in enumerate(envelopes)
    ]
    objects: dict[tuple[int, datetime], list[ArchivedRecord]] = defaultdict(list)
    for record in records:
        objects[record.partition, hour_of(record.timestamp_ms)].append(record)
    store = store_for(settings)
    for (partition, hour), batch in objects.items():
        key = object_key("raw", topic, partition, batch[0].offset, hour)
        store.put(key, encode_object(record.to_line() for record in batch))
    return records


async def replay_s3(settings: Settings, options: ReplayOptions) -> ReplaySummary:
    return await replay(settings, options, store=store_for(settings))


async def inbox_records(settings: Settings) -> list[ArchivedRecord]:
    consumer = make_consumer(settings, group_id=None, client_suffix="test")
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topics.inbox, p) for p in range(settings.topics.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[ArchivedRecord] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found += [ArchivedRecord.from_consumer_record(r) for r in records]
        return found
    finally:
        await consumer.stop()


SAMPLE = [
    (HOUR, envelope("stripe", "eu", "evt_1")),
    (HOUR, envelope("stripe", "eu", "evt_2")),
    (HOUR, envelope("stripe", "us", "evt_3")),
    (HOUR, envelope("adyen", "eu", "psp_1:AUTHORISATION:true")),
    (HOUR, envelope("adyen", "eu", "psp_2:CAPTURE:true")),
    (HOUR, envelope("mollie", "nl", "hint:tr_1:1", kind="hint")),
    (HOUR, envelope("stripe", "eu", "evt_1", replay=ReplayMark("2025-03-05T00:00:00.000Z", "s3://old#1"))),
]


async def test_dry_run_counts_by_provider_and_kind_and_publishes_nothing(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket)
    write_archive(settings, SAMPLE)

    summary = await replay_s3(settings, ReplayOptions(dry_run=True, progress=False))

    assert dict(summary.by_provider_kind) == {("stripe", "event"): 3, ("adyen", "event"): 2, ("mollie", "hint"): 1}
    assert (summary.read, summary.already_replays) == (7, 1)
    assert await inbox_records(settings) == []


async def test_replay_republishes_with_the_replay_mark_and_the_same_keys(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket)
    archived = write_archive(settings, SAMPLE[:6])

    summary = await replay_s3(settings, ReplayOptions(progress=False))

    republished = await inbox_records(settings)
    assert summary.selected == len(republished) == 6
    by_key = {record.key: record for record in archived}
    for record in republished:
        original = by_key[record.key]
        assert record.headers == original.headers
        env = InboxEnvelope.from_bytes(record.value or b"")
        assert env.replay is not None
        assert env.replay.origin.startswith(f"s3://{s3_bucket}/raw/{settings.topics.inbox}/dt=2025-03-04/hour=10/")
        assert env.replay.reverified is False
        assert env.key == record.key
        assert env.to_bytes() != original.value
        assert InboxEnvelope.from_bytes(original.value or b"") == InboxEnvelope(
            **{**{f: getattr(env, f) for f in env.__dataclass_fields__}, "replay": None}
        )


async def test_filters_select_by_provider_account_and_payment_key(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket)
    write_archive(settings, SAMPLE)

    stripe_eu = await replay_s3(
        settings,
        ReplayOptions(dry_run=True, progress=False, providers=frozenset({"stripe"}), accounts=frozenset({"eu"})),
    )
    one_payment = await replay_s3(
        settings,
        ReplayOptions(
            dry_run=True, progress=False, payment_keys=frozenset({"adyen:eu:payment_intent:pi_psp_2:CAPTURE:true"})
        ),
    )

    assert dict(stripe_eu.by_provider_kind) == {("stripe", "event"): 2}
    assert dict(one_payment.by_provider_kind) == {("adyen", "event"): 1}


async def test_time_range_selects_the_records_inside_it_only(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket)
    at = [HOUR + timedelta(minutes=m) for m in (-1, 5, 59, 60)]
    write_archive(settings, [(moment, envelope("stripe", "eu", f"evt_{i}")) for i, moment in enumerate(at)])

    summary = await replay_s3(
        settings, ReplayOptions(dry_run=True, progress=False, since=HOUR, until=HOUR + timedelta(hours=1))
    )

    assert summary.selected == 2
    assert summary.read == 2  # the other hours' objects are not even downloaded


async def test_replay_from_kafka_starts_at_the_offset_for_since_and_skips_replays(kafka_settings: Settings) -> None:
    now = datetime.now(UTC)
    producer = make_producer(kafka_settings, client_suffix="test")
    await producer.start()
    try:
        for i, moment in enumerate([now - timedelta(hours=3)] * 4 + [now - timedelta(minutes=10)] * 3):
            env = envelope("stripe", "eu", f"evt_{i}")
            await producer.send_and_wait(
                kafka_settings.topics.inbox, env.to_bytes(), key=env.key, timestamp_ms=int(moment.timestamp() * 1000)
            )
    finally:
        await producer.stop()
    since = now - timedelta(hours=1)

    first = await replay(kafka_settings, ReplayOptions(source="kafka", since=since, progress=False))
    second = await replay(kafka_settings, ReplayOptions(source="kafka", since=since, dry_run=True, progress=False))

    assert (first.read, first.selected) == (3, 3)
    assert (second.read, second.selected, second.already_replays) == (6, 3, 3)
    marks = [InboxEnvelope.from_bytes(r.value or b"").replay for r in await inbox_records(kafka_settings)]
    assert [m.origin.split("/")[2] for m in marks if m] == [kafka_settings.topics.inbox] * 3


async def test_reverify_drops_a_delivery_whose_signature_no_longer_verifies(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import hmac

    secret = "whsec_current"
    monkeypatch.setenv("PS_TEST_REPLAY_STRIPE_SECRET", secret)
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket).model_copy(
        update={"accounts": {"stripe": {"eu": AccountConfig(secrets=["env:PS_TEST_REPLAY_STRIPE_SECRET"])}}}
    )
    signed_at = int((HOUR - timedelta(seconds=2)).timestamp())  # long past any tolerance by now

    def stripe_envelope(event_id: str, key: str) -> InboxEnvelope:
        body = orjson.dumps({"id": event_id, "object": "event", "type": "payment_intent.succeeded",
                             "data": {"object": {"id": "pi_1", "object": "payment_intent"}}})
        mac = hmac.new(key.encode(), b"%d." % signed_at + body, hashlib.sha256).hexdigest()
        return InboxEnvelope("stripe", "eu", event_id, "event", to_rfc3339(HOUR), body,
                             {"stripe-signature": f"t={signed_at},v1={mac}"}, VERIFIED)

    write_archive(
        settings, [(HOUR, stripe_envelope("evt_good", secret)), (HOUR, stripe_envelope("evt_old", "rotated"))]
    )

    summary = await replay_s3(settings, ReplayOptions(dry_run=True, reverify=True, progress=False))

    assert dict(summary.by_provider_kind) == {("stripe", "event"): 1}
    assert dict(summary.reverify_failed) == {"bad_signature": 1}


def test_cli_replay_prints_a_json_summary_and_exits_zero(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # what the Makefile exports for the local moto server
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = settings_for(kafka_settings, s3_endpoint, f"x-{uuid.uuid4().hex[:6]}")
    store_for(settings)._client.create_bucket(Bucket=settings.s3.bucket)
    write_archive(settings, SAMPLE)
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)

    code = run_replay(settings, parser.parse_args(["--dry-run", "--json", "--provider", "adyen", "--no-progress"]))

    summary = orjson.loads(capsys.readouterr().out)
    assert code == 0
    assert (summary["selected"], summary["republished"], summary["filtered"]) == (2, 0, 4)
