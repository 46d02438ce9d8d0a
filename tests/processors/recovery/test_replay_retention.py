"""``paystream replay --dry-run`` says when the requested range reaches past retention: the bucket's own
lifecycle rule for the S3 archive (read from the real moto server), the inbox topic's retention for Kafka."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from test_replay import SAMPLE, settings_for, store_for, write_archive

from paystream.config import Settings
from processors.recovery.archive_retention import apply_lifecycle, retention_note
from processors.recovery.replay import ReplayOptions, add_replay_arguments, replay, run_replay

pytestmark = [pytest.mark.s3]

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@pytest.mark.parametrize(("since", "until", "past"), [
    (days_ago(60), None, "partly"),
    (days_ago(60), days_ago(40), "entirely"),
    (days_ago(10), days_ago(1), "none"),
    (None, days_ago(1), "partly"),  # an open start reaches back to the first archived hour
])
async def test_dry_run_reports_a_range_past_the_buckets_lifecycle_rule(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str, since: datetime | None, until: datetime | None,
    past: str,
) -> None:
    settings = settings_for(base_settings, s3_endpoint, s3_bucket)
    apply_lifecycle(store_for(settings), 30)

    summary = await replay(settings, ReplayOptions(dry_run=True, since=since, until=until, progress=False),
                           store=store_for(settings))

    assert summary.retention is not None
    assert (summary.retention.past, summary.retention.days) == (past, 30)
    assert summary.retention.source == f"lifecycle rule of s3://{s3_bucket}"
    line = next(line for line in summary.render().splitlines() if "retention:" in line)
    expected = {"partly": "the range is PARTLY past retention", "entirely": "the WHOLE range is past retention",
                "none": "the range is within retention"}[past]
    assert expected in line


async def test_dry_run_on_a_bucket_without_expiry_says_nothing_is_past_retention(
    base_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(base_settings, s3_endpoint, s3_bucket)

    summary = await replay(settings, ReplayOptions(dry_run=True, since=days_ago(3000), progress=False),
                           store=store_for(settings))

    assert summary.retention is not None
    assert summary.retention.to_dict() == {"source": f"lifecycle rule of s3://{s3_bucket}", "days": None,
                                           "past": "none", "cutoff": None}
    assert "within retention (kept without expiry" in summary.render()


@pytest.mark.kafka
async def test_a_real_replay_does_not_read_the_lifecycle(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = settings_for(kafka_settings, s3_endpoint, s3_bucket)
    write_archive(settings, SAMPLE)

    summary = await replay(settings, ReplayOptions(progress=False), store=store_for(settings))

    assert summary.selected == 6 and summary.retention is None
    assert summary.to_dict()["retention"] is None


@pytest.mark.kafka
def test_cli_dry_run_json_carries_the_retention_of_the_inbox_topic_for_kafka(
    kafka_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = kafka_settings.model_copy(update={"topics": kafka_settings.topics.model_copy(
        update={"inbox_retention_ms": 14 * 86_400_000})})
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)

    code = run_replay(settings, parser.parse_args(["--from", "kafka", "--since", "20d", "--dry-run", "--json",
                                                   "--no-progress"]))

    summary = orjson.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["retention"]["past"] == "partly"
    assert summary["retention"]["days"] == 14
    assert summary["retention"]["source"] == f"retention.ms of {settings.topics.inbox} (configured)"


def test_retention_note_edges() -> None:
    cutoff = NOW - timedelta(days=30)
    assert retention_note(cutoff, None, 30, "x", NOW).past == "none"  # starts exactly at the cutoff
    assert retention_note(cutoff - timedelta(seconds=1), None, 30, "x", NOW).past == "partly"
    assert retention_note(None, cutoff, 30, "x", NOW).past == "entirely"  # [since, until): nothing left
    assert retention_note(None, None, None, "x", NOW).cutoff is None
    note = retention_note(None, cutoff, 30, "the rule", NOW)
    assert note.render() == ("retention: the WHOLE range is past retention: records before 2025-05-02T12:00:00.000Z "
                             "are gone (the rule: 30 days) and cannot be replayed")
