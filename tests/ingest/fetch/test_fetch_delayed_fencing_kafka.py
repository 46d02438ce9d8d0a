"""The delay store's hand-over between owners (issue 18 #8), through the real broker: a write the previous owner
still had under way never lands after the next owner loaded the partition.

Two stores stand for two fetcher replicas; "stalled" is a producer (our seam, ``producer_factory``) whose
sends or commits wait until the test lets them go, as they would behind a slow or unreachable partition
leader. Before the fix, a write queued at revoke was awaited for a bounded time and then left in the
producer, which delivered it whenever it could: here, after the next owner had loaded the partition, so the
topic's latest value of the slot differed from what its owner held (and would load after a restart).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from fetch_helpers import MemorySink, eventually
from test_fetch_delayed_kafka import HOURS, request, store_latest
from test_fetch_service_kafka import options

from ingest.fetch.clients import build_lanes
from ingest.fetch.delayed import DelayedStore, store_key
from ingest.fetch.engine import FetchEngine
from paystream.config import Settings
from paystream.kafka import make_producer
from paystream.metrics import FETCH_DELAYED_FENCED
from schemas.envelopes import FetchRequest

pytestmark = pytest.mark.kafka

PARTITION = 0


class Stall:
    """Holds back the sends (or the commits) of the producers it made while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.released = asyncio.Event()
        self.waiting = 0  # calls held back right now

    async def wait(self) -> None:
        if self.on:
            self.waiting += 1
            try:
                await self.released.wait()
            finally:
                self.waiting -= 1

    def factory(self, what: str) -> Callable[..., AIOKafkaProducer]:
        """Producers configured as the store's own, whose ``what`` ("send" or "commit") waits while ``on``."""

        def make(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
            return cast(AIOKafkaProducer, _Stalled(make_producer(settings, **overrides), self, what))

        return make


class _Stalled:
    """A real producer whose sends or commits wait for the test first (everything else goes straight to it)."""

    def __init__(self, producer: AIOKafkaProducer, stall: Stall, what: str) -> None:
        self._producer, self._stall, self._what = producer, stall, what

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if self._what == "send":
            await self._stall.wait()
        return await self._producer.send(*args, **kwargs)

    async def commit_transaction(self) -> None:
        if self._what == "commit":
            await self._stall.wait()
        await self._producer.commit_transaction()


@pytest.fixture
async def stores(
    kafka_settings: Settings, settings_with: Callable[..., Settings]
) -> AsyncIterator[Callable[..., DelayedStore]]:
    """Stores of one fetcher group (the same transactional ids), each with an engine that is never started:
    every request here is due hours ahead, nothing is fetched."""
    settings = settings_with(kafka_settings)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"request_timeout_ms": 2000})})
    opts = options(group_id=f"fetch-fence-{uuid.uuid4().hex[:8]}", delayed_threshold_s=1.0)
    made: list[DelayedStore] = []
    lanes = build_lanes(settings, opts)

    async def make(producer_factory: Callable[..., AIOKafkaProducer] = make_producer) -> DelayedStore:
        engine = FetchEngine(lanes.by_account, MemorySink(), opts, fallback_lane=lanes.unsupported)
        store = DelayedStore(settings, opts, engine, producer_factory=producer_factory)
        await store.start()
        made.append(store)
        return store

    yield make  # type: ignore[misc]
    for store in made:
        await store.close()
    await lanes.close()


async def hold(store: DelayedStore, offset: int, poll: FetchRequest) -> asyncio.Event:
    """Hand ``poll`` to the store as read at ``offset``; the event is set once the store committed it."""
    stored = asyncio.Event()
    await store.hold(PARTITION, offset, poll, stored.set)
    return stored


async def owning(store: DelayedStore) -> None:
    store.assign([PARTITION])
    await eventually(lambda: store.ready(PARTITION), within_s=60)


async def test_a_write_under_way_at_revoke_never_lands_after_the_next_owner_loaded(
    kafka_settings: Settings, stores: Callable[..., Any]
) -> None:
    stall = Stall()
    first = await stores(stall.factory("send"))
    await owning(first)
    older = request("pi_handover", delay_s=6 * HOURS)
    await asyncio.wait_for((await hold(first, 0, older)).wait(), 30)

    stall.on = True  # the partition's leader stops taking this replica's writes
    newer = request("pi_handover", delay_s=7 * HOURS)
    stored = await hold(first, 1, newer)
    await eventually(lambda: stall.waiting == 1)
    await first.revoke([PARTITION])  # bounded: returns with the write still under way
    assert not stored.is_set() and not first.ready(PARTITION)

    second = await stores()
    await owning(second)
    assert second.held() == {store_key(older): older}  # `newer` was never stored: its offset (1) is read again
    stall.released.set()  # the leader is back
    await asyncio.sleep(3.0)  # time for the late write to land, if it still could

    latest = await store_latest(kafka_settings)
    assert latest[store_key(older)][1] == older, "the revoked owner's write landed after the next owner's load"
    assert second.held() == {store_key(older): older}
    assert not stored.is_set()


async def test_a_zombie_owner_is_fenced_and_its_open_transaction_never_becomes_visible(
    kafka_settings: Settings, stores: Callable[..., Any]
) -> None:
    fenced_before = FETCH_DELAYED_FENCED._value.get()
    stall = Stall()
    zombie = await stores(stall.factory("commit"))
    await owning(zombie)
    older = request("pi_zombie", delay_s=6 * HOURS)
    await asyncio.wait_for((await hold(zombie, 0, older)).wait(), 30)

    stall.on = True  # the zombie's next transaction is sent, its commit held back (e.g. it froze)
    newer = request("pi_zombie", delay_s=7 * HOURS)
    stored = await hold(zombie, 1, newer)
    await eventually(lambda: stall.waiting == 1)

    # The group gave the partition to another replica; the zombie was never told (no revoke).
    successor = await stores()
    await owning(successor)  # its writer fenced the zombie's: the open transaction is aborted
    assert successor.held() == {store_key(older): older}
    stall.released.set()  # the zombie wakes up and commits
    await eventually(lambda: not zombie.ready(PARTITION), within_s=30)  # fenced: it let the partition go

    assert not stored.is_set()
    assert zombie.held() == {}
    assert FETCH_DELAYED_FENCED._value.get() == fenced_before + 1
    latest = await store_latest(kafka_settings)
    assert latest[store_key(older)][1] == older, "the zombie's write became visible"
    # The successor goes on writing to the partition as its owner.
    newest = request("pi_zombie", delay_s=8 * HOURS)
    await asyncio.wait_for((await hold(successor, 2, newest)).wait(), 30)
    assert (await store_latest(kafka_settings))[store_key(newest)][1] == newest
