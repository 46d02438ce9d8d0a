"""Poll chains survive a fetcher retry episode (issue 18 #3a), through the real broker and the real fetcher.

The processors arm a payment's next stale poll (link n+1, a higher ``chain_version``) while the fetcher is
still retrying link n (429, or a 5xx that opens the account's circuit). The fetcher re-publishes link n's
retry on the requests topic behind link n+1. Kept by arrival, that retry replaced link n+1 in the payment's
slot of the delay store, its result was ignored by the chain, and the payment was never polled again. Kept
by chain version, link n+1 holds the slot and is fetched when due; link n's retry is dropped.

Link n is poll 7 of its chain (``attempt`` 7, past ``max_attempts``): it is retried all the same (#8).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
from fetch_helpers import ResultReader, eventually, fetch_request
from provider_double.server import Answer, ProviderDouble
from test_fetch_delayed_kafka import THRESHOLD_S, RunningFetcher, publish_at, store_latest, until_committed
from test_fetch_service_kafka import read_all

from ingest.fetch.delayed import store_key
from paystream.config import Settings
from schemas.envelopes import FetchRequest, from_rfc3339

pytestmark = pytest.mark.kafka

PARTITION = 1


def link(object_id: str, *, version: int, poll: int, delay_s: float) -> FetchRequest:
    """A stale poll as the processors arm it: ``attempt`` = its number in the chain."""
    return replace(
        fetch_request("stripe", "main", "payment_intent", object_id, reason="stale", delay_s=delay_s,
                      request_id=f"{object_id}:stale:{version}:{poll}", attempt=poll),
        chain_version=version,
    )


@pytest.mark.parametrize("episode", ["rate_limited", "circuit_open"])
async def test_news_during_a_retry_episode_leaves_the_payment_polled(
    episode: str, double: ProviderDouble, kafka_settings: Settings, settings_with: Callable[..., Settings]
) -> None:
    object_id = f"pi_chain_{episode}"
    double.set_object("stripe", "payment_intent", object_id, {"id": object_id, "status": "processing"})
    if episode == "rate_limited":
        overrides: dict[str, object] = {}
        failure = Answer(status=429, retry_after="3")  # link n's retry is due 3 s later: through the store
    else:
        # One 5xx opens the account's circuit for 4 s: link n+1 comes due while it is open and waits for the
        # probe (re-published, circuit_open), then is fetched.
        overrides = {"circuit_failure_threshold": 1, "circuit_first_reset_s": 4.0, "backoff_base_s": 2.0}
        failure = Answer(status=500)
    group = f"fetch-chain-{uuid.uuid4().hex[:8]}"
    fetcher = RunningFetcher(settings_with(kafka_settings), group, **overrides)
    try:
        await fetcher.consuming(kafka_settings.topics.partitions)
        link_n = link(object_id, version=7, poll=7, delay_s=1.5)  # held in the payment's slot
        slot = store_key(link_n)
        async with ResultReader(kafka_settings) as reader:
            double.hold("stripe")  # link n's call hangs at the provider ...
            double.script("stripe", failure)  # ... and then fails
            await publish_at(kafka_settings, (PARTITION, link_n))
            await eventually(lambda: double.count("stripe") == 1, within_s=30)

            # News: the processors re-arm the chain (link n+1, poll 1 of the new chain) while link n is retried.
            link_next = link(object_id, version=8, poll=1, delay_s=2.5)
            await publish_at(kafka_settings, (PARTITION, link_next))
            await eventually(lambda: fetcher.held() == {slot: link_next}, within_s=30)
            double.release("stripe")  # link n fails now: its retry is re-published behind link n+1

            async def link_n_retry_published() -> list[FetchRequest]:
                raw = await read_all(kafka_settings, kafka_settings.topics.fetch_requests)
                return [r for r in map(FetchRequest.from_bytes, raw) if r.request_id == link_n.request_id and r.retry]

            for _ in range(300):
                if retried := await link_n_retry_published():
                    break
                await asyncio.sleep(0.1)
            # Poll 7 got a retry (its budget does not depend on its number), and its number stayed 7.
            assert [(r.attempt, r.retry, r.chain_version) for r in retried] == [(7, 1, 7)], retried
            await until_committed(kafka_settings, group, {PARTITION: 3})
            assert fetcher.held() == {slot: link_next}, "link n's retry replaced the newer link"

            await eventually(lambda: any(r.request_id == link_next.request_id for r in reader.results), within_s=60)
            await asyncio.sleep(2 * THRESHOLD_S + 1.0)  # room for a wrong fetch of link n's retry
    finally:
        await fetcher.shutdown()
    fetched = [r for r in reader.results if r.request_id == link_next.request_id]
    assert [r.outcome for r in fetched] == ["ok"]
    assert from_rfc3339(fetched[0].fetched_at) >= from_rfc3339(link_next.not_before)
    # Link n's retry was dropped, never fetched: one failed call for link n, one answered call for link n+1.
    assert not [r for r in reader.results if r.request_id == link_n.request_id]
    assert [r.status for r in double.requests] == [failure.status, 200]
    if episode == "circuit_open":  # link n+1 waited for the open circuit (re-published without a retry spent)
        raw = await read_all(kafka_settings, kafka_settings.topics.fetch_requests)
        waits = [r for r in map(FetchRequest.from_bytes, raw) if r.request_id == link_next.request_id]
        assert len(waits) >= 2 and all(r.retry is None for r in waits), waits
    # The slot's entry was deleted once link n+1 was fetched; nothing of link n came back.
    assert (await store_latest(kafka_settings))[slot][1] is None
