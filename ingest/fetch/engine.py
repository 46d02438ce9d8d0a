"""The scheduling core of the fetcher, independent of Kafka.

Requests wait in one heap ordered by their not-before time; a dispatcher sleeps until the earliest one is
due (no polling loop) and moves it to its provider account's queue; each account has its own worker tasks.
So a request waiting for later, or a provider that is slow, rate limited or failing, never holds up the
others. What happens with each decision (publish a result, re-publish a retry) is the sink's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ingest.fetch.lane import Decision, ProviderLane
from ingest.fetch.options import FetchOptions
from paystream.logs import get_logger
from paystream.metrics import FETCH_QUEUE_DEPTH
from schemas.envelopes import FetchRequest, from_rfc3339

log = get_logger(__name__)


class DecisionSink(Protocol):
    async def deliver(self, decision: Decision) -> None:
        """Publish the result or re-publish the retry; return only once Kafka acknowledged it."""


@dataclass(eq=False, slots=True)
class Job:
    request: FetchRequest
    on_done: Callable[[], None] | None = None
    cancelled: bool = False  # its partition went to another consumer: drop it unprocessed


@dataclass(order=True, slots=True)
class _Waiting:
    due: float
    seq: int
    job: Job = field(compare=False)


class FetchEngine:
    def __init__(
        self,
        lanes: Mapping[tuple[str, str], ProviderLane],
        sink: DecisionSink,
        options: FetchOptions,
        *,
        fallback_lane: Callable[[str, str], ProviderLane],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lanes = dict(lanes)
        self._fallback_lane = fallback_lane
        self._sink = sink
        self._options = options
        self._clock = clock
        self._heap: list[_Waiting] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._queues: dict[tuple[str, str], asyncio.Queue[Job]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.pending = 0  # submitted and not yet done
        self.room = asyncio.Event()
        self.room.set()

    # --- input -------------------------------------------------------------------------------------
    def submit(self, request: FetchRequest, on_done: Callable[[], None] | None = None) -> Job:
        job = Job(request, on_done)
        due = from_rfc3339(request.not_before).timestamp()
        heapq.heappush(self._heap, _Waiting(due, next(self._seq), job))
        FETCH_QUEUE_DEPTH.labels(request.provider).inc()
        self.pending += 1
        if self.pending >= self._options.max_pending:
            self.room.clear()
        self._wakeup.set()
        return job

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for key in self._lanes:
            self._start_lane(key)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="fetch-dispatcher")

    def _start_lane(self, key: tuple[str, str]) -> asyncio.Queue[Job]:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        self._queues[key] = queue
        lane = self._lanes[key]
        for index in range(self._options.in_flight_per_provider if lane.client else 1):
            task = asyncio.create_task(self._work(lane, queue), name=f"fetch-{key[0]}-{key[1]}-{index}")
            self._workers.append(task)
        return queue

    async def stop(self) -> None:
        """Take no new work; let calls already under way finish and deliver (within the grace period).
        Jobs not started stay undone: their offsets are not committed and they are read again."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for task in self._workers:
            if task not in self._busy:
                task.cancel()
        if self._workers:
            _done, still_running = await asyncio.wait(self._workers, timeout=self._options.shutdown_grace_s)
            for task in still_running:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)

    # --- the two loops -----------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            self._wakeup.clear()
            now = self._clock()
            while self._heap and self._heap[0].due <= now:
                job = heapq.heappop(self._heap).job
                FETCH_QUEUE_DEPTH.labels(job.request.provider).dec()
                if job.cancelled:
                    self._finish(job, mark_done=False)
                    continue
                key = (job.request.provider, job.request.account)
                if key not in self._lanes:
                    self._lanes[key] = self._fallback_lane(*key)
                    self._start_lane(key)
                self._queues[key].put_nowait(job)
            timeout = self._heap[0].due - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _work(self, lane: ProviderLane, queue: asyncio.Queue[Job]) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            job = await queue.get()
            if job.cancelled:
                self._finish(job, mark_done=False)
                continue
            self._busy.add(task)
            try:
                decision = await lane.execute(job.request)
                await self._sink.deliver(decision)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The sink retries Kafka itself; getting here means shutdown or a bug. The job stays
                # undone, so its offset is never committed past it and it is fetched again after restart.
                log.exception("fetch_job_failed", payment_key=job.request.payment_key)
                self._finish(job, mark_done=False)
                continue
            finally:
                self._busy.discard(task)
            self._finish(job, mark_done=True)

    def _finish(self, job: Job, *, mark_done: bool) -> None:
        self.pending -= 1
        if self.pending < self._options.max_pending:
            self.room.set()
        if mark_done and job.on_done is not None:
            job.on_done()
