"""Thin Amazon Pay IPNs under steady load, each needing a fetch: the fetcher SIGKILLed and restarted, and
the provider answering 429 and 500 in bursts. Nothing lost, the rate limit holds, fetches back off.

The provider double (in this process) records every call with its arrival time and answer; the fetcher
runs in a subprocess (``rel_fetcher_process.py``) so it can be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
from fault_harness import (
    AMAZON_KEY_ID,
    FETCH_BURST,
    FETCH_RATE_PER_S,
    IN_FLIGHT,
    AmazonPayIpns,
    FetcherProcess,
    StatusFollower,
    closing_check,
    drive,
    fetch_settings,
    start_ingest_for,
    warm_up,
    worker_alive,
)
from http_harness import Deliveries, HarnessPki
from processor_harness import processor_settings, start_worker, wait_drained
from provider_double.server import Answer, ProviderDouble
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

RATE = 40.0
DURATION_S = 20.0


def put_charge(double: ProviderDouble) -> object:
    return lambda charge_id, body: double.set_object("amazon_pay", "charge", charge_id, body)


def assert_rate_limit_held(double: ProviderDouble) -> None:
    """A token bucket lets ``rate x 1 s + burst`` calls START within one second; they are timed here on
    ARRIVAL, and calls in flight may bunch up on the way by at most their number."""
    busiest = double.max_in_window("amazon_pay", 1.0)
    TALLY["provider calls"] += double.count("amazon_pay")
    assert busiest <= FETCH_RATE_PER_S + FETCH_BURST + IN_FLIGHT, f"{busiest} calls within one second"


async def test_fetcher_sigkilled_under_load_loses_no_fetch(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, rel_deliveries: Deliveries,
    provider_double: ProviderDouble, amazon_private_pem: tuple[Path, bytes], tmp_path: Path,
) -> None:
    settings = fetch_settings(await fresh_topic_settings(base_settings, partitions=3), provider_double.url,
                              AMAZON_KEY_ID, amazon_private_pem[0])
    conf = processor_settings()
    async with contextlib.AsyncExitStack() as stack:
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        worker = start_worker(settings, conf, tmp_path, "worker")
        stack.callback(worker.stop)
        first = FetcherProcess.start(settings, tmp_path, "first")
        stack.callback(first.stop)
        follower = await stack.enter_async_context(StatusFollower(settings))

        ipns = AmazonPayIpns(uuid.uuid4().hex[:6], rel_deliveries, put_charge(provider_double))  # type: ignore[arg-type]
        await warm_up(running, ipns, follower, worker_alive(worker, first))
        load = asyncio.create_task(drive(running, ipns, name="fetcher kill", rate=RATE, duration_s=DURATION_S))
        await asyncio.sleep(7.0)
        first.kill()
        TALLY["faults injected"] += 1
        restarted = FetcherProcess.start(settings, tmp_path, "restarted")
        stack.callback(restarted.stop)
        stats = await load

        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(worker, restarted))
        assert not missing, f"{len(missing)} missing; fetcher log:\n{restarted.log_tail()}\n{worker.log_tail()}"
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.observations_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)
        assert_rate_limit_held(provider_double)
        closing_check(stats, follower.events, missing, faults="fetcher SIGKILL + restart")


async def test_provider_answering_429_and_500_in_bursts_loses_nothing_and_is_backed_off(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, rel_deliveries: Deliveries,
    provider_double: ProviderDouble, amazon_private_pem: tuple[Path, bytes], tmp_path: Path,
) -> None:
    settings = fetch_settings(await fresh_topic_settings(base_settings, partitions=3), provider_double.url,
                              AMAZON_KEY_ID, amazon_private_pem[0])
    conf = processor_settings()
    burst_s, retry_after_s = 3.0, 1
    async with contextlib.AsyncExitStack() as stack:
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        worker = start_worker(settings, conf, tmp_path, "worker")
        stack.callback(worker.stop)
        fetcher = FetcherProcess.start(settings, tmp_path)
        stack.callback(fetcher.stop)
        follower = await stack.enter_async_context(StatusFollower(settings))

        ipns = AmazonPayIpns(uuid.uuid4().hex[:6], rel_deliveries, put_charge(provider_double))  # type: ignore[arg-type]
        await warm_up(running, ipns, follower, worker_alive(worker, fetcher))
        load = asyncio.create_task(drive(running, ipns, name="provider 429/500 bursts", rate=RATE,
                                         duration_s=DURATION_S))
        await asyncio.sleep(6.0)
        provider_double.set_mode("amazon_pay", Answer(429, retry_after=str(retry_after_s)))
        await asyncio.sleep(burst_s)
        provider_double.set_mode("amazon_pay", None)
        await asyncio.sleep(3.0)
        provider_double.set_mode("amazon_pay", Answer(500))
        await asyncio.sleep(burst_s)
        provider_double.set_mode("amazon_pay", None)
        TALLY["faults injected"] += 2
        stats = await load

        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(worker, fetcher))
        assert not missing, f"{len(missing)} missing; fetcher log:\n{fetcher.log_tail()}\n{worker.log_tail()}"
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.observations_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)

    assert_rate_limit_held(provider_double)
    rate_limited = provider_double.count("amazon_pay", status=429)
    failed = provider_double.count("amazon_pay", status=500)
    # Each Retry-After pauses the account: at most one burst plus the calls in flight per pause.
    assert 0 < rate_limited <= (burst_s / retry_after_s + 1) * (FETCH_BURST + IN_FLIGHT), rate_limited
    # The circuit opens after a few consecutive 5xx and lets one probe out per reset period.
    threshold, reset_s = settings.fetch.circuit_failure_threshold, settings.fetch.circuit_reset_s
    assert 0 < failed <= threshold + IN_FLIGHT * (burst_s / reset_s + 2), failed
    TALLY["provider 429 answers"] += rate_limited
    TALLY["provider 500 answers"] += failed
    closing_check(stats, follower.events, missing, faults="provider 429 burst (3 s) + 500 burst (3 s)",
                  injected=2)
