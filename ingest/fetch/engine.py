"""The scheduling core of the fetcher, independent of Kafka.

Requests wait in one heap ordered by their not-before time; a dispatcher sleeps until the earliest one is
due (no polling loop) and moves it to its provider account's queue; each account has its own worker tasks.
So a request waiting for later, or a provider that is slow, rate limited or failing, never holds up the
others. What happens with each decision (publish a result, re-publish a retry) is the sink's business.

Hints (unsigned, anyone can send them) queue behind everything else of their account, and the engine keeps
what hint admission needs (ingest/fetch/hints.py): the jobs under way per object, so a hint for an object
already waiting for a fetch adds nothing, and a count of hint jobs per account, so their memory is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
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
    due: float = 0.0  # not-before as a POSIX timestamp
    sent_at: float | None = None  # when its call left (wall clock); None while it waits
    # The delay store may still withdraw it (a stale poll superseded by a newer link): a hint must not count
    # on it.
    withdrawable: bool = False


HINT = "hint"
# Objects whose last answered call a hint can still be matched against (about 100 B each): hints of a flood
# read again long after (ingest/fetch/hints.py) still coalesce with the fetch their object already had.
ANSWERED_REMEMBERED = 50_000
# A call the provider answered (the object, or that there is none): a hint requested before it adds nothing.
_ANSWERS: frozenset[str] = frozenset({"ok", "not_found"})
# Per-account queue priorities: hints after everything else of the account.
_FIRST, _LAST = 0, 1


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
        self._queues: dict[tuple[str, str], asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.pending = 0  # submitted and not yet done
        self.room = asyncio.Event()
        self.room.set()
        self._under_way: dict[str, list[Job]] = {}  # payment key -> its jobs submitted and not yet done
        self._hints: Counter[tuple[str, str]] = Counter()  # (provider, account) -> hint jobs not yet done
        self.hint_done = asyncio.Event()  # set whenever a hint job finishes (hint admission may go on)
        # payment key -> when the latest answered call for it left (the most recent ANSWERED_REMEMBERED)
        self._answered: OrderedDict[str, float] = OrderedDict()

    # --- input -------------------------------------------------------------------------------------
    def submit(self, request: FetchRequest, on_done: Callable[[], None] | None = None,
               *, withdrawable: bool = False) -> Job:
        due = from_rfc3339(request.not_before).timestamp()
        job = Job(request, on_done, due=due, withdrawable=withdrawable)
        heapq.heappush(self._heap, _Waiting(due, next(self._seq), job))
        FETCH_QUEUE_DEPTH.labels(request.provider).inc()
        self.pending += 1
        if self.pending >= self._options.max_pending:
            self.room.clear()
        self._under_way.setdefault(request.payment_key, []).append(job)
        if request.reason == HINT:
            self._hints[(request.provider, request.account)] += 1
        self._wakeup.set()
        return job

    def hints_held(self, provider: str, account: str) -> int:
        """Hint jobs of this account submitted and not yet done."""
        return self._hints[(provider, account)]

    def hint_accounts(self) -> list[tuple[str, str]]:
        """The accounts with hint jobs not yet done."""
        return list(self._hints)

    def covers(self, hint: FetchRequest) -> bool:
        """Whether a fetch of the hint's object makes one for the hint redundant: one not sent yet and due no
        later, or one sent after the hint was requested (its answer is at least as recent as what the hint
        announced) that is under way or was answered. A call sent before may have read the object before the
        change the hint announces, so it does not count."""
        requested_at = from_rfc3339(hint.requested_at).timestamp()
        hint_due = max(from_rfc3339(hint.not_before).timestamp(), self._clock())  # a hint is due now
        for job in self._under_way.get(hint.payment_key, ()):
            if job.cancelled or job.withdrawable:
                continue
            if job.sent_at is None and job.due <= hint_due:
                return True
            if job.sent_at is not None and job.sent_at >= requested_at:
                return True
        answered = self._answered.get(hint.payment_key)
        return answered is not None and answered >= requested_at

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for key in self._lanes:
            self._start_lane(key)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="fetch-dispatcher")

    def _start_lane(self, key: tuple[str, str]) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        queue: asyncio.PriorityQueue[tuple[int, int, Job]] = asyncio.PriorityQueue()
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
                priority = _LAST if job.request.reason == HINT else _FIRST
                self._queues[key].put_nowait((priority, next(self._seq), job))
            timeout = self._heap[0].due - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _work(self, lane: ProviderLane, queue: asyncio.PriorityQueue[tuple[int, int, Job]]) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            _priority, _seq, job = await queue.get()
            if job.cancelled:
                self._finish(job, mark_done=False)
                continue
            self._busy.add(task)
            try:
                decision = await lane.execute(job.request, partial(self._sent, job))
                await self._sink.deliver(decision)
                self._note_answer(job, decision)
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

    def _sent(self, job: Job) -> None:
        job.sent_at = self._clock()

    def _note_answer(self, job: Job, decision: Decision) -> None:
        if job.sent_at is None or decision.result is None or decision.result.outcome not in _ANSWERS:
            return
        key = job.request.payment_key
        self._answered[key] = max(job.sent_at, self._answered.get(key, job.sent_at))
        self._answered.move_to_end(key)
        if len(self._answered) > ANSWERED_REMEMBERED:
            self._answered.popitem(last=False)

    def _finish(self, job: Job, *, mark_done: bool) -> None:
        self.pending -= 1
        if self.pending < self._options.max_pending:
            self.room.set()
        request = job.request
        jobs = self._under_way.get(request.payment_key)
        if jobs is not None:
            jobs.remove(job)
            if not jobs:
                del self._under_way[request.payment_key]
        if request.reason == HINT:
            account = (request.provider, request.account)
            self._hints[account] -= 1
            if not self._hints[account]:
                del self._hints[account]
            self.hint_done.set()
        if mark_done and job.on_done is not None:
            job.on_done()
