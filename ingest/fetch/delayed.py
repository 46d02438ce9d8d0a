"""The fetcher's durable delay store: fetch requests due later wait in a compacted Kafka topic
(``payments.fetch.delayed.v1``, :attr:`TopicSettings.fetch_delayed`), not in uncommitted offsets.

Why. The processors schedule stale-payment polls hours ahead (1 m, 5 m, 15 m, 1 h, 6 h, 24 h, then daily)
as fetch requests with a future ``not_before``. Held only in memory, such a request would pin its
partition's committed offset until it ran (a restart re-reading everything behind it); lost, the payment
would never be polled again.

How.

* A request read from partition *p* of fetch.requests whose not-before is more than
  ``FetchSettings.delayed_threshold_s`` ahead is written to partition *p* of the store. Only once that write
  is committed is its source offset marked done, so the commit moves past it at once. Requests due sooner
  keep the in-memory path (the engine's heap; the offset is held until the result is published).
* Same partition number: whoever owns requests partition *p* owns store partition *p*; a rebalance moves
  both together and no entry ever has to move (ingest/fetch/delayed_topic.py keeps the partition counts).
* Writes go through one :class:`PartitionWriter` per owned partition (ingest/fetch/delayed_writer.py): Kafka
  transactions under a transactional id that belongs to the partition, so a new owner fences the previous one
  before it loads, and nothing the previous one still had queued can land after the load.
* Key (ingest/fetch/delayed_slots.py). A stale poll: ``{payment_key}|stale``, one slot per payment, holding
  the newest link of the processors' chain: the highest ``chain_version`` (within a link the latest retry),
  so a retry of an older link, re-published late by this fetcher, never replaces the link armed after it; it
  is dropped (never fetched: the chain ignores that link's result anyway). Requests without a version keep
  arrival order. Anything else: ``{payment_key}|{request_id}|{attempt}[|{retry}]``, replaced only by a copy of
  itself. A request whose key is held already goes through the store even when due soon (the slot decides,
  and a re-emitted request is kept once). Value: the FetchRequest exactly as on fetch.requests; headers name
  its source (topic, partition, offset) and when it was stored. A tombstone deletes it once done.
* On assignment the partitions stay paused while their writers fence the previous owner and their store
  partitions are read from the beginning to the end offset (own consumer, ``assign()``, read_committed);
  per key the newest request wins by the same rule (a log whose last record is an older link, written before
  this rule, gets the winner written again so compaction keeps it); the live entries join this module's
  schedule, and each is handed to the :class:`FetchEngine` ``delayed_threshold_s`` before it is due (at once
  if overdue). On revoke nothing more is decided for the partition, writes under way are awaited (bounded,
  so their offsets make the last commit), the writer is closed, and the entries leave memory (jobs not
  started are cancelled): the new owner loads them.
* When a job completes (its result or its retry acknowledged), its key gets a tombstone, but only if the
  entry is still the latest value of its key here: a newer entry (a superseding stale poll, a retry that
  reuses the key) is never deleted.

Ordering. Every write and tombstone is decided against the in-memory latest entry of its key and queued on
the partition's writer in the same step (no await in between); the writer's transactions go out one after
the other, so the topic's order per key is the order of those decisions. A failed write is sent again only
while its entry is still the latest of its key (a tombstone: while no newer entry exists), so a retry never
overwrites a newer value; a superseded write counts as stored once its successor is.

Crash analysis (SIGKILL at any point; "re-read" = read again from fetch.requests after the last commit). The
killed owner's open transaction is aborted when the next owner's writer starts, so "written" below means
committed:

1. Before the write committed: the source offset was not done, so not committed: the request is re-read and
   written again.
2. After the write, before the commit: loaded from the store at assignment AND re-read; the re-read has the
   same key and is the same poll, so it is kept once.
3. After the commit: loaded from the store at assignment and fetched when due (the "hours ahead" case).
4. Job running or result published, tombstone not written: the entry is loaded again and fetched again. A
   duplicate poll is harmless: a result is an observation the processors' join collapses (an ``ok`` fetch of
   an unchanged object even carries the same fetch id), and it re-arms the same chain link.
5. Retry re-published, tombstone not written: the entry and its retry both come back. A stale retry lands
   in the same slot and supersedes the entry (same link, one more retry); any other retry has its own key
   (its retry number): one duplicate poll, harmless.
6. A write superseded before it committed: its offset is marked done only once the superseding write is, so
   a crash in between re-reads both and ends with the newer in the slot.
7. During a load: nothing is consumed from a partition before its load finished, nothing is written or
   committed for it: the next owner (or the restart) loads again.

A replica that lost a partition without noticing (frozen past the session timeout) is fenced: its writes
fail with ``ProducerFenced`` and it drops the partition as if revoked.

Memory and load: held entries wait here, not in the engine (they do not count against ``max_pending``
until they are handed over); every entry this replica holds stays in memory (about 1 KiB each); loading
reads the store's partitions from their beginning, which compaction (segments roll hourly) keeps close to
the live entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from ingest.fetch.backoff import full_jitter_delay
from ingest.fetch.delayed_slots import Loaded, due_at, fold, replaces, same_poll, store_key
from ingest.fetch.delayed_topic import ensure_delayed_topic
from ingest.fetch.delayed_writer import PartitionWriter, transactional_id
from ingest.fetch.engine import FetchEngine, Job
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from paystream.dlq import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from paystream.errors import NormalizationError
from paystream.kafka import make_consumer, make_producer
from paystream.logs import get_logger
from paystream.metrics import (
    FETCH_DELAYED,
    FETCH_DELAYED_FENCED,
    FETCH_DELAYED_LOAD_SECONDS,
    FETCH_DELAYED_OVERDUE,
    FETCH_DELAYED_SUPERSEDED,
)
from schemas.envelopes import FetchRequest, to_rfc3339

log = get_logger(__name__)

STORED_AT = "paystream-stored-at"
REPORT_INTERVAL_S = 1.0


@dataclass(eq=False)
class _Partition:
    """One store partition while this replica owns the matching requests partition."""

    number: int
    entries: dict[str, _Entry] = field(default_factory=dict)  # key -> the latest value this replica knows
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    loaded: bool = False
    load: asyncio.Task[None] | None = None
    load_group: list[_Partition] = field(default_factory=list)  # the partitions that load reads
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # writes and tombstones under way
    writer: PartitionWriter | None = None


@dataclass(eq=False, slots=True)
class _Entry:
    key: str
    owner: _Partition
    request: FetchRequest
    due: float
    stored: asyncio.Future[None]  # resolved once the store holds this value (or its successor)
    source_offset: int | None = None
    job: Job | None = None  # set once handed to the engine
    successor: _Entry | None = None  # the entry that superseded this one

    @property
    def live(self) -> bool:
        return not self.owner.revoked.is_set() and self.owner.entries.get(self.key) is self


@dataclass(order=True, slots=True)
class _Waiting:
    release_at: float
    seq: int
    entry: _Entry = field(compare=False)


class DelayedStore:
    """Holds the requests due later durably, hands each to the engine when it is due, deletes it when done.

    Protocol with the Kafka side (ingest/fetch/service.py): :meth:`assign` / :meth:`revoke` from the
    rebalance listener, :meth:`ready` before consuming a partition, :meth:`wants` / :meth:`hold` per request.
    """

    def __init__(
        self,
        settings: Settings,
        options: FetchOptions,
        engine: FetchEngine,
        *,
        clock: Callable[[], float] = time.time,
        producer_factory: Callable[..., AIOKafkaProducer] = make_producer,
    ) -> None:
        self.topic = settings.topics.fetch_delayed
        self._settings = settings
        self._group_id = options.group_id
        self._requests_topic = settings.topics.fetch_requests
        self._threshold = options.delayed_threshold_s
        self._producer_factory = producer_factory
        self._engine = engine
        self._clock = clock
        self._flush_s = settings.kafka.request_timeout_ms / 1000
        self._partitions: dict[int, _Partition] = {}
        self._heaps: dict[str, list[_Waiting]] = {}  # per provider, by release time
        self._dead = 0  # heap items whose entry was superseded before its release
        self._released: set[_Entry] = set()  # handed to the engine, not completed
        self._counts: Counter[str] = Counter()
        self._seq = itertools.count()
        self._load_lock = asyncio.Lock()  # one load at a time on the loader consumer
        self._wakeup = asyncio.Event()
        self._loader: AIOKafkaConsumer | None = None
        self._loops: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await ensure_delayed_topic(self._settings)
        # No group: the loader assigns itself the store partitions matching each assignment.
        self._loader = make_consumer(self._settings, group_id=None, client_suffix="fetch-delayed")
        await self._loader.start()
        self._loops = [
            asyncio.create_task(self._release_loop(), name="fetch-delayed-release"),
            asyncio.create_task(self._report_loop(), name="fetch-delayed-report"),
        ]

    async def drain(self, timeout_s: float) -> None:
        """Graceful stop: let writes and tombstones under way be committed (so their offsets commit)."""
        tasks = [task for state in self._partitions.values() for task in state.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def close(self) -> None:
        tasks = [*self._loops, *(t for s in self._partitions.values() for t in (*s.tasks, s.load) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writers = [s.writer for s in self._partitions.values() if s.writer is not None]
        await asyncio.gather(*(writer.close() for writer in writers), return_exceptions=True)
        if self._loader is not None:
            await self._loader.stop()

    # --- ownership (rebalance listener) ------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """Start loading the store partitions of newly assigned requests partitions (see :meth:`ready`)."""
        group = [_Partition(p) for p in sorted(set(partitions)) if p not in self._partitions]
        if not group:
            return
        task = asyncio.create_task(self._load(group), name="fetch-delayed-load")
        for state in group:
            self._partitions[state.number] = state
            state.load, state.load_group = task, group

    def ready(self, partition: int) -> bool:
        """Whether requests of ``partition`` may be consumed: it is ours and its store is loaded."""
        state = self._partitions.get(partition)
        return state is not None and state.loaded

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Decide nothing more for these partitions, await the writes under way (bounded: the next owner's
        fence settles the rest), close their writers, drop their entries."""
        states = [self._partitions.pop(p) for p in set(partitions) if p in self._partitions]
        if not states:
            return
        cancelled_loads = {load for state in states if (load := self._drop(state)) is not None}
        pending = [task for state in states for task in state.tasks]
        if pending:
            _done, stuck = await asyncio.wait(pending, timeout=self._flush_s)
            for task in stuck:
                task.cancel()
        await asyncio.gather(*cancelled_loads, return_exceptions=True)  # no writer starts after this
        await asyncio.gather(*(s.writer.close() for s in states if s.writer is not None), return_exceptions=True)
        self._rebuild_heaps()
        log.info("fetch_delayed_revoked", partitions=sorted(s.number for s in states))

    def _drop(self, state: _Partition) -> asyncio.Task[None] | None:
        """Nothing more is decided for ``state``; its entries leave memory, its jobs not started are dropped.
        Returns its load task if that was cancelled (every partition it reads is gone)."""
        state.revoked.set()
        for entry in state.entries.values():
            self._counts[entry.request.provider] -= 1
            if entry.job is not None:
                entry.job.cancelled = True  # not started: the engine drops it; the new owner has it
                self._released.discard(entry)
        state.entries.clear()
        if state.load is not None and not state.load.done() and all(s.revoked.is_set() for s in state.load_group):
            state.load.cancel()
            return state.load
        return None

    def _fenced(self, state: _Partition) -> None:
        """Another replica started a writer for this partition: it is theirs (the group revokes it later)."""
        if self._partitions.get(state.number) is not state:
            return  # already revoked (or a newer assignment of ours fenced an old writer)
        del self._partitions[state.number]
        self._drop(state)
        FETCH_DELAYED_FENCED.inc()
        log.warning("fetch_delayed_partition_lost", partition=state.number)
        if state.writer is not None:
            task = asyncio.create_task(state.writer.close())
            task.add_done_callback(_log_failure)

    # --- holding requests --------------------------------------------------------------------------
    def wants(self, partition: int, request: FetchRequest) -> bool:
        """Whether ``request`` goes to the store: due later than the threshold, or its key is held already
        (the slot then decides between them; a re-emitted request is kept once)."""
        if due_at(request) - self._clock() > self._threshold:
            return True
        state = self._partitions.get(partition)
        return state is not None and store_key(request) in state.entries

    async def hold(self, partition: int, offset: int, request: FetchRequest, on_stored: Callable[[], None]) -> None:
        """Write ``request`` to the store; ``on_stored`` runs once that is committed (then its source offset
        may be committed). Decided and queued at once, in the order of the calls."""
        state = self._partitions.get(partition)
        if state is None or not state.loaded or state.revoked.is_set():
            return  # revoked meanwhile: not ours, its offset is not committed, the next owner reads it
        key = store_key(request)
        current = state.entries.get(key)
        if current is not None and same_poll(current.request, request):
            _when_stored(current, on_stored)  # re-emitted: one poll, already (being) stored
            return
        if current is not None and not replaces(request, current.request):
            # An older link (e.g. its retry, re-published after the processors armed the next one): the slot
            # keeps the newer link, and this one is done once that is stored.
            self._count_superseded(request, current.request)
            _when_stored(current, on_stored)
            return
        entry = _Entry(key, state, request, due_at(request), asyncio.get_running_loop().create_future(),
                       source_offset=offset)
        if current is not None:
            self._supersede(current, entry)
        self._add(entry)
        self._spawn(state, self._confirm(entry, self._send(entry), on_stored))

    def _add(self, entry: _Entry) -> None:
        entry.owner.entries[entry.key] = entry
        provider = entry.request.provider
        self._counts[provider] += 1
        heapq.heappush(self._heaps.setdefault(provider, []),
                       _Waiting(entry.due - self._threshold, next(self._seq), entry))
        self._wakeup.set()

    def _supersede(self, current: _Entry, entry: _Entry) -> None:
        current.successor = entry
        self._counts[current.request.provider] -= 1
        if current.job is None:
            self._dead += 1
        else:
            # Not started yet: the engine drops it. Already running: it finishes; its tombstone is skipped.
            current.job.cancelled = True
            self._released.discard(current)
        self._count_superseded(current.request, entry.request)

    @staticmethod
    def _count_superseded(older: FetchRequest, newer: FetchRequest) -> None:
        if older.reason == "stale" and older.request_id != newer.request_id:
            FETCH_DELAYED_SUPERSEDED.labels(older.provider).inc()
            log.info("fetch_delayed_superseded", payment_key=older.payment_key, request_id=older.request_id,
                     chain_version=older.chain_version, by=newer.request_id, by_version=newer.chain_version)

    # --- sends (decided and queued in one step, no await in between) ---------------------------------
    def _send(self, entry: _Entry) -> asyncio.Future[None] | None:
        headers = [
            (SOURCE_TOPIC, self._requests_topic.encode()),
            (SOURCE_PARTITION, str(entry.owner.number).encode()),
            (STORED_AT, to_rfc3339(datetime.now(UTC)).encode()),
        ]
        if entry.source_offset is not None:
            headers.append((SOURCE_OFFSET, str(entry.source_offset).encode()))
        return self._queue(entry.owner, entry.key, entry.request.to_bytes(), headers)

    def _queue(self, owner: _Partition, key: str, value: bytes | None,
               headers: list[tuple[str, bytes]]) -> asyncio.Future[None] | None:
        if owner.writer is None or owner.revoked.is_set():
            return None
        return owner.writer.write(key.encode(), value, headers)

    async def _confirm(self, entry: _Entry, sent: asyncio.Future[None] | None, on_stored: Callable[[], None]) -> None:
        """Wait for the write's commit, sending it again while the entry is still the latest of its key."""
        owner, attempt = entry.owner, 0
        while True:
            if sent is not None and await _acknowledged(sent, entry.key):
                break
            if owner.revoked.is_set():
                return
            if not entry.live:  # superseded: stored once the newer value is (it is sent after this one)
                successor = entry.successor
                if successor is None or not await _until(owner, successor.stored):
                    return
                break
            attempt += 1
            if not await _pause(owner, full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)):
                return
            sent = self._send(entry) if entry.live else None
        if not entry.stored.done():
            entry.stored.set_result(None)
        on_stored()

    # --- releasing and completing --------------------------------------------------------------------
    async def _release_loop(self) -> None:
        """Hand entries to the engine ``threshold`` before they are due, earliest first over all providers;
        sleep until the next one (or until the engine has room again)."""
        while True:
            self._wakeup.clear()
            now = self._clock()
            next_at, blocked = math.inf, False
            while (heap := self._earliest()) is not None:
                if heap[0].release_at > now:
                    next_at = heap[0].release_at
                    break
                if not self._engine.room.is_set():
                    blocked = True
                    break
                entry = heapq.heappop(heap).entry
                if not entry.live or entry.job is not None:
                    self._dead = max(0, self._dead - 1)
                    continue
                # Withdrawable: a newer link may still supersede it, so no hint may count on it.
                entry.job = self._engine.submit(entry.request, partial(self._completed, entry), withdrawable=True)
                self._released.add(entry)
            if blocked:  # the engine holds as many requests as it may: release more once it has room
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._engine.room.wait(), REPORT_INTERVAL_S)
                continue
            timeout = None if next_at == math.inf else max(0.0, next_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _earliest(self) -> list[_Waiting] | None:
        """The provider heap whose next entry is released first (None when all are empty)."""
        heaps = [heap for heap in self._heaps.values() if heap]
        return min(heaps, key=lambda heap: heap[0].release_at) if heaps else None

    def _completed(self, entry: _Entry) -> None:
        """The engine's ``on_done``: the result (or retry) of this entry's job was acknowledged."""
        self._released.discard(entry)
        if not entry.owner.revoked.is_set():
            self._spawn(entry.owner, self._tombstone(entry))

    async def _tombstone(self, entry: _Entry) -> None:
        owner = entry.owner
        if not await _until(owner, entry.stored):  # a tombstone must never overtake its own write
            return
        if not entry.live:
            return  # superseded meanwhile: the newer value stays
        del owner.entries[entry.key]
        self._counts[entry.request.provider] -= 1
        sent = self._queue(owner, entry.key, None, [])
        attempt = 0
        while not (sent is not None and await _acknowledged(sent, entry.key)):
            attempt += 1
            if owner.revoked.is_set() or not await _pause(owner, full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)):
                return
            if entry.key in owner.entries:
                return  # a newer value was queued after the failed tombstone: it must stay
            sent = self._queue(owner, entry.key, None, [])

    # --- loading ---------------------------------------------------------------------------------------
    async def _load(self, group: list[_Partition]) -> None:
        started, attempt = time.monotonic(), 0
        while True:
            try:
                # Fence first: nothing the previous owner still had queued can land after the read.
                await asyncio.gather(*(self._start_writer(s) for s in group if s.writer is None))
                found = await self._read([s.number for s in group])
                break
            except Exception as exc:  # retried: until it is loaded, the partition is not consumed at all
                attempt += 1
                delay = full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)
                log.warning("fetch_delayed_load_retry", error=repr(exc), delay_s=round(delay, 2))
                await asyncio.sleep(delay)
        loop, count = asyncio.get_running_loop(), 0
        for state in group:
            if state.revoked.is_set():
                continue
            for key, loaded in found[state.number].items():
                try:
                    request = loaded.request or FetchRequest.from_bytes(loaded.raw)
                    due = due_at(request)
                except NormalizationError as exc:
                    log.error("fetch_delayed_entry_malformed", partition=state.number, key=key, error=str(exc))
                    continue
                stored: asyncio.Future[None] = loop.create_future()
                entry = _Entry(key, state, request, due, stored, source_offset=loaded.source_offset)
                self._add(entry)
                if loaded.rewrite:
                    self._spawn(state, self._confirm(entry, self._send(entry), lambda: None))
                else:
                    stored.set_result(None)
                count += 1
            state.loaded = True
        seconds = time.monotonic() - started
        FETCH_DELAYED_LOAD_SECONDS.observe(seconds)
        log.info("fetch_delayed_loaded", partitions=[s.number for s in group if s.loaded], entries=count,
                 seconds=round(seconds, 3))

    async def _start_writer(self, state: _Partition) -> None:
        writer = PartitionWriter(
            self._settings, self.topic, state.number, transactional_id(self._group_id, self.topic, state.number),
            on_fenced=partial(self._fenced, state), producer_factory=self._producer_factory,
        )
        await writer.start()
        if state.revoked.is_set():
            await writer.close()
            return
        state.writer = writer

    async def _read(self, partitions: list[int]) -> dict[int, dict[str, Loaded]]:
        """The newest value of every live key of these store partitions, from the beginning to the end."""
        consumer = self._loader
        assert consumer is not None, "start() first"
        async with self._load_lock:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            found: dict[int, dict[str, Loaded]] = {p: {} for p in partitions}
            remaining = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batches.items():
                    latest = found[tp.partition]
                    for record in records:
                        if record.key is not None:
                            fold(latest, record.key.decode(), record.value, _source_offset(record.headers))
                remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
            consumer.pause(*tps)  # read once: no prefetching of what this replica writes from now on
            return found

    # --- bookkeeping -----------------------------------------------------------------------------------
    def _spawn(self, owner: _Partition, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        owner.tasks.add(task)
        task.add_done_callback(owner.tasks.discard)
        task.add_done_callback(_log_failure)

    def _rebuild_heaps(self) -> None:
        """Drop heap items of entries that are gone (revoked or superseded)."""
        for provider, heap in self._heaps.items():
            kept = [item for item in heap if item.entry.live and item.entry.job is None]
            heapq.heapify(kept)
            self._heaps[provider] = kept
        self._dead = 0

    async def _report_loop(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(REPORT_INTERVAL_S)

    def report(self) -> None:
        """Refresh the gauges (held requests, oldest overdue) and compact the heaps when mostly dead."""
        if self._dead > max(1000, sum(len(h) for h in self._heaps.values()) // 2):
            self._rebuild_heaps()
        oldest: dict[str, float] = {}
        for provider, heap in self._heaps.items():
            while heap and not (heap[0].entry.live and heap[0].entry.job is None):
                heapq.heappop(heap)
                self._dead = max(0, self._dead - 1)
            if heap:
                oldest[provider] = heap[0].entry.due
        for entry in self._released:
            provider = entry.request.provider
            oldest[provider] = min(oldest.get(provider, math.inf), entry.due)
        now = self._clock()
        for provider in {*self._counts, *oldest}:
            FETCH_DELAYED.labels(provider).set(self._counts[provider])
            FETCH_DELAYED_OVERDUE.labels(provider).set(max(0.0, now - oldest.get(provider, now)))

    def held(self) -> dict[str, FetchRequest]:
        """Every entry this replica holds, by store key (for tests and debugging)."""
        return {key: entry.request for state in self._partitions.values() for key, entry in state.entries.items()}


# --- small helpers -----------------------------------------------------------------------------------------
async def _acknowledged(sent: asyncio.Future[None], key: str) -> bool:
    try:
        await sent
    except KafkaError as exc:
        log.warning("fetch_delayed_write_failed", key=key, error=repr(exc))
        return False
    return True


async def _until(owner: _Partition, future: asyncio.Future[None]) -> bool:
    """Wait for ``future``; False as soon as ``owner`` is revoked first."""
    if not future.done():
        revoked: asyncio.Future[Any] = asyncio.ensure_future(owner.revoked.wait())
        try:
            await asyncio.wait([future, revoked], return_when=asyncio.FIRST_COMPLETED)
        finally:
            revoked.cancel()
    return future.done()


async def _pause(owner: _Partition, delay_s: float) -> bool:
    """Sleep ``delay_s``; False (at once) if ``owner`` is revoked meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(owner.revoked.wait(), delay_s)
    return not owner.revoked.is_set()


def _when_stored(entry: _Entry, callback: Callable[[], None]) -> None:
    if entry.stored.done():
        callback()
    else:
        entry.stored.add_done_callback(lambda _future: callback())


def _source_offset(headers: Iterable[tuple[str, bytes]] | None) -> int | None:
    for name, value in headers or ():
        if name == SOURCE_OFFSET:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("fetch_delayed_task_failed", error=repr(task.exception()))


__all__ = ["DelayedStore", "due_at", "ensure_delayed_topic", "store_key"]
