"""The fetcher's durable delay store: fetch requests due later wait in a compacted Kafka topic
(``payments.fetch.delayed.v1``, :attr:`TopicSettings.fetch_delayed`), not in uncommitted offsets.

Why. The processors schedule stale-payment polls hours ahead (1 m, 5 m, 15 m, 1 h, 6 h, 24 h, then daily)
as fetch requests with a future ``not_before``. Held only in memory, such a request would pin its
partition's committed offset until it ran (a restart re-reading everything behind it); lost, the payment
would never be polled again.

How.

* A request read from partition *p* of fetch.requests whose not-before is more than
  ``FetchSettings.delayed_threshold_s`` ahead is written to partition *p* of the store (acks=all,
  idempotent producer, explicit partition). Only once that write is acknowledged is its source offset
  marked done, so the commit moves past it at once. Requests due sooner keep the in-memory path (the
  engine's heap; the offset is held until the result is published).
* Same partition number: whoever owns requests partition *p* owns store partition *p*; a rebalance moves
  both together and no entry ever has to move. The store has at least as many partitions (checked at start:
  the fetcher creates it with the requests topic's count when it is missing, and adds partitions when the
  requests topic has more).
* Key. A stale poll: ``{payment_key}|stale``, one slot per payment. The processors' chain only needs its
  latest link, so a newer stale request overwrites (supersedes) the older one, which is then never
  fetched. Anything else (e.g. a retry re-published with a backoff): ``{payment_key}|{request_id}|{attempt}``,
  replaced only by a copy of itself. A request whose key is held already goes through the store even when
  due soon: a stale poll then supersedes, and a re-emitted request (same id, attempt and not-before) is
  kept once. Value: the FetchRequest exactly as on fetch.requests; headers name its source (topic,
  partition, offset) and when it was stored. A tombstone deletes it once done.
* On assignment the partitions stay paused while their store partitions are read from the beginning to the
  end offset (own consumer, ``assign()``, read_committed); the live entries join this module's schedule, and
  each is handed to the :class:`FetchEngine` ``delayed_threshold_s`` before it is due (at once if overdue).
  On revoke, sends already under way are awaited (bounded), nothing more is sent for the partition, and
  its entries leave memory (jobs not started are cancelled): the new owner loads them.
* When a job completes (its result or its retry acknowledged), its key gets a tombstone, but only if the
  entry is still the latest value of its key here: a newer entry (a superseding stale poll, a retry that
  reuses the key) is never deleted.

Ordering. Every write and tombstone is decided against the in-memory latest entry of its key and handed to
the producer under one lock; the idempotent producer keeps the order of one partition, so the topic's order
per key is the order of those decisions. A failed send is retried only while its entry is still the latest
of its key (a tombstone: while no newer entry exists), so a retry never overwrites a newer value; a
superseded write counts as stored once its successor is.

Crash analysis (SIGKILL at any point; "re-read" = read again from fetch.requests after the last commit):

1. Before the store acknowledged a write: the source offset was not done, so not committed: the request is
   re-read and written again (or, if the write did land, found loaded and kept once, as in 2).
2. After the write, before the commit: loaded from the store at assignment AND re-read; the re-read has the
   same key and is the same poll, so it is kept once.
3. After the commit: loaded from the store at assignment and fetched when due (the "hours ahead" case).
4. Job running or result published, tombstone not written: the entry is loaded again and fetched again. A
   duplicate poll is harmless: a result is an observation the processors' join collapses (an ``ok`` fetch of
   an unchanged object even carries the same fetch id), and it re-arms the same chain link.
5. Retry re-published, tombstone not written: the entry and its retry both come back. A stale retry lands
   in the same slot and supersedes the entry; any other retry has its own key (attempt + 1): one duplicate
   poll, harmless.
6. A write superseded before it was acknowledged: its offset is marked done only once the superseding
   write is, so a crash in between re-reads both and ends with the newer in the slot.
7. During a load: nothing is consumed from a partition before its load finished, nothing is written or
   committed for it: the next owner (or the restart) loads again.

Residual risk: a zombie replica (one that lost its partitions without noticing, e.g. frozen beyond the
session timeout) could still send to a store partition its new owner has loaded. Sends under way are
awaited at revoke, so only a zombie can do this: its late write could put an older poll back in a slot,
its late tombstone could delete a newer entry that the new owner still holds in memory (and fetches) but
would not find again after its own restart. Fencing that would take Kafka transactions.

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
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from ingest.fetch.backoff import full_jitter_delay
from ingest.fetch.engine import FetchEngine, Job
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from paystream.dlq import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from paystream.errors import ConfigurationError, InfrastructureError, NormalizationError
from paystream.kafka import connection_options, make_consumer
from paystream.logs import get_logger
from paystream.metrics import (
    FETCH_DELAYED,
    FETCH_DELAYED_LOAD_SECONDS,
    FETCH_DELAYED_OVERDUE,
    FETCH_DELAYED_SUPERSEDED,
)
from schemas.envelopes import FetchRequest, from_rfc3339, to_rfc3339

log = get_logger(__name__)

STORED_AT = "paystream-stored-at"
# Compaction only reaches closed segments: rolling them hourly keeps the topic (and the read at assignment)
# close to the live entries instead of a week or a GiB of superseded and deleted ones.
SEGMENT_MS = 3600 * 1000
REPORT_INTERVAL_S = 1.0
METADATA_WAIT_S = 10.0


def store_key(request: FetchRequest) -> str:
    """One slot per payment for stale polls (the newest supersedes); its own key for anything else."""
    if request.reason == "stale":
        return f"{request.payment_key}|stale"
    return f"{request.payment_key}|{request.request_id}|{request.attempt}"


def due_at(request: FetchRequest) -> float:
    """The request's not-before time as a POSIX timestamp."""
    try:
        return from_rfc3339(request.not_before).timestamp()
    except (TypeError, ValueError) as exc:
        raise NormalizationError(f"fetch request: bad not_before {request.not_before!r}",
                                 reason="malformed_envelope") from exc


def _same_poll(a: FetchRequest, b: FetchRequest) -> bool:
    """A re-emitted request (same id, attempt and time) is the poll already held, not a new one."""
    return (a.request_id, a.attempt, a.not_before) == (b.request_id, b.attempt, b.not_before)


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


async def ensure_delayed_topic(settings: Settings) -> int:
    """Create the store (compacted, as many partitions as fetch.requests) if it is missing, or add partitions
    when it has fewer than fetch.requests; return its partition count.

    Adding partitions is safe: store partition *p* keeps meaning requests partition *p*, and the new ones are
    empty because requests of those partitions could not be held before. Without the right to do it (e.g.
    no Alter ACL), the fetcher refuses to start: those requests would have nowhere to be held.
    """
    topics = settings.topics
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id=f"{settings.kafka.client_id}-admin")
    try:
        await admin.start()
        counts = await _partition_counts(admin)
        wanted = counts.get(topics.fetch_requests, topics.partitions)
        found = counts.get(topics.fetch_delayed)
        if found is not None and found >= wanted:
            return found
        if found is None:
            await _create(admin, settings, wanted)
        # A topic (or partitions) just created reach the broker's metadata a moment later, and adding
        # partitions to a topic that is itself still being created is refused: try again until the deadline.
        deadline = time.monotonic() + METADATA_WAIT_S
        while (have := (await _partition_counts(admin)).get(topics.fetch_delayed, 0)) < wanted:
            if time.monotonic() > deadline:
                break
            if have:
                await _grow(admin, topics.fetch_delayed, have, wanted)
            await asyncio.sleep(0.2)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot check the delayed store {topics.fetch_delayed}: {exc!r}") from exc
    finally:
        await admin.close()
    if have < wanted:
        raise ConfigurationError(
            f"{topics.fetch_delayed} has {have} partitions, {topics.fetch_requests} has {wanted}: the delayed "
            f"store needs at least as many (add partitions to {topics.fetch_delayed})"
        )
    return have


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # Metadata of every topic: naming one that does not exist could have the broker auto-create it.
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}


async def _create(admin: AIOKafkaAdminClient, settings: Settings, partitions: int) -> None:
    name, rf = settings.topics.fetch_delayed, settings.topics.replication_factor
    spec = NewTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=rf,
        topic_configs={"cleanup.policy": "compact", "min.insync.replicas": str(min(2, rf)),
                       "segment.ms": str(SEGMENT_MS)},
    )
    try:
        response = await admin.create_topics([spec])
    except TopicAlreadyExistsError:
        return
    for topic_error in response.topic_errors:
        code = topic_error[1]
        if code not in (0, TopicAlreadyExistsError.errno):  # another replica winning the race is fine
            raise InfrastructureError(f"cannot create {name}: {for_code(code).__name__} ({topic_error[2:]})")
    log.info("topics_created", topics=[name], partitions=partitions)


async def _grow(admin: AIOKafkaAdminClient, name: str, have: int, wanted: int) -> None:
    try:
        await admin.create_partitions({name: NewPartitions(total_count=wanted)})
    except KafkaError as exc:  # e.g. not authorized, or another replica grew it first
        log.warning("fetch_delayed_grow_failed", topic=name, partitions=have, wanted=wanted, error=repr(exc))
        return
    log.warning("fetch_delayed_grown", topic=name, partitions_before=have, partitions=wanted)


class DelayedStore:
    """Holds the requests due later durably, hands each to the engine when it is due, deletes it when done.

    Protocol with the Kafka side (ingest/fetch/service.py): :meth:`assign` / :meth:`revoke` from the
    rebalance listener, :meth:`ready` before consuming a partition, :meth:`wants` / :meth:`hold` per request.
    """

    def __init__(
        self,
        settings: Settings,
        options: FetchOptions,
        producer: AIOKafkaProducer,
        engine: FetchEngine,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = settings.topics.fetch_delayed
        self._settings = settings
        self._requests_topic = settings.topics.fetch_requests
        self._threshold = options.delayed_threshold_s
        self._producer = producer
        self._engine = engine
        self._clock = clock
        self._flush_s = settings.kafka.request_timeout_ms / 1000
        self._partitions: dict[int, _Partition] = {}
        self._heaps: dict[str, list[_Waiting]] = {}  # per provider, by release time
        self._dead = 0  # heap items whose entry was superseded before its release
        self._released: set[_Entry] = set()  # handed to the engine, not completed
        self._counts: Counter[str] = Counter()
        self._seq = itertools.count()
        self._lock = asyncio.Lock()  # decide + enqueue every send in one order
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
        """Graceful stop: let writes and tombstones under way be acknowledged (so their offsets commit)."""
        tasks = [task for state in self._partitions.values() for task in state.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def close(self) -> None:
        tasks = [*self._loops, *(t for s in self._partitions.values() for t in (*s.tasks, s.load) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
        """Stop sending for these partitions, await the sends under way (bounded), drop their entries."""
        states = [self._partitions.pop(p) for p in set(partitions) if p in self._partitions]
        if not states:
            return
        for state in states:
            state.revoked.set()
            for entry in state.entries.values():
                self._counts[entry.request.provider] -= 1
                if entry.job is not None:
                    entry.job.cancelled = True  # not started: the engine drops it; the new owner has it
                    self._released.discard(entry)
            state.entries.clear()
            if state.load is not None and all(s.revoked.is_set() for s in state.load_group):
                state.load.cancel()
        pending = [task for state in states for task in state.tasks]
        if pending:
            _done, stuck = await asyncio.wait(pending, timeout=self._flush_s)
            for task in stuck:
                task.cancel()
        self._rebuild_heaps()
        log.info("fetch_delayed_revoked", partitions=sorted(s.number for s in states))

    # --- holding requests --------------------------------------------------------------------------
    def wants(self, partition: int, request: FetchRequest) -> bool:
        """Whether ``request`` goes to the store: due later than the threshold, or its key is held already
        (a stale poll then supersedes the one in its payment's slot; a re-emitted request is kept once)."""
        if due_at(request) - self._clock() > self._threshold:
            return True
        state = self._partitions.get(partition)
        return state is not None and store_key(request) in state.entries

    async def hold(self, partition: int, offset: int, request: FetchRequest, on_stored: Callable[[], None]) -> None:
        """Write ``request`` to the store; ``on_stored`` runs once that is acknowledged (then its source
        offset may be committed). Returns once the write is queued, in the order of the calls."""
        state = self._partitions.get(partition)
        if state is None or not state.loaded:
            return  # revoked meanwhile: not ours, its offset is not committed, the next owner reads it
        key = store_key(request)
        async with self._lock:
            if state.revoked.is_set():
                return
            current = state.entries.get(key)
            if current is not None and _same_poll(current.request, request):
                _when_stored(current, on_stored)  # re-emitted: one poll, already (being) stored
                return
            entry = _Entry(key, state, request, due_at(request), asyncio.get_running_loop().create_future(),
                           source_offset=offset)
            if current is not None:
                self._supersede(current, entry)
            self._add(entry)
            sent = await self._send(entry)
        self._spawn(state, self._confirm(entry, sent, on_stored))

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
        if current.request.reason == "stale" and current.request.request_id != entry.request.request_id:
            FETCH_DELAYED_SUPERSEDED.labels(current.request.provider).inc()
            log.info("fetch_delayed_superseded", payment_key=current.request.payment_key,
                     request_id=current.request.request_id, by=entry.request.request_id)

    # --- sends (always decided and queued under self._lock) -----------------------------------------
    async def _send(self, entry: _Entry) -> asyncio.Future[Any] | None:
        headers = [
            (SOURCE_TOPIC, self._requests_topic.encode()),
            (SOURCE_PARTITION, str(entry.owner.number).encode()),
            (STORED_AT, to_rfc3339(datetime.now(UTC)).encode()),
        ]
        if entry.source_offset is not None:
            headers.append((SOURCE_OFFSET, str(entry.source_offset).encode()))
        return await self._queue(entry.owner.number, entry.key, entry.request.to_bytes(), headers)

    async def _send_tombstone(self, owner: _Partition, key: str) -> asyncio.Future[Any] | None:
        return await self._queue(owner.number, key, None, [])

    async def _queue(
        self, partition: int, key: str, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                self.topic, key=key.encode(), value=value, partition=partition, headers=headers
            )
        except KafkaError as exc:
            log.warning("fetch_delayed_send_failed", partition=partition, error=repr(exc))
            return None
        return future

    async def _confirm(self, entry: _Entry, sent: asyncio.Future[Any] | None, on_stored: Callable[[], None]) -> None:
        """Wait for the write's acknowledgement, re-sending while the entry is still the latest of its key."""
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
            async with self._lock:
                sent = await self._send(entry) if entry.live else None
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
                entry.job = self._engine.submit(entry.request, partial(self._completed, entry))
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
        async with self._lock:
            if not entry.live:
                return  # superseded meanwhile: the newer value stays
            del owner.entries[entry.key]
            self._counts[entry.request.provider] -= 1
            sent = await self._send_tombstone(owner, entry.key)
        attempt = 0
        while not (sent is not None and await _acknowledged(sent, entry.key)):
            attempt += 1
            if owner.revoked.is_set() or not await _pause(owner, full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)):
                return
            async with self._lock:
                if entry.key in owner.entries:
                    return  # a newer value was queued after the failed tombstone: it must stay
                sent = await self._send_tombstone(owner, entry.key)

    # --- loading ---------------------------------------------------------------------------------------
    async def _load(self, group: list[_Partition]) -> None:
        started, attempt = time.monotonic(), 0
        while True:
            try:
                found = await self._read([s.number for s in group])
                break
            except Exception as exc:  # retried: until it is loaded, the partition is not consumed at all
                attempt += 1
                delay = full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)
                log.warning("fetch_delayed_load_retry", error=repr(exc), delay_s=round(delay, 2))
                await asyncio.sleep(delay)
        loop, count = asyncio.get_running_loop(), 0
        async with self._lock:
            for state in group:
                if state.revoked.is_set():
                    continue
                for key, (raw, source_offset) in found[state.number].items():
                    try:
                        request = FetchRequest.from_bytes(raw)
                        due = due_at(request)
                    except NormalizationError as exc:
                        log.error("fetch_delayed_entry_malformed", partition=state.number, key=key, error=str(exc))
                        continue
                    stored: asyncio.Future[None] = loop.create_future()
                    stored.set_result(None)
                    self._add(_Entry(key, state, request, due, stored, source_offset=source_offset))
                    count += 1
                state.loaded = True
        seconds = time.monotonic() - started
        FETCH_DELAYED_LOAD_SECONDS.observe(seconds)
        log.info("fetch_delayed_loaded", partitions=[s.number for s in group if s.loaded], entries=count,
                 seconds=round(seconds, 3))

    async def _read(self, partitions: list[int]) -> dict[int, dict[str, tuple[bytes, int | None]]]:
        """The latest value of every live key of these store partitions, from the beginning to the end."""
        consumer = self._loader
        assert consumer is not None, "start() first"
        async with self._load_lock:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            found: dict[int, dict[str, tuple[bytes, int | None]]] = {p: {} for p in partitions}
            remaining = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batches.items():
                    latest = found[tp.partition]
                    for record in records:
                        if record.key is None:
                            continue
                        key = record.key.decode()
                        if record.value is None:
                            latest.pop(key, None)
                        else:
                            latest[key] = (record.value, _source_offset(record.headers))
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
async def _acknowledged(sent: asyncio.Future[Any], key: str) -> bool:
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
