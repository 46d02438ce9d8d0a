"""The scheduling core: not-before, rate limits across workers, isolation between providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fetch_helpers import MemorySink, eventually
from provider_double.server import Answer, ProviderDouble

from ingest.fetch.clients import Lanes, build_lanes
from ingest.fetch.engine import FetchEngine
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from schemas.envelopes import FetchRequest, to_rfc3339


def request(provider: str, object_id: str, *, delay_s: float = 0.0) -> FetchRequest:
    object_type = {"stripe": "payment_intent", "mollie": "payment", "amazon_pay": "charge"}[provider]
    account = "eu-main" if provider == "amazon_pay" else "main"
    now = datetime.now(UTC)
    return FetchRequest(
        payment_key=f"{provider}:{account}:{object_type}:{object_id}",
        provider=provider,
        account=account,
        object_type=object_type,
        object_id=object_id,
        reason="stale",
        not_before=to_rfc3339(now + timedelta(seconds=delay_s)),
        requested_at=to_rfc3339(now),
        request_id=f"{object_id}:fetch",
    )


class Running:
    def __init__(self, lanes: Lanes, options: FetchOptions) -> None:
        self.lanes = lanes
        self.sink = MemorySink()
        self.engine = FetchEngine(lanes.by_account, self.sink, options, fallback_lane=lanes.unsupported)

    def ids(self, provider: str) -> list[str]:
        return [r.object_id for r in self.sink.results if r.provider == provider]


@pytest.fixture
async def start(
    settings_with: Callable[..., Settings], double: ProviderDouble
) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def make(*, rate: float = 1000.0, burst: int = 1000, in_flight: int = 8) -> Running:
        options = FetchOptions(in_flight_per_provider=in_flight, shutdown_grace_s=2.0)
        running = Running(build_lanes(settings_with(rate=rate, burst=burst), options), options)
        running.engine.start()
        started.append(running)
        return running

    yield make
    for provider in ("stripe", "mollie", "amazon_pay"):
        double.release(provider)
    for running in started:
        await running.engine.stop()
        await running.lanes.close()


def seed(double: ProviderDouble, provider: str, count: int) -> list[str]:
    object_type = {"stripe": "payment_intent", "mollie": "payment", "amazon_pay": "charge"}[provider]
    ids = [f"{provider[:2]}_{n}" for n in range(count)]
    for object_id in ids:
        double.set_object(provider, object_type, object_id, {"id": object_id, "status": "paid"})
    return ids


async def test_rate_limit_holds_under_a_burst(double: ProviderDouble, start: Callable[..., Running]) -> None:
    rate, burst = 20.0, 5
    running = start(rate=rate, burst=burst)
    ids = seed(double, "stripe", 40)
    for object_id in ids:
        running.engine.submit(request("stripe", object_id))
    await eventually(lambda: len(running.sink.results) == len(ids))
    assert sorted(running.ids("stripe")) == sorted(ids)
    # In any 1 s window the provider saw at most the burst plus 1 s worth of tokens.
    assert double.max_in_window("stripe", 1.0) <= burst + rate * 1.0


async def test_not_before_is_honoured(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start()
    seed(double, "stripe", 2)
    later = request("stripe", "st_0", delay_s=1.0)
    running.engine.submit(later)
    running.engine.submit(request("stripe", "st_1"))
    await eventually(lambda: len(running.sink.results) == 2)
    assert running.ids("stripe") == ["st_1", "st_0"]
    first_fetch_of_later = datetime.fromisoformat(running.sink.results[1].fetched_at.replace("Z", "+00:00"))
    assert first_fetch_of_later >= datetime.fromisoformat(later.not_before.replace("Z", "+00:00"))


async def test_a_stuck_provider_does_not_delay_another(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start()
    mollie_ids = seed(double, "mollie", 5)
    stripe_ids = seed(double, "stripe", 5)
    double.hold("mollie")
    for object_id in mollie_ids:
        running.engine.submit(request("mollie", object_id))
    for object_id in stripe_ids:
        running.engine.submit(request("stripe", object_id))
    await eventually(lambda: len(running.ids("stripe")) == 5)
    assert running.ids("mollie") == []  # still stuck at the provider
    assert double.count("mollie") == 5
    double.release("mollie")
    await eventually(lambda: len(running.ids("mollie")) == 5)


async def test_a_failing_provider_does_not_delay_another(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start()
    double.set_mode("mollie", Answer(status=500))
    stripe_ids = seed(double, "stripe", 5)
    for n in range(5):
        running.engine.submit(request("mollie", f"mo_{n}"))
    for object_id in stripe_ids:
        running.engine.submit(request("stripe", object_id))
    await eventually(lambda: len(running.ids("stripe")) == 5 and len(running.sink.retries) == 5)
    assert all(r.provider == "mollie" and (r.attempt, r.retry) == (1, 1) for r in running.sink.retries)
    assert all(r.outcome == "ok" for r in running.sink.results)


async def test_in_flight_cap_per_provider(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start(in_flight=3)
    mollie_ids = seed(double, "mollie", 10)
    stripe_ids = seed(double, "stripe", 10)
    double.hold("mollie")
    for object_id in mollie_ids:
        running.engine.submit(request("mollie", object_id))
    await eventually(lambda: double.count("mollie") == 3)
    for object_id in stripe_ids:  # other providers' work keeps flowing meanwhile
        running.engine.submit(request("stripe", object_id))
    await eventually(lambda: len(running.ids("stripe")) == 10)
    assert double.count("mollie") == 3
    double.release("mollie")
    await eventually(lambda: len(running.ids("mollie")) == 10)


async def test_unknown_account_is_answered_unsupported(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start()
    running.engine.submit(
        replace(request("mollie", "tr_x"), account="nobody", payment_key="mollie:nobody:payment:tr_x")
    )
    await eventually(lambda: len(running.sink.results) == 1)
    assert running.sink.results[0].outcome == "unsupported"
    assert double.count() == 0
