"""Fixtures of the reliability suite (hostile input and fault injection); helpers in reliability_harness.py.

The suite reuses the HTTP harness of tests/ingest (``http_harness``), the processor harness of
tests/processors (``processor_harness``), the fetcher test helpers of tests/ingest/fetch (``fetch_helpers``) and
the provider double. Their folders are put on ``sys.path``
here so ``pytest tests/reliability`` works on its own, not only as part of the whole tree.

Every module here is marked ``reliability`` (``make test-reliability``). Hostile-input modules each run
ONE ingest server on the real broker with a fresh inbox topic (``hostile_target``); their last test reads
that topic and checks that nothing refused reached it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for _folder in (TESTS, TESTS / "ingest", TESTS / "ingest" / "fetch", TESTS / "processors"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from fault_harness import AMAZON_KEY_ID  # noqa: E402
from http_harness import (  # noqa: E402 - needs the sys.path entries above
    OBSERVATION_TOKEN,
    Deliveries,
    HarnessPki,
    make_test_pki,
    serve_ingest,
)
from provider_double.server import ProviderDouble  # noqa: E402
from reliability_harness import HostileTarget, fresh_topic_settings, serve_sns_stand_in  # noqa: E402

from paystream.config import Settings  # noqa: E402


@pytest.fixture(scope="session")
def rel_pki() -> HarnessPki:
    return make_test_pki()


@pytest.fixture(scope="session")
def rel_deliveries(rel_pki: HarnessPki) -> Deliveries:
    return Deliveries(rel_pki)


@pytest.fixture(scope="session")
def amazon_private_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An Amazon Pay API key pair: (private PEM file for the fetcher, public PEM for the double)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("amazon") / "private.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public


@pytest.fixture
async def provider_double(amazon_private_pem: tuple[Path, bytes]) -> AsyncIterator[ProviderDouble]:
    """The provider double on a free loopback port, checking Amazon Pay request signatures."""
    double = ProviderDouble()
    double.add_amazon_key(AMAZON_KEY_ID, amazon_private_pem[1])
    await double.start()
    yield double
    await double.stop()


@pytest.fixture(scope="module")
async def hostile_target(
    request: pytest.FixtureRequest, base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[HostileTarget]:
    """Ingest on the real broker with a fresh one-partition inbox, shared by the tests of one module.

    Its SNS certificate store and subscription confirmer reach only the loopback stand-in for
    sns.us-east-1.amazonaws.com (``HostileTarget.sns`` records every request it got), never the network.
    A module may set ``HTTP_OVERRIDES`` (fields of ``settings.http``, e.g. a short ``body_timeout_s``).
    """
    overrides = getattr(request.module, "HTTP_OVERRIDES", {})
    settings = await fresh_topic_settings(base_settings, partitions=1)
    token_file = tmp_path_factory.mktemp("hostile") / "observation-token"
    token_file.write_text(OBSERVATION_TOKEN)
    async with AsyncExitStack() as stack:
        sns = await stack.enter_async_context(serve_sns_stand_in(rel_pki))
        running = await serve_ingest(stack, settings, token_file, certificates=sns.certificate_store(),
                                     subscriptions=sns.subscription_handler(), **overrides)
        await running.wait_ready()
        yield HostileTarget(running, sns)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The suite's counts (hostile inputs tried, load held, faults injected, records lost)."""
    from reliability_harness import LOAD_REPORTS, TALLY

    if not TALLY and not LOAD_REPORTS:
        return
    terminalreporter.section("reliability suite")
    for name, count in sorted(TALLY.items()):
        terminalreporter.write_line(f"{name}: {count}")
    for line in LOAD_REPORTS:
        terminalreporter.write_line(line)
