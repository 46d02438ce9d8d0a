"""Committable offsets when requests finish out of order."""

from __future__ import annotations

from aiokafka import TopicPartition

from ingest.fetch.engine import Job
from ingest.fetch.offsets import OffsetTracker
from schemas.envelopes import FetchRequest

TP = TopicPartition("payments.fetch.requests.v1", 0)


def _job() -> Job:
    request = FetchRequest(
        payment_key="stripe:main:payment_intent:pi_1",
        provider="stripe",
        account="main",
        object_type="payment_intent",
        object_id="pi_1",
        reason="stale",
        not_before="2024-01-01T00:00:00.000Z",
        requested_at="2024-01-01T00:00:00.000Z",
        request_id="r1",
    )
    return Job(request)


def test_commit_stops_at_the_oldest_request_in_progress() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.add(TP, offset, _job())
    tracker.done(TP, 11)
    tracker.done(TP, 12)
    assert tracker.committable() == {TP: 10}


def test_commit_moves_past_everything_once_all_are_done() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11):
        tracker.add(TP, offset, _job())
    tracker.done(TP, 10)
    tracker.done(TP, 11)
    assert tracker.committable() == {TP: 12}


def test_unchanged_offsets_are_not_committed_again() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 5)
    tracker.committed(tracker.committable())
    assert tracker.committable() == {}


def test_forgotten_partitions_cancel_their_waiting_jobs() -> None:
    tracker = OffsetTracker()
    job = _job()
    tracker.add(TP, 3, job)
    tracker.forget([TP])
    assert job.cancelled
    assert tracker.committable() == {}


def test_a_pending_offset_without_a_job_holds_the_commit_until_done() -> None:
    # A delayed request: in progress until the delayed store acknowledged it, not until it is fetched.
    tracker = OffsetTracker()
    tracker.pending(TP, 7)
    tracker.add(TP, 8, _job())
    tracker.done(TP, 8)
    assert tracker.committable() == {TP: 7}
    tracker.done(TP, 7)
    assert tracker.committable() == {TP: 9}


def test_forgetting_a_pending_offset_cancels_nothing_and_drops_it() -> None:
    tracker = OffsetTracker()
    job = _job()
    tracker.pending(TP, 1)
    tracker.add(TP, 2, job)
    tracker.forget([TP])
    assert job.cancelled
    assert tracker.committable() == {}


def test_a_hold_keeps_the_commit_before_hints_left_in_the_topic_and_moves_with_their_reread() -> None:
    tracker = OffsetTracker()
    tracker.hold(TP, "hints:mollie:main", 2)  # offset 2 on: hints left in the topic
    for offset in range(6):
        tracker.add(TP, offset)  # everything else read meanwhile is done
    assert tracker.committable() == {TP: 2}
    job = _job()
    tracker.add(TP, 2, job)  # read again: hint 2 is fetched now; the rest still waits from 4 on
    tracker.hold(TP, "hints:mollie:main", 4)
    assert tracker.committable() == {TP: 2}
    tracker.done(TP, 2)
    assert tracker.committable() == {TP: 4}
    tracker.release(TP, "hints:mollie:main")  # read through
    assert tracker.committable() == {TP: 6}
    tracker.hold(TP, "hints:mollie:main", 7)
    tracker.forget([TP])  # revoked: the next owner reads from the last commit
    assert tracker.committable() == {}
