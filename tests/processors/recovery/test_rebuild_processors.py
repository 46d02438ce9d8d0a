"""`paystream rebuild --through-processors` against the real broker and the real moto S3 server: the
archive of test_rebuild.py replayed through a real Quix Streams processor worker on temporary topics, under a
temporary app id whose consumer group, internal topic and changelog are gone afterwards."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from test_rebuild import publish_live, with_archive

from paystream.config import Settings
from paystream.kafka import connection_options
from processors.internal_topics import changelog_topic
from processors.recovery.app_state import wipe_app_state
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.rebuild import DIFFERENCES_FOUND, add_rebuild_arguments, run_rebuild
from processors.recovery.rebuild_diff import RebuildReport
from processors.recovery.rebuild_processors import RebuildTarget, rebuild_through_processors
from processors.settings import ProcessorSettings
from processors.topology import stream_id

pytestmark = [pytest.mark.kafka, pytest.mark.s3]


def new_stamp() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def topics_of(settings: Settings, stamp: str) -> list[str]:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        return sorted(name for name in await admin.list_topics() if stamp in name)
    finally:
        await admin.close()


async def groups_of(settings: Settings, stamp: str) -> list[str]:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        return sorted(group for group, _ in await admin.list_consumer_groups() if stamp in group)
    finally:
        await admin.close()


async def rebuild_diff(settings: Settings, store: ArchiveStore, stamp: str, *, keep: bool = False) -> RebuildReport:
    return await rebuild_through_processors(settings, with_diff=True, store=store, show_progress=False,
                                            stamp=stamp, keep=keep)


def test_cli_through_processors_finds_the_payment_whose_live_status_was_made_wrong(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # what the Makefile exports for the local moto server
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings, _ = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    asyncio.run(publish_live(settings, edit={"pi_2": {"status": "captured", "captured_amount": 1500}}))
    parser = argparse.ArgumentParser()
    add_rebuild_arguments(parser)

    code = run_rebuild(settings, parser.parse_args(["--through-processors", "--diff", "--json", "--no-progress"]))

    out = capsys.readouterr().out
    report = orjson.loads(out[out.index("{\n"):])  # log lines may precede it: structlog is not configured here
    assert code == DIFFERENCES_FOUND, report
    assert [(d["payment_key"], d["fields"]) for d in report["differences"]] == [
        ("stripe:eu:payment_intent:pi_2", ["status", "captured_amount"])
    ]
    assert report["differences"][0]["rebuilt"]["status"] == "canceled"
    assert "through the processors (app id paystream-rebuild-" in report["source"]


async def test_through_processors_reports_nothing_when_the_states_agree(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    await publish_live(settings)

    report = await rebuild_diff(settings, store, new_stamp())

    assert report.differences == []
    assert dict(report.by_status) == {"captured": 1, "canceled": 1}
    assert (report.records, report.live_payments) == (4, 2)


async def test_through_processors_deletes_its_temporary_topics(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    stamp = new_stamp()

    report = await rebuild_diff(settings, store, stamp)

    assert report.kept_topics == []
    assert await topics_of(settings, stamp) == []
    assert await groups_of(settings, stamp) == []
    assert len(report.rebuilt) == 2  # the worker did run on those topics
    assert report.observations == 4


async def test_through_processors_keep_leaves_the_temporary_topics(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings, store = with_archive(kafka_settings, s3_endpoint, s3_bucket)
    stamp = new_stamp()

    report = await rebuild_diff(settings, store, stamp, keep=True)

    left = await topics_of(settings, stamp)
    app = ProcessorSettings(app_id=f"paystream-rebuild-{stamp}")
    await wipe_app_state(settings, app)  # the group and the internal topics
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        await admin.delete_topics([name for name in left if name.startswith(f"rebuild-{stamp}.")])
    finally:
        await admin.close()
    assert report.kept_topics == left
    assert {f"rebuild-{stamp}.{name}" for name in settings.topics.all_names()} <= set(left)
    assert app.inputs_topic() in left
    changelogs = [name for name in left if name.startswith(f"changelog__{app.app_id}--")]
    target = RebuildTarget.create(settings, Path("unused"), stamp)  # the names the rebuild gave its topics
    assert changelogs == [changelog_topic(app.app_id, stream_id(target.settings, target.settings.processor))]
