"""Thin Amazon Pay IPNs under steady load, each needing a fetch: the fetcher SIGKILLed and restarted, and
the provider answering 429 and 500 in bursts. Nothing lost, the rate limit holds, fetches back off. And
stale polls scheduled hours ahead in the fetcher's delayed store, through two SIGKILLs: none lost, the due
ones fetched when due, once each. And a hint flood, most of it waiting in the requests topic, through a
SIGKILL: every hinted object fetched, the rate held, the commit at the end.

The provider double (in this process) records every call with its arrival time and answer; the fetcher
runs in a subprocess (``rel_fetcher_process.py``) so it can be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from fault_harness import (
    AMAZON_KEY_ID,
    FETCH_BURST,
    FETCH_RATE_PER_S,
    IN_FLIGHT,
    AmazonPayIpns,
    FetcherProcess,
    StatusFollower,
    amazon_charge,
    closing_check,
    drive,
    fetch_settings,
    start_ingest_for,
    warm_up,
    worker_alive,
)
from fetch_helpers import ResultReader, read_records
from http_harness import SNS_ACCOUNT, Deliveries, HarnessPki
from processor_harness import processor_settings, start_worker, wait_drained
from provider_double.server import Answer, ProviderDouble
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings
from paystream.kafka import make_consumer, make_producer
from schemas.envelopes import FetchRequest, from_rfc3339, to_rfc3339

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

RATE = 40.0
DURATION_S = 20.0


async def isolated_fetch_settings(base: Settings, double: ProviderDouble, private_pem: Path) -> Settings:
    """Fresh topics, the fetcher's delayed store included (shared by nobody else), and an Amazon Pay account
    that reaches the provider double."""
    settings = fetch_settings(await fresh_topic_settings(base, partitions=3), double.url, AMAZON_KEY_ID, private_pem)
    delayed = settings.topics.fetch_requests.replace(".requests.", ".delayed.")
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"fetch_delayed": delayed})})


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
    settings = await isolated_fetch_settings(base_settings, provider_double, amazon_private_pem[0])
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
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)
        assert_rate_limit_held(provider_double)
        closing_check(stats, follower.events, missing, faults="fetcher SIGKILL + restart")


async def test_provider_answering_429_and_500_in_bursts_loses_nothing_and_is_backed_off(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, rel_deliveries: Deliveries,
    provider_double: ProviderDouble, amazon_private_pem: tuple[Path, bytes], tmp_path: Path,
) -> None:
    settings = await isolated_fetch_settings(base_settings, provider_double, amazon_private_pem[0])
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
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.inputs_topic()])
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


# --- the delayed store: polls scheduled hours ahead survive SIGKILL -------------------------------------

DUE_IN_S = 60.0  # the "due" polls: long enough for two kills and restarts, each waiting for the session timeout
HELD_FOR_S = 6 * 3600.0  # the "held" polls: hours ahead, so they can only be checked in the store


def scheduled_poll(charge_id: str, due: datetime) -> FetchRequest:
    now = datetime.now(UTC)
    return FetchRequest(
        payment_key=f"amazon_pay:{SNS_ACCOUNT}:charge:{charge_id}", provider="amazon_pay", account=SNS_ACCOUNT,
        object_type="charge", object_id=charge_id, reason="stale", not_before=to_rfc3339(due),
        requested_at=to_rfc3339(now), request_id=f"{charge_id}:stale:1",
    )


async def publish_requests(settings: Settings, requests: list[FetchRequest]) -> None:
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        futures = [await producer.send(settings.topics.fetch_requests, key=r.key, value=r.to_bytes()) for r in requests]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def live_in_store(settings: Settings) -> dict[str, FetchRequest]:
    """The delayed store's live entries (latest value per key, tombstones applied)."""
    latest: dict[str, bytes | None] = {}
    for record in await read_records(settings, settings.topics.fetch_delayed):
        latest[record.key.decode()] = record.value
    return {key: FetchRequest.from_bytes(value) for key, value in latest.items() if value is not None}


async def committed_total(settings: Settings) -> int:
    consumer = make_consumer(settings, group_id=settings.fetch.group_id, client_suffix="test-offsets")
    await consumer.start()
    try:
        topic = settings.topics.fetch_requests
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(settings.topics.partitions)])
    finally:
        await consumer.stop()


async def wait_for(check: Callable[[], Awaitable[bool]], *, within_s: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within_s} s; fetcher log:\n{log()}")
        await asyncio.sleep(0.3)


async def test_fetcher_sigkilled_while_polls_are_scheduled_hours_ahead_loses_none(
    base_settings: Settings, kafka_bootstrap: str, provider_double: ProviderDouble,
    amazon_private_pem: tuple[Path, bytes], tmp_path: Path,
) -> None:
    settings = await isolated_fetch_settings(base_settings, provider_double, amazon_private_pem[0])
    settings = settings.model_copy(update={"fetch": settings.fetch.model_copy(update={"delayed_threshold_s": 2.0})})
    tag = uuid.uuid4().hex[:6]
    due_time = datetime.now(UTC) + timedelta(seconds=DUE_IN_S)
    held_time = datetime.now(UTC) + timedelta(seconds=HELD_FOR_S)
    first_due = [scheduled_poll(f"{tag}a-due{n}", due_time) for n in range(15)]
    first_held = [scheduled_poll(f"{tag}a-held{n}", held_time) for n in range(15)]
    second_due = [scheduled_poll(f"{tag}b-due{n}", due_time) for n in range(10)]
    second_held = [scheduled_poll(f"{tag}b-held{n}", held_time) for n in range(30)]
    canary = replace(scheduled_poll(f"{tag}canary", datetime.now(UTC)), reason="thin_push", request_id=f"{tag}:c")
    for r in [*first_due, *first_held, *second_due, *second_held, canary]:
        provider_double.set_object("amazon_pay", "charge", r.object_id, amazon_charge(r.object_id))
    key = {r.request_id: f"{r.payment_key}|stale" for r in [*first_due, *first_held, *second_due, *second_held]}
    processes: list[FetcherProcess] = []
    try:
        async with ResultReader(settings) as reader:
            # 1. Polls stored and committed past, then SIGKILL: the store and the commits hold every one.
            first = FetcherProcess.start(settings, tmp_path, "first")
            processes.append(first)
            await publish_requests(settings, first_due + first_held)

            async def stored_and_committed(requests: list[FetchRequest], total: int) -> bool:
                live = await live_in_store(settings)
                return all(live.get(key[r.request_id]) == r for r in requests) and await committed_total(
                    settings) == total

            await wait_for(lambda: stored_and_committed(first_due + first_held, 30), within_s=60,
                           what="30 polls stored and committed", log=first.log_tail)
            first.kill()
            TALLY["faults injected"] += 1
            assert await stored_and_committed(first_due + first_held, 30)

            # 2. Restarted; polls arriving, and a SIGKILL while they are being stored (before their commit).
            second = FetcherProcess.start(settings, tmp_path, "second")
            processes.append(second)
            await publish_requests(settings, [canary])

            async def canary_fetched() -> bool:
                return any(r.request_id == canary.request_id for r in reader.results)

            await wait_for(canary_fetched, within_s=90, what="the restarted fetcher consuming", log=second.log_tail)
            # A fetch is at-least-once until its offset commits (every commit interval): killed before that,
            # the canary would rightly be fetched again. This test is about the scheduled polls, so it waits.
            await wait_for(lambda: stored_and_committed(first_due + first_held, 31), within_s=30,
                           what="the canary committed", log=second.log_tail)
            await publish_requests(settings, second_due + second_held)

            async def some_stored() -> bool:
                live = await live_in_store(settings)
                return any(key[r.request_id] in live for r in second_due + second_held)

            await wait_for(some_stored, within_s=30, what="a poll of the second batch stored", log=second.log_tail)
            second.kill()
            TALLY["faults injected"] += 1

            # 3. Restarted again: every poll is still scheduled, the due ones are fetched when due, once each.
            third = FetcherProcess.start(settings, tmp_path, "third")
            processes.append(third)
            everything = first_due + first_held + second_due + second_held
            await wait_for(lambda: stored_and_committed(everything, len(everything) + 1), within_s=90,
                           what="every poll stored and committed", log=third.log_tail)
            assert datetime.now(UTC) < due_time, "the scenario took longer than DUE_IN_S: raise it"
            due = first_due + second_due

            async def all_due_fetched() -> bool:
                return {r.request_id for r in reader.results} >= {r.request_id for r in due}

            await wait_for(all_due_fetched, within_s=DUE_IN_S + 30, what="the due polls fetched", log=third.log_tail)
            await asyncio.sleep(1.0)
        fetched = Counter(r.request_id for r in reader.results)
        assert fetched == Counter({r.request_id: 1 for r in [*due, canary]}), "each due poll fetched exactly once"
        for result in reader.results:
            if result.request_id != canary.request_id:
                lateness = (from_rfc3339(result.fetched_at) - due_time).total_seconds()
                assert 0 <= lateness < 2.0, (result.request_id, lateness)
        assert provider_double.count("amazon_pay") == len(due) + 1  # nothing held was fetched
        held = first_held + second_held

        async def only_held_left() -> bool:
            return await live_in_store(settings) == {key[r.request_id]: r for r in held}

        await wait_for(only_held_left, within_s=30, what="the store holding exactly the held polls",
                       log=third.log_tail)
        assert await committed_total(settings) == len(everything) + 1
        TALLY["scheduled polls kept through SIGKILL"] += len(held)
    finally:
        for process in processes:
            process.stop()


# --- a hint flood through a SIGKILL: hints wait in the topic, none is lost ------------------------------------

HINT_RATE_PER_S, HINT_BURST, HINTS_HELD = 20.0, 5, 10


def mollie_hint(object_id: str, n: int, requested_at: str) -> FetchRequest:
    return FetchRequest(
        payment_key=f"mollie:main:payment:{object_id}", provider="mollie", account="main", object_type="payment",
        object_id=object_id, reason="hint", not_before=requested_at, requested_at=requested_at,
        request_id=f"hint{n}:fetch", evidence_id=f"hint{n}",
    )


async def test_fetcher_sigkilled_during_a_hint_flood_loses_no_hint(
    base_settings: Settings, kafka_bootstrap: str, provider_double: ProviderDouble,
    amazon_private_pem: tuple[Path, bytes], tmp_path: Path,
) -> None:
    """400 hints for 200 objects (most made up) against an account allowed 20 calls/s, with at most 10 hint
    fetches held in memory: most of the flood waits in the topic when the fetcher is SIGKILLed. The restarted
    fetcher reads the held commit's span again: every object is fetched, none more than twice (before and
    after the kill), the rate holds, and the commit reaches the end of the topic."""
    from paystream.config import AccountConfig

    settings = await isolated_fetch_settings(base_settings, provider_double, amazon_private_pem[0])
    key_file = tmp_path / "mollie.key"
    key_file.write_text("test_reliability")
    mollie = AccountConfig(api_base_url=f"{provider_double.url}/mollie", api_key=f"file:{key_file}",
                           fetch_rate_per_s=HINT_RATE_PER_S, fetch_burst=HINT_BURST)
    settings = settings.model_copy(update={
        "accounts": {**settings.accounts, "mollie": {"main": mollie}},
        "fetch": settings.fetch.model_copy(update={"hints_per_account": HINTS_HELD}),
    })
    tag = uuid.uuid4().hex[:6]
    known, made_up = [f"tr_{tag}_k{n}" for n in range(60)], [f"tr_{tag}_x{n}" for n in range(140)]
    for object_id in known:
        provider_double.set_object("mollie", "payment", object_id, {"id": object_id, "status": "paid"})
    stamp = to_rfc3339(datetime.now(UTC))
    flood = [mollie_hint(object_id, n, stamp) for n, object_id in enumerate((known + made_up) * 2)]
    processes: list[FetcherProcess] = []
    try:
        async with ResultReader(settings) as reader:
            first = FetcherProcess.start(settings, tmp_path, "first")
            processes.append(first)
            await publish_requests(settings, flood)

            async def some_fetched() -> bool:
                return provider_double.count("mollie") >= 60

            await wait_for(some_fetched, within_s=90, what="60 hint fetches", log=first.log_tail)
            first.kill()
            TALLY["faults injected"] += 1
            fetched_before_kill = provider_double.count("mollie")
            second = FetcherProcess.start(settings, tmp_path, "second")
            processes.append(second)

            async def all_fetched() -> bool:
                return {r.object_id for r in reader.results} >= set(known + made_up)

            await wait_for(all_fetched, within_s=180, what="every hinted object fetched", log=second.log_tail)

            async def all_committed() -> bool:
                return await committed_total(settings) == len(flood)

            await wait_for(all_committed, within_s=60, what="the whole flood committed", log=second.log_tail)
    finally:
        for process in processes:
            process.stop()
    calls = Counter(r.path.rsplit("/", 1)[-1] for r in provider_double.requests if r.provider == "mollie")
    assert set(calls) == set(known + made_up)
    assert max(calls.values()) <= 2, calls.most_common(3)  # once, or once on each side of the kill
    busiest = provider_double.max_in_window("mollie", 1.0)
    assert busiest <= HINT_RATE_PER_S + HINT_BURST + IN_FLIGHT, f"{busiest} calls within one second"
    print(f"\nhint flood: {len(flood)} hints for {len(calls)} objects; SIGKILL after {fetched_before_kill} calls; "
          f"{sum(calls.values())} calls in all ({sum(calls.values()) - len(calls)} repeated after the kill)")
    TALLY["hints kept through SIGKILL"] += len(flood)
