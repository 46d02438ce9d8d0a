"""Three smaller fetcher faults, each through the real fetcher and the real broker: an Amazon Pay region
given as an SDK alias, a 408 answer, and how soon an account is called again after a short outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fetch_helpers import AmazonKeys, ResultReader, eventually, fetch_request
from provider_double.server import Answer, ProviderDouble
from test_fetch_service_kafka import FetcherUnderTest, options, publish, read_all, stripe_request

from ingest.fetch import lane as lane_module
from paystream.config import AccountConfig, Settings
from schemas.envelopes import FetchRequest, to_rfc3339

pytestmark = pytest.mark.kafka

OUTAGE_S = 5.0


class LogRecorder:
    """Stands in for a module's structlog logger: keeps every event with its fields."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, _level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.entries.append({"event": event, **fields})

        return record


def mollie_request(object_id: str) -> FetchRequest:
    return fetch_request("mollie", "main", "payment", object_id, request_id=f"{object_id}:fetch")


@pytest.mark.parametrize("region", ["us", "UK", "de"])
async def test_an_sdk_region_alias_is_accepted_and_signed_for(
    kafka_settings: Settings, double: ProviderDouble, amazon_keys: AmazonKeys, region: str
) -> None:
    account = AccountConfig(
        api_base_url=f"{double.url}/amazon_pay",
        public_key_id=amazon_keys.public_key_id,
        private_key=f"file:{amazon_keys.private_pem_path}",
        api_region=region,  # an alias, as a TOML file would give it
        api_sandbox=True,
    )
    assert account.api_region == {"us": "na", "uk": "eu", "de": "eu"}[region.lower()]
    settings = kafka_settings.model_copy(update={"accounts": {"amazon_pay": {"shop": account}}})
    double.set_object("amazon_pay", "charge", "S02-alias", {"chargeId": "S02-alias"})
    now = to_rfc3339(datetime.now(UTC))
    request = FetchRequest(
        payment_key="amazon_pay:shop:charge:S02-alias", provider="amazon_pay", account="shop", object_type="charge",
        object_id="S02-alias", reason="thin_push", not_before=now, requested_at=now, request_id="alias:fetch",
    )
    under_test = FetcherUnderTest(settings, options())
    under_test.start()
    try:
        async with ResultReader(settings) as reader:
            await publish(settings, request)
            await eventually(lambda: len(reader.results) >= 1, within_s=60)
    finally:
        await under_test.shutdown()
    assert {r.outcome for r in reader.results} == {"ok"}
    assert double.requests and {r.signature for r in double.requests} == {"ok"}


async def test_a_408_is_retried_through_the_requests_topic(
    double: ProviderDouble, kafka_settings: Settings, settings_with: Callable[..., Settings]
) -> None:
    settings = settings_with(kafka_settings)
    double.set_object("stripe", "payment_intent", "pi_408", {"id": "pi_408", "status": "succeeded"})
    double.script("stripe", Answer(status=408))
    under_test = FetcherUnderTest(settings, options())
    under_test.start()
    try:
        async with ResultReader(settings) as reader:
            await publish(settings, stripe_request("pi_408"))
            await eventually(lambda: len(reader.results) == 1, within_s=60)
    finally:
        await under_test.shutdown()
    assert reader.results[0].outcome == "ok"
    assert reader.results[0].attempt == 1  # the request's own number: the fetcher counts retries apart
    requests = [FetchRequest.from_bytes(v) for v in await read_all(settings, settings.topics.fetch_requests)]
    assert [(r.attempt, r.retry) for r in requests] == [(1, None), (1, 1)]
    assert [r.status for r in double.requests] == [408, 200]


async def test_calls_resume_within_seconds_after_a_short_outage(
    double: ProviderDouble,
    kafka_settings: Settings,
    settings_with: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 5 s outage of the provider opens the account's circuit. Measured: from the moment the provider
    answers again to the first call that reaches it (with the old fixed 30 s reset: ~25 s)."""
    settings = settings_with(kafka_settings)
    logs = LogRecorder()
    monkeypatch.setattr(lane_module, "log", logs)
    ids = [f"tr_out_{n:02d}" for n in range(20)]
    for object_id in ids:
        double.set_object("mollie", "payment", object_id, {"id": object_id, "status": "paid"})
    double.set_mode("mollie", Answer(status=503))
    opts = options(backoff_base_s=0.2, backoff_cap_s=1.0, max_attempts=50)
    assert opts.circuit_reset_s == 30.0  # the default ceiling stays: a long outage is still probed rarely
    under_test = FetcherUnderTest(settings, opts)
    under_test.start()
    try:
        async with ResultReader(settings) as reader:
            await publish(settings, *(mollie_request(i) for i in ids))
            await eventually(lambda: double.count("mollie") >= 1, within_s=60)
            outage_started = double.requests[0].at
            await asyncio.sleep(max(0.0, outage_started + OUTAGE_S - time.monotonic()))
            double.set_mode("mollie", None)
            outage_over = time.monotonic()
            await eventually(lambda: len(reader.results) == len(ids), within_s=120)
            all_done = time.monotonic()
    finally:
        await under_test.shutdown()
    failed = double.count("mollie", status=503)
    first_ok = min(r.at for r in double.requests if r.status == 200)
    recovery_s = first_ok - outage_over
    closed = [entry for entry in logs.entries if entry["event"] == "circuit_closed"]
    print(
        f"\noutage {outage_over - outage_started:.1f} s, {failed} calls answered 503; first call through "
        f"{recovery_s:.2f} s after it ended, all {len(ids)} results {all_done - outage_over:.2f} s after it ended; "
        f"closing note: {closed}"
    )
    assert {r.outcome for r in reader.results} == {"ok"}
    # Well under the ceiling (30 s): with a 1 s first reset doubling per failed probe, the probe after a
    # 5 s outage goes at most ~5 s after it ended (here: probes ~1 s, ~3 s and ~7 s after opening).
    assert recovery_s < 15.0
    # The closing note says how long the account was cut off.
    assert len(closed) == 1, closed
    assert closed[0]["provider"] == "mollie" and closed[0]["account"] == "main"
    assert OUTAGE_S - 1.0 < closed[0]["recovered_after_s"] < OUTAGE_S + 15.0
    # The provider stayed protected: during the outage only the calls already under way when the circuit
    # opened and one probe per (doubling) reset period reached it.
    assert failed <= opts.in_flight_per_provider + 4
