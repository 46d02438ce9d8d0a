"""Strimzi topics equal the defaults in the code, and each KafkaUser gets only what its process uses."""

from __future__ import annotations

from typing import Any

import yaml
from deploy_files import STRIMZI

from ingest.fetch.options import FetchOptions
from paystream.config import FetchSettings, KafkaSettings, TopicSettings
from processors.settings import ProcessorSettings

# The fetcher's compacted topics (created by the fetcher, so not in TopicSettings.all_names()).
CURSOR_TOPIC = TopicSettings().fetch_cursors
DELAYED_TOPIC = TopicSettings().fetch_delayed
# The processor's application id: its consumer group, transactional ids and internal topics start with it.
PROCESSOR_APP_ID = "paystream-processor"
# Quix Streams names state changelogs `changelog__{consumer group}--{topic}--{store}`.
CHANGELOG_PREFIX = f"changelog__{PROCESSOR_APP_ID}"


def _load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((STRIMZI / name).read_text()) if doc]


def _topics() -> dict[str, dict[str, Any]]:
    return {doc["spec"]["topicName"]: doc for doc in _load("topics.yaml")}


def _users() -> dict[str, list[dict[str, Any]]]:
    return {doc["metadata"]["name"]: doc["spec"]["authorization"]["acls"] for doc in _load("users.yaml")}


def _grants(acls: list[dict[str, Any]], resource_type: str) -> dict[tuple[str, str], set[str]]:
    return {
        (acl["resource"]["name"], acl["resource"].get("patternType", "literal")): set(acl["operations"])
        for acl in acls
        if acl["resource"]["type"] == resource_type
    }


def test_topic_names_equal_topic_settings_defaults() -> None:
    assert set(_topics()) == {*TopicSettings().all_names(), CURSOR_TOPIC, DELAYED_TOPIC}


def test_resource_names_equal_topic_names() -> None:
    assert all(doc["metadata"]["name"] == name for name, doc in _topics().items())


def test_topic_partitions_equal_the_default() -> None:
    defaults = TopicSettings()
    partitions = {name: doc["spec"]["partitions"] for name, doc in _topics().items() if name != CURSOR_TOPIC}
    # The delayed store needs at least as many partitions as the requests topic it mirrors.
    assert set(partitions.values()) == {defaults.partitions}


def test_topic_retention_equals_the_default() -> None:
    defaults = TopicSettings()
    for name in defaults.all_names():
        assert int(_topics()[name]["spec"]["config"]["retention.ms"]) == defaults.retention_ms(name), name


def test_latest_value_topics_are_compacted_and_the_streams_keep_every_record() -> None:
    policies = {name: doc["spec"]["config"]["cleanup.policy"] for name, doc in _topics().items()}
    topics = TopicSettings()
    for name in (CURSOR_TOPIC, DELAYED_TOPIC, topics.state):
        assert policies.pop(name) == "compact", name
    assert set(policies.values()) == {"delete"}
    assert all(topics.cleanup_policy(name) == "delete" for name in policies)


def test_inbox_and_dlq_take_a_full_size_delivery() -> None:
    # Ingest accepts bodies up to HttpSettings.max_body_bytes (1 MiB); the envelope base64-encodes them.
    for name in ("payments.inbox.v1", "payments.dlq.v1"):
        assert int(_topics()[name]["spec"]["config"]["max.message.bytes"]) >= 2 * 1024 * 1024


def test_one_kafka_user_per_process() -> None:
    assert set(_users()) == {
        "paystream-ingest", "paystream-processor", "paystream-fetcher", "paystream-archiver", "paystream-tools",
    }


def test_literal_topic_acls_name_declared_topics() -> None:
    declared = set(_topics())
    for user, acls in _users().items():
        for (name, pattern), _ in _grants(acls, "topic").items():
            assert pattern == "prefix" or name in declared, (user, name)


def test_ingest_may_only_write_the_inbox() -> None:
    assert _users()["paystream-ingest"] == [
        {"resource": {"type": "topic", "name": "payments.inbox.v1", "patternType": "literal"}, "operations": ["Write"]}
    ]


def test_only_the_processor_creates_topics_and_only_its_own() -> None:
    creators = {
        (user, name, pattern)
        for user, acls in _users().items()
        for (name, pattern), operations in _grants(acls, "topic").items()
        if "Create" in operations or "All" in operations
    }
    assert creators == {("paystream-processor", PROCESSOR_APP_ID, "prefix"),
                        ("paystream-processor", CHANGELOG_PREFIX, "prefix")}


def test_processor_reads_its_inputs_and_writes_its_outputs() -> None:
    topics = TopicSettings()
    grants = _grants(_users()["paystream-processor"], "topic")
    reads = {name for (name, pattern), ops in grants.items() if pattern == "literal" and "Read" in ops}
    writes = {name for (name, pattern), ops in grants.items() if pattern == "literal" and "Write" in ops}
    assert reads == {topics.inbox, topics.fetch_results, topics.state}
    assert writes == {topics.status, topics.state, topics.fetch_requests, topics.dlq}


def test_processor_and_fetcher_may_run_transactions_under_their_own_prefixes_only() -> None:
    holders = {user: _grants(acls, "transactionalId") for user, acls in _users().items()}
    assert {user for user, grants in holders.items() if grants} == {"paystream-processor", "paystream-fetcher"}
    assert holders["paystream-processor"] == {(PROCESSOR_APP_ID, "prefix"): {"Write", "Describe"}}
    # The delay store's writers: `{fetch group}.{store topic}.{partition}` (ingest/fetch/delayed_writer.py).
    assert holders["paystream-fetcher"] == {(FetchSettings().group_id, "prefix"): {"Write", "Describe"}}


def test_fetcher_owns_the_cursor_topic_and_nobody_else_touches_it() -> None:
    holders = {user for user, acls in _users().items() if (CURSOR_TOPIC, "literal") in _grants(acls, "topic")}
    assert holders == {"paystream-fetcher"}
    assert _grants(_users()["paystream-fetcher"], "topic")[(CURSOR_TOPIC, "literal")] == {"Read", "Write"}


def test_only_the_processor_and_the_tools_may_touch_the_status_topic() -> None:
    status = TopicSettings().status
    holders = {user for user, acls in _users().items() if (status, "literal") in _grants(acls, "topic")}
    assert holders == {"paystream-processor", "paystream-tools"}
    assert _grants(_users()["paystream-tools"], "topic")[(status, "literal")] == {"Read"}


def test_consumer_groups_are_the_ones_the_code_uses() -> None:
    groups = {user: _grants(acls, "group") for user, acls in _users().items()}
    assert groups == {
        "paystream-ingest": {},
        "paystream-processor": {(PROCESSOR_APP_ID, "prefix"): {"Read"}},
        "paystream-fetcher": {(FetchOptions().group_id, "prefix"): {"Read"}},
        "paystream-archiver": {(f"{KafkaSettings().client_id}-archiver", "prefix"): {"Read"}},
        "paystream-tools": {},  # tail, replay and rebuild consume without a group
    }


def test_processor_acls_use_the_processor_application_id() -> None:
    assert ProcessorSettings().app_id == PROCESSOR_APP_ID
