"""Fixtures for the HTTP-level ingest tests (helpers in http_harness.py).

``ingest`` is the real uvicorn server running IngestApp in-process on the real broker with this test's
fresh topics; ``offline_ingest`` is the same server whose broker address answers nothing (no Kafka
needed: rejections happen before any publish, and a valid delivery gets 503). ``start_ingest`` starts
more, with other settings. ``sns_host`` plays sns.us-east-1.amazonaws.com over HTTPS on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import pytest
from http_harness import (
    CERT_NAME,
    OBSERVATION_TOKEN,
    Deliveries,
    HarnessPki,
    RunningIngest,
    SnsHost,
    StartIngest,
    free_port,
    make_test_pki,
    serve_ingest,
    serve_sns_host,
)

from ingest.providers.amazon_pay.certs import CertificateStore
from paystream.config import Settings


@pytest.fixture(scope="session")
def test_pki() -> HarnessPki:
    return make_test_pki()


@pytest.fixture(scope="session")
def deliveries(test_pki: HarnessPki) -> Deliveries:
    return Deliveries(test_pki)


@pytest.fixture
async def sns_host(test_pki: HarnessPki) -> AsyncIterator[SnsHost]:
    async with serve_sns_host(test_pki) as host:
        yield host


@pytest.fixture
async def start_ingest(tmp_path: Path) -> AsyncIterator[StartIngest]:
    """``await start_ingest(settings, certificates=..., subscriptions=..., **http_overrides)``."""
    token_file = tmp_path / "observation-token"
    token_file.write_text(OBSERVATION_TOKEN)
    async with AsyncExitStack() as stack:
        yield partial(serve_ingest, stack, token_file=token_file)


@pytest.fixture
def preseeded_certificates(test_pki: HarnessPki) -> CertificateStore:
    """A certificate store holding the test SNS signing certificate (no network)."""
    return CertificateStore(preseeded={CERT_NAME: test_pki.signing_pem})


@pytest.fixture
async def ingest(
    start_ingest: StartIngest, kafka_settings: Settings, preseeded_certificates: CertificateStore
) -> RunningIngest:
    """Ingest on the real broker, with this test's own fresh topics, ready to publish."""
    running = await start_ingest(kafka_settings, certificates=preseeded_certificates)
    await running.wait_ready()
    return running


@pytest.fixture
def offline_settings(base_settings: Settings) -> Settings:
    """Settings whose broker address answers nothing: the publisher never becomes ready."""
    kafka = base_settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{free_port()}"})
    return base_settings.model_copy(update={"kafka": kafka})


@pytest.fixture
async def offline_ingest(
    start_ingest: StartIngest, offline_settings: Settings, preseeded_certificates: CertificateStore
) -> RunningIngest:
    return await start_ingest(offline_settings, certificates=preseeded_certificates)
