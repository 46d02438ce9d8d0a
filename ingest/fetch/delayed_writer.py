"""The delay store's writer for one store partition: every write and tombstone goes out in a Kafka transaction
under the partition's own transactional id, so the broker, not timing, decides which replica may write it.

Why. A replica that gives a partition up cannot take back what its producer already queued: with an
idempotent producer a queued write is retried until the broker takes it, so a write stuck behind a slow or
unreachable leader landed whenever the leader came back, possibly after the next owner had loaded the
partition (an older poll put back in a slot, or a tombstone deleting the newer owner's entry). Waiting for
such writes at revoke can only be bounded, and a member that waits too long is thrown out of the group anyway.

How. The transactional id is ``{fetch group}.{store topic}.{partition}``: the same for whoever owns the
partition. Starting a writer registers the id with the transaction coordinator (InitProducerId), which bumps
its epoch: the previous owner's open transaction is aborted (or, if its commit had already begun, completed)
before :meth:`PartitionWriter.start` returns, and every later write or commit of the previous owner is
refused (``ProducerFenced``). The new owner starts its writer *before* it reads the partition, and reads it
``read_committed``, so whatever the previous owner wrote is either in what it reads or never visible — also
for a zombie that never noticed it lost the partition, and for a SIGKILLed owner's open transaction (aborted
at once instead of stalling the partition's readers until the transaction timeout).

Writes queued while a transaction is under way go out together in the next one. A write's future resolves
when its transaction is committed, or fails when it is not (the store then decides whether to send it again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced

from paystream.config import Settings
from paystream.kafka import make_producer
from paystream.logs import get_logger

log = get_logger(__name__)

MAX_BATCH = 1000  # writes per transaction
CLOSE_WAIT_S = 5.0

# Producers that did not stop within CLOSE_WAIT_S (e.g. a commit stuck behind an unreachable leader): kept
# referenced until they end. The next owner's fence makes whatever they still hold invisible.
_lingering: set[asyncio.Task[None]] = set()


class WriterFenced(KafkaError):  # type: ignore[misc]
    """Another writer took the partition over; nothing more is written from here."""


def transactional_id(group_id: str, topic: str, partition: int) -> str:
    return f"{group_id}.{topic}.{partition}"


@dataclass(eq=False, slots=True)
class _Write:
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PartitionWriter:
    """Writes to one store partition, in order, in transactions; :meth:`start` fences the previous owner."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partition: int,
        transactional_id: str,
        *,
        on_fenced: Callable[[], None],
        producer_factory: Callable[..., AIOKafkaProducer] = make_producer,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.transactional_id = transactional_id
        self._settings = settings
        self._factory = producer_factory
        self._on_fenced = on_fenced
        self._producer = self._new_producer()
        self._queue: list[_Write] = []
        self._current: list[_Write] = []  # the batch of the transaction under way
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fenced = False
        self.closed = False

    def _new_producer(self) -> AIOKafkaProducer:
        return self._factory(self._settings, client_suffix=f"fetch-delayed-{self.partition}",
                             transactional_id=self.transactional_id)

    async def start(self) -> None:
        """Connect and fence the partition's previous writer (its open transaction ends first)."""
        await _fence(self._producer)
        self._task = asyncio.create_task(self._run(), name=f"fetch-delayed-writer-{self.partition}")

    def write(self, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Queue a write (``value`` None: a tombstone); the future resolves once its transaction committed."""
        write = _Write(key, value, headers)
        if self.fenced or self.closed:
            write.done.set_exception(WriterFenced(f"store partition {self.partition}: writer closed"))
            write.done.exception()  # retrieved: nobody may be waiting for it
        else:
            self._queue.append(write)
            self._wakeup.set()
        return write.done

    async def close(self) -> None:
        """Stop writing; queued writes fail. Waits a little for the producer to stop, never for long."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Unknown whether the transaction under way commits: reported as failed (its source offsets are then
        # not committed, and a request read again is kept once by its next owner).
        self._fail([*self._current, *self._queue], WriterFenced(f"store partition {self.partition}: writer closed"))
        self._current, self._queue = [], []
        await _stop(self._producer)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._current = batch
                try:
                    await self._commit(batch)
                except ProducerFenced:
                    self._lost(batch)
                    return
                except Exception as exc:  # any failure fails the batch; the store re-sends
                    log.warning("fetch_delayed_transaction_failed", partition=self.partition, writes=len(batch),
                                error=repr(exc))
                    self._fail(batch, exc if isinstance(exc, KafkaError) else KafkaError(repr(exc)))
                    if not await self._renew():
                        return
                else:
                    for write in batch:
                        if not write.done.done():
                            write.done.set_result(None)
                finally:
                    self._current = []

    async def _commit(self, batch: list[_Write]) -> None:
        producer = self._producer
        await producer.begin_transaction()
        try:
            for write in batch:
                await producer.send(self.topic, key=write.key, value=write.value, partition=self.partition,
                                    headers=write.headers)
            await producer.commit_transaction()
        except (ProducerFenced, asyncio.CancelledError):
            raise  # cancelled: closing; whatever the transaction holds, the next owner's fence ends it
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), CLOSE_WAIT_S)
            raise

    async def _renew(self) -> bool:
        """After a failed transaction: a fresh producer under the same id (which fences the old one, whatever
        state its transaction was left in). False when another replica fenced this one meanwhile."""
        old, self._producer = self._producer, self._new_producer()
        _linger(old)
        while True:
            try:
                await _fence(self._producer)
                return True
            except ProducerFenced:
                self._lost([])
                return False
            except Exception as exc:  # e.g. the coordinator unreachable: keep trying
                log.warning("fetch_delayed_writer_restart_failed", partition=self.partition, error=repr(exc))
                await _stop(self._producer)
                self._producer = self._new_producer()
                await asyncio.sleep(1.0)

    def _lost(self, batch: list[_Write]) -> None:
        self.fenced = True
        log.warning("fetch_delayed_writer_fenced", partition=self.partition, transactional_id=self.transactional_id)
        self._fail([*batch, *self._queue], WriterFenced(f"store partition {self.partition}: fenced"))
        self._queue = []
        self._on_fenced()

    @staticmethod
    def _fail(writes: list[_Write], exc: BaseException) -> None:
        for write in writes:
            if not write.done.done():
                write.done.set_exception(exc)
                write.done.exception()  # retrieved: a superseded write may have nobody waiting for it


async def _fence(producer: AIOKafkaProducer) -> None:
    """Start ``producer`` and register its transactional id (InitProducerId): the id's previous producer is
    fenced, and its open transaction aborted or completed, before this returns."""
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.commit_transaction()  # empty: nothing is sent
    except BaseException:
        await _stop(producer)
        raise


async def _stop(producer: AIOKafkaProducer) -> None:
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=CLOSE_WAIT_S)
    if not done:
        _lingering.add(stopping)
        stopping.add_done_callback(_lingering.discard)
    else:
        with contextlib.suppress(Exception):
            stopping.result()


def _linger(producer: AIOKafkaProducer) -> None:
    task: asyncio.Task[Any] = asyncio.ensure_future(_stop(producer))
    _lingering.add(task)
    task.add_done_callback(_lingering.discard)


__all__ = ["PartitionWriter", "WriterFenced", "transactional_id"]
