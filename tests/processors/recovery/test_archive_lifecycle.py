"""The archive's retention: the lifecycle rule ``paystream archive --apply-lifecycle`` writes, and the
archiver's start-up check of the bucket's rules, against the real moto server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from test_archive import FAST, archive_settings, archive_store

from paystream.config import Settings
from paystream.metrics import registry
from processors.recovery.archive import run_archiver
from processors.recovery.archive_retention import (
    NONCURRENT_DAYS,
    RULE_ID,
    apply_lifecycle,
    check_retention,
    effective_retention_days,
)
from processors.recovery.archive_store import ArchiveStore

pytestmark = [pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[3]
OTHER_RULES: list[dict[str, Any]] = [
    {"ID": "tmp-cleanup", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
    {"ID": "reports-to-glacier", "Filter": {"Prefix": "reports/"}, "Status": "Enabled",
     "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]},
]


def store_with(settings: Settings, endpoint: str, bucket: str, **s3: Any) -> ArchiveStore:
    updated = settings.s3.model_copy(update={"endpoint_url": endpoint, "bucket": bucket, "prefix": "raw", **s3})
    return archive_store(settings.model_copy(update={"s3": updated}))


def rules_by_id(store: ArchiveStore) -> dict[str, dict[str, Any]]:
    return {rule["ID"]: rule for rule in store.lifecycle().rules}


def retention_gauge() -> float | None:
    return registry.get_sample_value("paystream_archive_retention_days")


def test_apply_lifecycle_writes_the_rule_once_and_keeps_the_others(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    store = store_with(base_settings, s3_endpoint, s3_bucket)
    store._client.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration={"Rules": OTHER_RULES})

    first = apply_lifecycle(store, 400)
    after_first = store.lifecycle().rules
    second = apply_lifecycle(store, 400)

    assert (first.changed, first.previous, first.kept) == (True, None, 2)
    assert second.changed is False
    assert store.lifecycle().rules == after_first
    rules = rules_by_id(store)
    assert rules[RULE_ID] == {"ID": RULE_ID, "Filter": {"Prefix": "raw/"}, "Status": "Enabled",
                              "Expiration": {"Days": 400},
                              "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS}}
    assert {k: v for k, v in rules.items() if k != RULE_ID} == {r["ID"]: r for r in OTHER_RULES}


def test_apply_lifecycle_updates_only_its_own_rule_when_the_retention_changes(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    store = store_with(base_settings, s3_endpoint, s3_bucket)
    store._client.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration={"Rules": OTHER_RULES})
    apply_lifecycle(store, 400)

    change = apply_lifecycle(store, 550)

    assert change.changed and change.previous is not None
    assert change.previous["Expiration"] == {"Days": 400}
    rules = rules_by_id(store)
    assert rules[RULE_ID]["Expiration"] == {"Days": 550}
    assert len(rules) == 3 and rules["tmp-cleanup"] == OTHER_RULES[0]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paystream.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_apply_lifecycle_says_what_it_did_and_is_idempotent(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    env = {**os.environ, "PAYSTREAM_S3__ENDPOINT_URL": s3_endpoint, "PAYSTREAM_S3__BUCKET": s3_bucket,
           "PAYSTREAM_S3__RETENTION_DAYS": "395", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}

    first = run_cli("archive", "--apply-lifecycle", env=env)
    second = run_cli("archive", "--apply-lifecycle", env=env)
    missing = run_cli("archive", "--apply-lifecycle", env={**env, "PAYSTREAM_S3__BUCKET": f"{s3_bucket}-gone"})

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (f"lifecycle rule {RULE_ID}: s3://{s3_bucket}/raw/ expires after 395 days; "
                                    "0 other rule(s) kept")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert rules_by_id(store_with(base_settings, s3_endpoint, s3_bucket))[RULE_ID]["Expiration"] == {"Days": 395}
    assert missing.returncode == 2
    assert "paystream archive: error: S3 bucket" in missing.stderr and "does not exist" in missing.stderr


@pytest.mark.parametrize(("rules", "expected"), [
    ([], None),
    ([{"ID": "a", "Filter": {"Prefix": "raw/"}, "Status": "Enabled", "Expiration": {"Days": 400}}], 400),
    ([{"ID": "a", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 30}}], 30),  # the whole bucket
    ([{"ID": "a", "Prefix": "", "Status": "Enabled", "Expiration": {"Days": 90}}], 90),  # legacy, no Filter
    ([{"ID": "a", "Filter": {"Prefix": "raw/"}, "Status": "Disabled", "Expiration": {"Days": 30}}], None),
    ([{"ID": "a", "Filter": {"Prefix": "raw/payments.inbox.v1/"}, "Status": "Enabled",
       "Expiration": {"Days": 30}}], None),  # only part of the archive
    ([{"ID": "a", "Filter": {"And": {"Prefix": "raw/", "Tags": [{"Key": "k", "Value": "v"}]}},
       "Status": "Enabled", "Expiration": {"Days": 30}}], None),  # only tagged objects
    ([{"ID": "a", "Filter": {"Prefix": "raw/"}, "Status": "Enabled", "Expiration": {"Days": 400}},
      {"ID": "b", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 200}}], 200),  # shortest
    ([{"ID": "a", "Filter": {"Prefix": "raw/"}, "Status": "Enabled",
       "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}], None),  # moves, never expires
])
def test_effective_retention_counts_only_enabled_expiry_rules_covering_the_whole_archive(
    rules: list[dict[str, Any]], expected: int | None
) -> None:
    assert effective_retention_days(rules, "raw") == expected


@pytest.mark.parametrize(("rule_days", "event", "level", "gauge"), [
    (None, "archive_retention_missing", "warning", 0.0),
    (30, "archive_retention_shorter", "warning", 30.0),
    (400, "archive_retention_checked", "info", 400.0),
    (800, "archive_retention_checked", "info", 800.0),
])
def test_startup_check_warns_when_the_bucket_has_no_rule_or_a_shorter_one(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str, rule_days: int | None, event: str, level: str,
    gauge: float,
) -> None:
    store = store_with(base_settings, s3_endpoint, s3_bucket)
    if rule_days is not None:
        apply_lifecycle(store, rule_days)

    with capture_logs() as logs:
        check = check_retention(store, 400)

    assert check.bucket_days == rule_days
    found = [entry for entry in logs if entry["event"].startswith("archive_retention")]
    assert [(entry["event"], entry["log_level"]) for entry in found] == [(event, level)]
    assert found[0]["bucket"] == s3_bucket and found[0]["configured_days"] == 400
    assert retention_gauge() == gauge


@pytest.mark.kafka
async def test_the_archiver_checks_the_retention_when_it_starts(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = archive_settings(kafka_settings, s3_endpoint, s3_bucket)
    store = archive_store(settings)
    await asyncio.to_thread(apply_lifecycle, store, 45)
    stop = asyncio.Event()

    with capture_logs() as logs:
        task = asyncio.create_task(run_archiver(settings, stop, policy=FAST, store=store))
        for _ in range(300):
            if any(entry["event"] == "archiver_started" for entry in logs) or task.done():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)

    events = [entry["event"] for entry in logs]
    assert "archive_retention_shorter" in events
    assert events.index("archive_retention_shorter") < events.index("archiver_started")
    started = next(entry for entry in logs if entry["event"] == "archiver_started")
    assert started["encryption"] == "SSE-S3 (AES256)"
    assert retention_gauge() == 45.0
