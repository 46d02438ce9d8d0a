"""Which offsets may be committed when requests finish out of order.

Requests of one partition finish in any order (different not-before times, different providers), so the
committable offset of a partition is the lowest offset still in progress, or one past the highest seen
when nothing is: a request is never committed before its result (or its retry) is acknowledged, nor a
delayed request before the delayed store acknowledged it (ingest/fetch/delayed.py), nor past a hint left
waiting in the topic (a hold, ingest/fetch/hints.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from ingest.fetch.engine import Job


@dataclass(slots=True)
class _PartitionProgress:
    # offset -> the engine job working on it (None: something else must finish first, e.g. a store write)
    in_progress: dict[int, Job | None] = field(default_factory=dict)
    next_offset: int | None = None  # one past the highest offset seen
    # name -> the lowest offset something else still has to read again (the commit stays at or below it)
    holds: dict[str, int] = field(default_factory=dict)


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[Any, _PartitionProgress] = {}
        self._committed: dict[Any, int] = {}

    def add(self, tp: TopicPartition, offset: int, job: Job | None = None) -> None:
        """Record ``offset`` as seen: in progress until :meth:`done` when ``job`` is given, else done."""
        progress = self._seen(tp, offset)
        if job is not None:
            progress.in_progress[offset] = job

    def pending(self, tp: TopicPartition, offset: int) -> None:
        """Record ``offset`` as in progress without an engine job (done by whoever calls :meth:`done`)."""
        self._seen(tp, offset).in_progress[offset] = None

    def _seen(self, tp: TopicPartition, offset: int) -> _PartitionProgress:
        progress = self._partitions.setdefault(tp, _PartitionProgress())
        progress.next_offset = max(progress.next_offset or 0, offset + 1)
        return progress

    def hold(self, tp: TopicPartition, name: str, offset: int) -> None:
        """Keep the commit of ``tp`` at or below ``offset`` (moving the hold called ``name`` if it exists)."""
        self._seen(tp, offset).holds[name] = offset

    def release(self, tp: TopicPartition, name: str) -> None:
        progress = self._partitions.get(tp)
        if progress is not None:
            progress.holds.pop(name, None)

    def done(self, tp: TopicPartition, offset: int) -> None:
        progress = self._partitions.get(tp)
        if progress is not None:
            progress.in_progress.pop(offset, None)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets that moved since the last call to :meth:`committed`."""
        offsets: dict[TopicPartition, int] = {}
        for tp, progress in self._partitions.items():
            if progress.next_offset is None:
                continue
            offset = min([*progress.in_progress, *progress.holds.values(), progress.next_offset])
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        return offsets

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions went to another consumer: their waiting jobs are dropped, not fetched."""
        for tp in partitions:
            progress = self._partitions.pop(tp, None)
            self._committed.pop(tp, None)
            if progress is not None:
                for job in progress.in_progress.values():
                    if job is not None:
                        job.cancelled = True
