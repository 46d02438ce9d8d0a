"""The processor's delivery plumbing with fakes at the faust seams: changelog waits, manual-ack batches and
the guard against acknowledging skipped events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

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
    assert waiter.pending == []


class FakeStream:
    """What acked_batches uses of a faust stream: noack(), events(), channel.empty(), ack()."""

    def __init__(self, events: list[str], waiting_after: set[str]) -> None:
        self._events = events
        self._waiting_after = waiting_after  # after these events, more are "waiting" in the channel
        self.current: str | None = None
        self.acked: list[str] = []
        self.channel = SimpleNamespace(empty=lambda: self.current not in self._waiting_after)

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        for name in self._events:
            self.current = name
            yield SimpleNamespace(name=name)

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
    return SimpleNamespace(message=SimpleNamespace(topic=topic))


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
