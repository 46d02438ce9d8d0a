"""The archive is written encrypted or not at all: SSE-S3 and SSE-KMS against the real moto server.

moto serves S3 and KMS on the same endpoint, so the KMS key of the SSE-KMS tests is a real key created in
moto's KMS. Every request goes over a socket to the moto server; what the archiver sent is read from the
wire (botocore's ``before-send`` event carries the final HTTP request) and what S3 stored from HEAD.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest
from aiokafka import TopicPartition
from test_archive import FAST, archive_settings, archive_store, archived, produce, running_archiver, wait_for

from paystream.config import Settings
from paystream.errors import ConfigurationError
from paystream.kafka import make_consumer
from processors.recovery.archive import run_archiver
from processors.recovery.archive_encryption import check_stored, probe_encryption, probe_key, same_key
from processors.recovery.archive_store import ArchiveStore, Encryption

pytestmark = [pytest.mark.s3]

SSE_HEADER = "x-amz-server-side-encryption"
KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"


def moto_client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def kms_key(endpoint: str) -> dict[str, str]:
    """A fresh key in moto's KMS (same endpoint as its S3): ``KeyId`` and ``Arn``."""
    metadata = moto_client("kms", endpoint).create_key(Description="paystream archive test")["KeyMetadata"]
    return {"KeyId": metadata["KeyId"], "Arn": metadata["Arn"]}


def with_s3(settings: Settings, endpoint: str, bucket: str, **s3: Any) -> Settings:
    return settings.model_copy(update={"s3": settings.s3.model_copy(
        update={"endpoint_url": endpoint, "bucket": bucket, "prefix": "raw", **s3})})


def record_puts(store: ArchiveStore) -> list[dict[str, str]]:
    """The headers of every PutObject request ``store`` sends from now on, as sent on the wire."""
    sent: list[dict[str, str]] = []

    def on_send(request: Any, **_: Any) -> None:
        sent.append({name.lower(): value.decode() if isinstance(value, bytes) else value
                     for name, value in request.headers.items()})

    store._client.meta.events.register("before-send.s3.PutObject", on_send)
    return sent


def test_uploads_ask_for_sse_s3_by_default_and_s3_stores_them_so(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    store = archive_store(with_s3(base_settings, s3_endpoint, s3_bucket))
    sent = record_puts(store)

    store.put("raw/t/dt=2025-01-01/hour=00/t+0+0.jsonl.gz", b"payment data")

    # The header a "deny unencrypted uploads" bucket policy checks is on the request itself.
    assert [headers.get(SSE_HEADER) for headers in sent] == ["AES256"]
    assert KMS_KEY_HEADER not in sent[0]
    assert store.stored_encryption("raw/t/dt=2025-01-01/hour=00/t+0+0.jsonl.gz") == Encryption("AES256")


def test_uploads_ask_for_sse_kms_with_the_configured_key(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    key = kms_key(s3_endpoint)
    store = archive_store(with_s3(base_settings, s3_endpoint, s3_bucket, kms_key_id=key["Arn"]))
    sent = record_puts(store)

    store.put("raw/t/dt=2025-01-01/hour=00/t+0+0.jsonl.gz", b"payment data")

    assert [(h.get(SSE_HEADER), h.get(KMS_KEY_HEADER)) for h in sent] == [("aws:kms", key["Arn"])]
    stored = store.stored_encryption("raw/t/dt=2025-01-01/hour=00/t+0+0.jsonl.gz")
    assert stored.algorithm == "aws:kms"
    assert same_key(key["Arn"], stored.kms_key_id)


@pytest.mark.kafka
@pytest.mark.parametrize("mode", ["sse-s3", "sse-kms"])
async def test_every_archived_object_is_stored_encrypted(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str, mode: str
) -> None:
    key = kms_key(s3_endpoint) if mode == "sse-kms" else None
    settings = archive_settings(kafka_settings, s3_endpoint, s3_bucket)
    if key is not None:
        settings = settings.model_copy(update={"s3": settings.s3.model_copy(update={"kms_key_id": key["KeyId"]})})
    sent = await produce(settings, [(settings.topics.inbox, b"k%d" % i, b"card ending 4242 #%d" % i, [])
                                    for i in range(12)])
    store = archive_store(settings)

    async def all_archived() -> bool:
        return sum(len(v) for v in (await asyncio.to_thread(archived, store)).values()) >= len(sent)

    async with running_archiver(settings, store):
        await wait_for(all_archived, "every record in S3")

    keys = [stored.key for stored in await asyncio.to_thread(lambda: list(store.list("raw/")))]
    assert len(keys) >= 2  # FAST seals batches of 7 records
    encryptions = {await asyncio.to_thread(store.stored_encryption, k) for k in keys}
    if key is None:
        assert encryptions == {Encryption("AES256")}
    else:
        assert {e.algorithm for e in encryptions} == {"aws:kms"}
        assert all(same_key(key["KeyId"], e.kms_key_id) for e in encryptions)
    # The probe object was written beside the archive and removed again.
    assert await asyncio.to_thread(lambda: list(store.list("_paystream/"))) == []


@pytest.mark.kafka
async def test_archiver_refuses_to_start_when_the_bucket_denies_its_uploads(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = archive_settings(kafka_settings, s3_endpoint, s3_bucket)
    await produce(settings, [(settings.topics.inbox, b"k", b"never archived", [])])
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "NoWrites", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{s3_bucket}/*"}]}
    moto_client("s3", s3_endpoint).put_bucket_policy(Bucket=s3_bucket, Policy=json.dumps(policy))

    with pytest.raises(ConfigurationError) as refused:
        await run_archiver(settings, asyncio.Event(), policy=FAST, store=archive_store(settings))

    message = str(refused.value)
    assert "cannot write encrypted objects (SSE-S3 (AES256))" in message
    assert s3_bucket in message and "bucket policy" in message
    # Refused before consuming: the archiver's group never committed anything.
    consumer = make_consumer(settings, group_id=f"{settings.kafka.client_id}-archiver", client_suffix="check")
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(settings.topics.inbox, 0))
    finally:
        await consumer.stop()
    assert committed is None


def test_an_object_s3_stored_unencrypted_fails_the_check(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    # Written without any encryption header, as a store that ignores the header would keep it.
    moto_client("s3", s3_endpoint).put_object(Bucket=s3_bucket, Key="plain", Body=b"x")
    store = archive_store(with_s3(base_settings, s3_endpoint, s3_bucket))
    stored = store.stored_encryption("plain")

    assert stored == Encryption(None)
    with pytest.raises(ConfigurationError, match=r"stored WITHOUT server-side encryption.*refusing to archive"):
        check_stored(store.encryption, stored, where="the probe")


def test_an_object_under_another_kms_key_fails_the_check(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    configured, other = kms_key(s3_endpoint), kms_key(s3_endpoint)
    moto_client("s3", s3_endpoint).put_object(Bucket=s3_bucket, Key="other", Body=b"x",
                                              ServerSideEncryption="aws:kms", SSEKMSKeyId=other["Arn"])
    store = archive_store(with_s3(base_settings, s3_endpoint, s3_bucket, kms_key_id=configured["KeyId"]))

    with pytest.raises(ConfigurationError, match=f"KMS key {other['Arn']}, not the configured {configured['KeyId']}"):
        check_stored(store.encryption, store.stored_encryption("other"), where="the probe")
    with pytest.raises(ConfigurationError, match="not SSE-KMS"):
        check_stored(store.encryption, Encryption("AES256"), where="the probe")


def test_probe_passes_and_cleans_up_for_both_modes(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    key = kms_key(s3_endpoint)
    for s3 in ({}, {"kms_key_id": key["KeyId"]}, {"kms_key_id": key["Arn"]}, {"kms_key_id": "alias/paystream"}):
        store = archive_store(with_s3(base_settings, s3_endpoint, s3_bucket, **s3))
        stored = probe_encryption(store)
        assert stored.algorithm == ("aws:kms" if s3 else "AES256"), s3
    assert probe_key("raw") == "_paystream/raw/encryption-probe"
    assert [o.key for o in archive_store(with_s3(base_settings, s3_endpoint, s3_bucket)).list("")] == []


@pytest.mark.parametrize(("configured", "reported", "same"), [
    ("1234abcd-0000", "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-0000", True),
    ("arn:aws:kms:eu-central-1:111122223333:key/1234abcd-0000", "1234abcd-0000", True),
    ("1234abcd-0000", "arn:aws:kms:eu-central-1:111122223333:key/9999", False),
    ("1234abcd-0000", None, False),
    ("alias/paystream-archive", "arn:aws:kms:eu-central-1:111122223333:key/9999", True),
    ("arn:aws:kms:eu-central-1:111122223333:alias/paystream-archive", None, True),
])
def test_same_key_compares_ids_and_arns_and_trusts_aliases(configured: str, reported: str | None, same: bool) -> None:
    assert same_key(configured, reported) is same


def test_encryption_setting_picks_kms_only_with_a_key(base_settings: Settings) -> None:
    assert Encryption.configured(base_settings.s3).put_arguments() == {"ServerSideEncryption": "AES256"}
    kms = base_settings.s3.model_copy(update={"kms_key_id": "alias/x"})
    assert Encryption.configured(kms).put_arguments() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}
