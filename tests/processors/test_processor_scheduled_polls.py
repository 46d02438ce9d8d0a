"""A scheduled (stale) poll end to end, through a fetcher SIGKILL: processor worker and fetcher (both real
subprocesses) against the provider double, on the real broker.

A Mollie hint makes the processor ask for the payment now (reason ``hint``) and arm its first stale poll
(short gaps here: 20 s, 20 s). The fetcher gets the payment at once (it is open: pending, news) and, the
stale poll being due later than its delayed threshold (1 s), writes it to its durable delay store
(payments.fetch.delayed.v1) and commits past it. The fetcher is then SIGKILLed, before the poll is due,
and started again: the poll must still fire (one GET at the double, after its not-before) and its result,
the same open payment, must arm the next poll: poll 2 of the chain, whose request id and not-before follow
from the last news (the hint fetch's result), 40 s after it.

(processors/scheduling.py: the armed poll's result arms the next; DESIGN §5: timers are not an engine
feature, scheduled polls are durable fetch requests with a not_before.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import e2e_pipeline  # noqa: F401 - puts tests/reliability (the fetcher subprocess) on sys.path
import pytest
from aiokafka import TopicPartition
from e2e_pipeline import demo_traffic as demo
from fault_harness import FetcherProcess
from processor_harness import (
    drop_topics,
    envelope,
    fresh_settings,
    processor_settings,
    read_all,
    read_until,
    send_inbox,
    start_worker,
    wait_member,
)
from provider_double.server import ProviderDouble

from ingest.providers.signers import mollie_hint
from paystream.config import AccountConfig, Settings
from paystream.kafka import make_consumer
from schemas.envelopes import FetchRequest, FetchResult, from_rfc3339, to_rfc3339

pytestmark = pytest.mark.kafka

GAPS_S = [20, 20]
THRESHOLD_S = 1.0


@pytest.fixture
async def double() -> AsyncIterator[ProviderDouble]:
    running = ProviderDouble()
    await running.start()
    yield running
    await running.stop()


def pipeline_settings(settings: Settings, double: ProviderDouble, folder: Path) -> Settings:
    key = folder / "mollie-api-key"
    key.write_text("test_scheduled_polls_key")
    mollie = AccountConfig(api_base_url=f"{double.url}/mollie", api_key=f"file:{key}", fetch_rate_per_s=50.0,
                           fetch_burst=10)
    fetch = settings.fetch.model_copy(update={
        "group_id": f"sp-fetch-{uuid.uuid4().hex[:8]}", "stripe_sweeps": (), "commit_interval_s": 0.2,
        "delayed_threshold_s": THRESHOLD_S, "backoff_base_s": 0.2, "backoff_cap_s": 1.0, "shutdown_grace_s": 5.0,
    })
    return settings.model_copy(update={"accounts": {"mollie": {"main": mollie}}, "fetch": fetch})


def requests_for(records: list[Any], key: str) -> list[FetchRequest]:
    return [request for request in map(lambda r: FetchRequest.from_bytes(r.value), records)
            if request.payment_key == key]


async def live_in_store(settings: Settings) -> dict[str, FetchRequest]:
    """The fetcher's delay store: the latest value per key, tombstones applied."""
    latest: dict[bytes, bytes | None] = {}
    for record in await read_all(settings, settings.topics.fetch_delayed):
        latest[record.key] = record.value
    return {key.decode(): FetchRequest.from_bytes(value) for key, value in latest.items() if value is not None}


async def fetcher_committed_all(settings: Settings) -> bool:
    """Whether the fetcher's group has committed past every request on the (fresh) requests topic. (Past the
    last record, not to the end offset: the processor writes requests in transactions, whose commit markers
    take offsets the fetcher never commits past.)"""
    past_last: dict[TopicPartition, int] = {}
    for record in await read_all(settings, settings.topics.fetch_requests):
        past_last[TopicPartition(record.topic, record.partition)] = record.offset + 1
    consumer = make_consumer(settings, group_id=settings.fetch.group_id, client_suffix="test-offsets")
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) or 0 for tp in past_last}
    finally:
        await consumer.stop()
    return bool(past_last) and all(committed[tp] >= offset for tp, offset in past_last.items())


async def eventually(check: Any, *, within_s: float, what: str, logs: Any) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s\n{logs()}"
        await asyncio.sleep(0.3)


async def test_a_scheduled_poll_survives_a_fetcher_sigkill_fires_and_arms_the_next(
    base_settings: Settings, kafka_bootstrap: str, double: ProviderDouble, tmp_path: Path,
) -> None:
    settings = pipeline_settings(await fresh_settings(base_settings, tag="s"), double, tmp_path)
    topics = settings.topics
    conf = processor_settings(poll_schedule_s=GAPS_S)
    payment_id = f"tr_sp{uuid.uuid4().hex[:8]}"
    key = f"mollie:main:payment:{payment_id}"
    created = time.time() - 60
    double.set_object("mollie", "payment", payment_id, demo.mollie_payment(payment_id, "open", "12.00", created,
                                                                           created))
    worker = start_worker(settings, conf, tmp_path, "processor")
    fetchers = [FetcherProcess.start(settings, tmp_path, "fetcher-1")]

    def logs() -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail()}" for p in (worker, *fetchers))

    try:
        await wait_member(settings, conf.app_id)
        await wait_member(settings, settings.fetch.group_id)
        await send_inbox(settings, [envelope("mollie", "main", f"hint:{payment_id}:1", mollie_hint(payment_id),
                                             kind="hint")])

        # The hint's fetch (due now) finds the open payment; the first stale poll waits in the delay store.
        async def hint_result() -> list[FetchResult]:
            return [result for result in map(lambda r: FetchResult.from_bytes(r.value),
                                             await read_all(settings, topics.fetch_results))
                    if result.payment_key == key and result.reason == "hint"]

        (news,) = await eventually(hint_result, within_s=60, what="the hint's fetch result", logs=logs)
        assert news.outcome == "ok"
        (hint, poll) = requests_for(await read_until(settings, topics.fetch_requests,
                                                     lambda r: len(requests_for(r, key)) >= 2, worker=worker), key)
        assert (hint.reason, poll.reason, poll.attempt) == ("hint", "stale", 1)

        async def stored() -> FetchRequest | None:
            return next((r for r in (await live_in_store(settings)).values() if r.request_id == poll.request_id),
                        None)

        await eventually(stored, within_s=30, what="the stale poll in the delay store", logs=logs)
        # A fetch is at-least-once until its request's offset commits: killed before that, the hint would
        # rightly be fetched again. This test is about the scheduled poll, so both are committed first.
        await eventually(lambda: fetcher_committed_all(settings), within_s=30, what="the fetcher's commit",
                         logs=logs)
        assert time.time() < from_rfc3339(poll.not_before).timestamp(), "the poll came due before the kill"
        gets_before = [r for r in double.requests if payment_id in r.path]
        fetchers[0].kill()  # SIGKILL: nothing of the scheduled poll is left but the store's entry
        assert len(gets_before) == 1  # the hint's fetch only
        fetchers.append(FetcherProcess.start(settings, tmp_path, "fetcher-2"))

        # The poll fires after all: once, not before its time, and its result arms poll 2 of the chain.
        async def poll_result() -> list[FetchResult]:
            return [result for result in map(lambda r: FetchResult.from_bytes(r.value),
                                             await read_all(settings, topics.fetch_results))
                    if result.request_id == poll.request_id]

        (fired,) = await eventually(poll_result, within_s=90, what="the stale poll's result", logs=logs)
        assert fired.outcome == "ok"
        assert from_rfc3339(fired.fetched_at) >= from_rfc3339(poll.not_before)
        since = from_rfc3339(news.fetched_at)
        records = await read_until(settings, topics.fetch_requests, lambda r: len(requests_for(r, key)) >= 3,
                                   worker=worker, timeout_s=60)
        requests = requests_for(records, key)
        assert [(r.reason, r.attempt, r.request_id) for r in requests] == [
            ("hint", 1, hint.request_id), ("stale", 1, poll.request_id),
            ("stale", 2, f"{key}:stale:{since.timestamp():.6f}:2")], logs()
        assert requests[2].not_before == to_rfc3339(since + timedelta(seconds=sum(GAPS_S)))
        assert [r.path for r in double.requests if payment_id in r.path] == [f"/mollie/v2/payments/{payment_id}"] * 2

        # The store ends with poll 2 in the payment's slot (the fired poll is gone).
        async def holds_poll_two() -> bool:
            entries = [r for r in (await live_in_store(settings)).values() if r.payment_key == key]
            return [r.request_id for r in entries] == [requests[2].request_id]

        await eventually(holds_poll_two, within_s=30, what="poll 2 alone in the delay store", logs=logs)
    finally:
        codes = [process.stop() for process in (worker, *fetchers)]
        await drop_topics(settings, conf.app_id)
    assert codes[0] == 0, worker.log_tail()
    assert codes[-1] == 0, fetchers[-1].log_tail()
