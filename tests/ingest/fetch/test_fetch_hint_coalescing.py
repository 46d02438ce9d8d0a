"""When a hint adds nothing (FetchEngine.covers), and where hints queue in their account: the engine with the
provider double over real HTTP, no broker (the Kafka side is in test_fetch_hints_kafka.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fetch_helpers import MemorySink, eventually, fetch_request
from provider_double.server import Answer, ProviderDouble

from ingest.fetch.clients import Lanes, build_lanes
from ingest.fetch.engine import FetchEngine
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from schemas.envelopes import FetchReason, FetchRequest, to_rfc3339


def mollie(object_id: str, *, reason: FetchReason = "hint", requested_s_ago: float = 0.0) -> FetchRequest:
    request = fetch_request("mollie", "main", "payment", object_id, reason=reason,
                            request_id=f"{object_id}:{reason}:{requested_s_ago}")
    return replace(request, requested_at=to_rfc3339(datetime.now(UTC) - timedelta(seconds=requested_s_ago)))


class Running:
    def __init__(self, lanes: Lanes, options: FetchOptions) -> None:
        self.lanes = lanes
        self.sink = MemorySink()
        self.engine = FetchEngine(lanes.by_account, self.sink, options, fallback_lane=lanes.unsupported)


@pytest.fixture
async def start(
    settings_with: Callable[..., Settings], double: ProviderDouble
) -> AsyncIterator[Callable[..., Running]]:
    made: list[Running] = []

    def make(*, rate: float = 1000.0, burst: int = 1000, started: bool = True) -> Running:
        options = FetchOptions(in_flight_per_provider=1, shutdown_grace_s=2.0)
        running = Running(build_lanes(settings_with(rate=rate, burst=burst), options), options)
        if started:
            running.engine.start()
        made.append(running)
        return running

    yield make
    double.release("mollie")
    for running in made:
        await running.engine.stop()
        await running.lanes.close()


def put(double: ProviderDouble, *ids: str) -> None:
    for object_id in ids:
        double.set_object("mollie", "payment", object_id, {"id": object_id, "status": "open"})


async def test_a_hint_for_an_object_waiting_for_a_fetch_adds_nothing(start: Callable[..., Running]) -> None:
    running = start(started=False)  # nothing leaves: every job waits
    running.engine.submit(mollie("tr_wait", reason="thin_push"))
    assert running.engine.covers(mollie("tr_wait"))
    assert not running.engine.covers(mollie("tr_other"))
    # A fetch due later than the hint does not cover it: the hint would wait for it.
    later = fetch_request("mollie", "main", "payment", "tr_later", reason="thin_push", request_id="l", delay_s=60)
    running.engine.submit(later)
    assert not running.engine.covers(mollie("tr_later"))


async def test_a_fetch_sent_before_the_hint_was_requested_does_not_cover_it(
    double: ProviderDouble, start: Callable[..., Running]
) -> None:
    put(double, "tr_flight")
    running = start()
    double.hold("mollie")
    running.engine.submit(mollie("tr_flight", reason="thin_push", requested_s_ago=5.0))
    await eventually(lambda: double.count("mollie") == 1)  # in flight now
    await asyncio.sleep(0.01)
    # Requested before the call left: the answer will be newer than what it announced.
    assert running.engine.covers(mollie("tr_flight", requested_s_ago=1.0))
    # Requested after: the call may have read the object before the change the hint announces.
    assert not running.engine.covers(mollie("tr_flight"))
    double.release("mollie")
    await eventually(lambda: len(running.sink.results) == 1)
    # Answered and done: still remembered for hints requested before that call left.
    assert running.engine.covers(mollie("tr_flight", requested_s_ago=1.0))
    assert not running.engine.covers(mollie("tr_flight"))


async def test_a_failed_call_covers_no_hint(double: ProviderDouble, start: Callable[..., Running]) -> None:
    running = start()
    double.script("mollie", Answer(status=429, retry_after="0"))
    running.engine.submit(mollie("tr_limited", reason="thin_push", requested_s_ago=5.0))
    await eventually(lambda: len(running.sink.retries) == 1)
    await asyncio.sleep(0.01)
    assert not running.engine.covers(mollie("tr_limited", requested_s_ago=1.0))  # it was not answered


async def test_a_scheduled_poll_the_delay_store_may_withdraw_covers_no_hint(start: Callable[..., Running]) -> None:
    running = start(started=False)
    running.engine.submit(mollie("tr_poll", reason="stale"), withdrawable=True)
    assert not running.engine.covers(mollie("tr_poll"))


async def test_hints_wait_behind_their_accounts_other_requests(
    double: ProviderDouble, start: Callable[..., Running]
) -> None:
    put(double, *(f"tr_h{n}" for n in range(6)), "tr_push")
    running = start(rate=5.0, burst=1)
    for n in range(6):
        running.engine.submit(mollie(f"tr_h{n}"))
    await eventually(lambda: len(running.sink.results) == 1)  # the first hint took the burst
    running.engine.submit(mollie("tr_push", reason="thin_push"))  # a verified push's fetch comes next
    await eventually(lambda: len(running.sink.results) == 7, within_s=10)
    order = [r.object_id for r in running.sink.results]
    assert order.index("tr_push") <= 2, order
    assert running.engine.hints_held("mollie", "main") == 0
