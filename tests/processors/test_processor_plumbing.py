"""The processor's delivery plumbing with fakes at the faust seams: changelog waits, manual-ack batches and
the guard against acknowledging skipped events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from processors import faust_fixes
from processors.batching import acked_batches
from processors.changelog import ChangelogWaiter


class FakeTable:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[Any, Any]] = []

    def send_changelog(self, partition: Any, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sent.append((key, value))
        if self.failures:
            self.failures -= 1
            future.set_exception(ConnectionError("broker away"))
        else:
            future.set_result("ok")
        return future


async def test_changelog_waiter_repeats_failed_sends_until_acknowledged() -> None:
    waiter, table = ChangelogWaiter(), FakeTable(failures=1)
    waiter.watch(table)
    table.send_changelog(None, b"k", b"v")
    await waiter.written()
    assert table.sent == [(b"k", b"v"), (b"k", b"v")]
    assert not waiter.pending


class FakeStream:
    """What acked_batches uses of a faust stream: noack(), events(), channel.empty(), ack()."""

    def __init__(self, events: list[str], waiting_after: set[str]) -> None:
        self._events = events
        self._waiting_after = waiting_after  # after these events, more are "waiting" in the channel
        self.current: str | None = None
        self.acked: list[str] = []
        self.channel = SimpleNamespace(empty=lambda: self.current not in self._waiting_after)
        # no committed offset and no log start known: the order gate lets everything through
        self.app = SimpleNamespace(consumer=SimpleNamespace(_committed_offset={}, _unacked_messages=set()),
                                   consumer_generation_id=1)

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        for offset, name in enumerate(self._events):
            self.current = name
            yield SimpleNamespace(name=name, message=SimpleNamespace(tp=TP("t", 0), offset=offset))

    async def ack(self, event: Any) -> None:
        self.acked.append(event.name)


async def test_batches_end_when_nothing_waits_and_are_acked_only_after_use() -> None:
    stream = FakeStream(["a", "b", "c", "d"], waiting_after={"a", "b"})
    seen: list[tuple[list[str], list[str]]] = []
    async for batch in acked_batches(stream, max_size=10):
        seen.append(([event.name for event in batch], list(stream.acked)))
    assert seen == [(["a", "b", "c"], []), (["d"], ["a", "b", "c"])]
    assert stream.acked == ["a", "b", "c", "d"]


async def test_batches_are_capped() -> None:
    stream = FakeStream(["a", "b", "c"], waiting_after={"a", "b", "c"})
    batches = [[event.name for event in batch] async for batch in acked_batches(stream, max_size=2)]
    assert batches == [["a", "b"]]  # "c" waits for more (the fake channel never empties)


def fake_event(topic: str) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=0, offset=7))


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(faust_fixes, "_original_event_ack", lambda event: calls.append(event) or True)
    monkeypatch.setattr(faust_fixes, "_guarded_topics", {"inbox"})
    return calls


def test_skip_ack_on_a_guarded_topic_is_ignored(acks: list[Any]) -> None:
    event = fake_event("inbox")
    assert faust_fixes._ack_unless_skipped(event) is False
    assert acks == []


def test_ack_of_a_processed_event_goes_through(acks: list[Any]) -> None:
    event = fake_event("inbox")
    faust_fixes.mark_processed(event)
    assert faust_fixes._ack_unless_skipped(event) is True
    assert acks == [event]


def test_other_topics_are_acked_as_faust_does(acks: list[Any]) -> None:
    event = fake_event("some-changelog")
    assert faust_fixes._ack_unless_skipped(event) is True
    assert acks == [event]


class PendingTable:
    """A table whose changelog sends stay in flight until the test settles them."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[str]] = []

    def send_changelog(self, partition: Any, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_a_second_waiter_still_waits_for_writes_another_waiter_is_awaiting() -> None:
    waiter, table = ChangelogWaiter(), PendingTable()
    waiter.watch(table)
    table.send_changelog(None, b"k", b"v")
    first = asyncio.create_task(waiter.written())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter.written())  # e.g. the agent that wrote b"k"
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done()
    table.futures[0].set_result("ok")
    await asyncio.gather(first, second)
    assert not waiter.pending


class FakeConsumer:
    """The attributes of faust's Consumer that the commit-offset replacement reads."""

    def __init__(self, acked: list[int], committed: int | None, log_start: int | None) -> None:
        tp = "inbox-0"
        self.tp = tp
        self._acked = {tp: list(acked)}
        self._acked_index = {tp: set(acked)}
        self._gap = {tp: None}
        self._committed_offset = {tp: committed}
        if log_start is not None:
            faust_fixes._log_start(self)[tp] = log_start


@pytest.mark.parametrize(("acked", "committed", "log_start", "expected"), [
    ([0, 1, 2], None, 0, 3),        # nothing committed yet: the run starts at the partition's log start
    ([1, 2], None, 0, None),        # ... and offset 0 is not processed yet (faust would commit 3)
    ([2, 3], None, None, None),     # no committed offset and no known log start: no commit
    ([10, 11, 13], 10, None, 12),   # the run stops at the hole before 13
    ([11, 12], 10, None, None),     # offset 10, the next to commit, is missing (faust would commit 13)
    ([3, 4], 0, 3, None),           # a committed 0 is a real start, not "unknown"
])
def test_the_commit_offset_never_passes_an_unprocessed_record(
    acked: list[int], committed: int | None, log_start: int | None, expected: int | None,
) -> None:
    consumer = FakeConsumer(acked, committed, log_start)
    assert faust_fixes._new_offset_without_holes(consumer, consumer.tp) == expected


def test_install_selects_the_stream_iterator_whose_skips_go_through_event_ack() -> None:
    import faust.streams

    faust_fixes.install(set())
    assert faust.streams._CStreamIterator is None  # the compiled one acks skipped events inline
    assert faust.events.Event.ack is faust_fixes._ack_unless_skipped


class StuckConsumer:
    """The attributes of faust's Consumer that the dropped-record check reads; records its seeks."""

    def __init__(self, *, committed: int, highwater: int, acked: set[int] | None = None) -> None:
        self.tp = TP("inbox", 0)
        self._committed_offset = {self.tp: committed}
        self._acked_index = {self.tp: set(acked or ())}
        self._unacked_messages: set[Any] = set()
        self.flow_active = True
        self._highwater = highwater
        self.seeks: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return {self.tp}

    def highwater(self, tp: Any) -> int:
        return self._highwater

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


@pytest.fixture
def idle_agents(monkeypatch: pytest.MonkeyPatch) -> faust_fixes.AgentActivity:
    activity = faust_fixes.AgentActivity()
    monkeypatch.setattr(faust_fixes, "ACTIVITY", activity)
    monkeypatch.setattr(faust_fixes, "_guarded_topics", {"inbox"})
    return activity


async def test_a_record_dropped_while_agents_idle_is_fetched_again_on_the_second_look(
    idle_agents: faust_fixes.AgentActivity,
) -> None:
    consumer, check = StuckConsumer(committed=4, highwater=9), faust_fixes.DroppedRecordCheck()
    assert await check(consumer) == 0  # first sighting: only suspected
    assert await check(consumer) == 1
    assert consumer.seeks == [(consumer.tp, 4)]


async def test_no_refetch_while_an_agent_is_busy(idle_agents: faust_fixes.AgentActivity) -> None:
    consumer, check = StuckConsumer(committed=4, highwater=9), faust_fixes.DroppedRecordCheck()
    idle_agents.busy = 1
    assert await check(consumer) == 0
    assert await check(consumer) == 0
    assert consumer.seeks == []


@pytest.mark.parametrize(("committed", "highwater", "acked"), [
    (9, 9, set()),   # caught up
    (4, 9, {4}),     # processed, waiting for the next commit
])
async def test_no_refetch_when_nothing_is_missing(
    idle_agents: faust_fixes.AgentActivity, committed: int, highwater: int, acked: set[int],
) -> None:
    consumer = StuckConsumer(committed=committed, highwater=highwater, acked=acked)
    check = faust_fixes.DroppedRecordCheck()
    for _ in range(3):
        assert await check(consumer) == 0


async def test_the_order_gate_holds_back_records_after_a_missing_one_and_seeks_to_it() -> None:
    tp = TP("inbox", 0)
    seeks: list[tuple[Any, int]] = []

    async def seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    consumer = SimpleNamespace(_committed_offset={tp: 5}, _unacked_messages=SimpleNamespace(discard=lambda m: None),
                               seek=seek)
    gate = faust_fixes.OrderGate(consumer, SimpleNamespace(consumer_generation_id=1))
    arrivals = [5, 7, 8, 6, 7, 8, 6]  # 6 dropped once, then everything from 6 delivered again
    admitted = [offset for offset in arrivals
                if await gate.admit(SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset)))]
    assert admitted == [5, 6, 7, 8, 6]  # in order; a repeat below the gate passes (idempotent)
    assert seeks == [(tp, 6)]  # once per missing offset
