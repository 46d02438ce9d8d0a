"""Shared fixtures.

Tests marked ``kafka`` / ``s3`` use the real broker and the real moto S3 server that ``make test``
started (deploy/local/stack.py). They never skip: when the service is unreachable the test FAILS with a
message saying how to start it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlparse

import boto3
import pytest

from paystream.config import Settings, TopicSettings, load_settings
from paystream.kafka import ensure_topics

START_HINT = "start the local stack with `make stack-up` (or run the tests through `make test`)"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(base_settings: Settings) -> str:
    bootstrap = base_settings.kafka.bootstrap
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not _reachable(host, int(port)):
        pytest.fail(f"Kafka broker at {bootstrap} is unreachable: {START_HINT}", pytrace=False)
    return bootstrap


@pytest.fixture(scope="session")
def s3_endpoint(base_settings: Settings) -> str:
    endpoint = base_settings.s3.endpoint_url
    parsed = urlparse(endpoint)
    if not parsed.hostname or not _reachable(parsed.hostname, parsed.port or 80):
        pytest.fail(f"S3 (moto server) at {endpoint!r} is unreachable: {START_HINT}", pytrace=False)
    return endpoint


def unique_topics(base: TopicSettings, *, partitions: int = 3) -> TopicSettings:
    """Topic names no other test uses, so tests can share one broker without seeing each other's data."""
    tag = uuid.uuid4().hex[:10]
    return base.model_copy(
        update={
            "inbox": f"t{tag}.payments.inbox.v1",
            "fetch_requests": f"t{tag}.payments.fetch.requests.v1",
            "fetch_results": f"t{tag}.payments.fetch.results.v1",
            "status": f"t{tag}.payments.status.v1",
            "state": f"t{tag}.payments.state.v1",
            "dlq": f"t{tag}.payments.dlq.v1",
            "fetch_cursors": f"t{tag}.payments.fetch.cursors.v1",
            "fetch_delayed": f"t{tag}.payments.fetch.delayed.v1",
            "partitions": partitions,
        }
    )


@pytest.fixture
async def kafka_settings(base_settings: Settings, kafka_bootstrap: str) -> AsyncIterator[Settings]:
    """Settings pointing at the real broker with fresh, already-created topics for this test."""
    settings = base_settings.model_copy(update={"topics": unique_topics(base_settings.topics)})
    await ensure_topics(settings)
    yield settings


@pytest.fixture
def s3_bucket(base_settings: Settings, s3_endpoint: str) -> Iterator[str]:
    """A fresh bucket on the moto server for this test."""
    name = f"paystream-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=base_settings.s3.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # moto accepts any credentials
    )
    client.create_bucket(Bucket=name)
    yield name


@pytest.fixture
def fresh_topics() -> Callable[..., TopicSettings]:
    """A factory of unique topic settings (not yet created), for tests that create topics themselves."""
    return unique_topics
