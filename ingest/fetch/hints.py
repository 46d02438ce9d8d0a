"""Hints (unsigned "something changed on object X" notes, e.g. Mollie's webhooks): fetched without loss, with
bounded memory, without holding anyone else up.

Anyone can send a hint, so a flood of them (a catch-up, or made-up ids) must neither be dropped (a real one
among them is a payment's status change) nor fill the fetcher's memory nor starve other accounts. Hints are
therefore not rate-limited where they are read (the processors pass every one on); the fetcher:

* coalesces them per object: a hint for an object that already has a fetch waiting, or one sent after the
  hint was requested (under way, or answered: the last such call is remembered for the most recent 50,000
  objects), adds nothing (:meth:`FetchEngine.covers`); its offset is done at once, because that fetch is
  itself durable until its result is published (an uncommitted offset or a delay-store entry), or was;
* lets them wait in the account's gate like any fetch (its rate limit and in-flight share), behind the
  account's other requests;
* holds at most ``FetchSettings.hints_per_account`` hint fetches per account in memory. The next hint of a
  full account stays in the topic: the partition is not paused (the other accounts' requests in it go on),
  the commit is held at that hint's offset, and every later hint of that account in that partition is left
  there too (a *backlog*: from its first offset to one past its last). As the account's hint fetches finish,
  a second consumer reads the backlog again from where it stands and admits its hints (coalescing again);
  the commit's hold moves with it and ends when the backlog is read through.

Memory: per account at most ``hints_per_account`` hint jobs, plus per (partition, account) one backlog of
three numbers, whatever the flood. Cost: a backlog's span is read twice, and while it lasts the partition's
commit waits at its start, so a restart then reads the span again (fetches of it repeat: at-least-once, as
for any uncommitted request). A rebalance drops the backlogs of the revoked partitions: the next owner reads
from the held commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ingest.fetch.engine import HINT, FetchEngine
from ingest.fetch.offsets import OffsetTracker
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from paystream.errors import NormalizationError
from paystream.kafka import make_consumer
from paystream.logs import get_logger
from paystream.metrics import FETCH_HINT_BACKLOG, FETCH_HINTS, FETCH_HINTS_HELD
from schemas.envelopes import FetchRequest

log = get_logger(__name__)

Account = tuple[str, str]
IDLE_WAIT_S = 1.0
READ_BATCH = 500


def held_back(request: FetchRequest) -> bool:
    """Hints as the processors wrote them may wait in the topic. The fetcher's own retries of a hint may not:
    they replace a hint job that was already in memory, and re-reading them would need the delay store."""
    return request.reason == HINT and request.retry is None


@dataclass(eq=False, slots=True)
class _Backlog:
    """Hints of one account left in one partition: offsets ``[position, horizon)`` still to read again."""

    tp: TopicPartition
    account: Account
    position: int
    horizon: int
    dropped: bool = False

    @property
    def name(self) -> str:
        return f"hints:{self.account[0]}:{self.account[1]}"


class HintDesk:
    """Admits hints (coalesce, or hold a fetch within the account's share, or leave them in the topic) and
    reads the left ones again when their account has room."""

    def __init__(self, settings: Settings, options: FetchOptions, engine: FetchEngine, tracker: OffsetTracker,
                 *, consumer: AIOKafkaConsumer | None = None) -> None:
        self._engine = engine
        self._tracker = tracker
        self._bound = options.hints_per_account
        self._consumer = consumer or make_consumer(settings, group_id=None, client_suffix="fetch-hints")
        self._backlogs: dict[tuple[TopicPartition, Account], _Backlog] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reported: set[Account] = set()

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._reread_loop(), name="fetch-hints")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    # --- the main consumer's side ------------------------------------------------------------------
    def admit(self, tp: TopicPartition, offset: int, request: FetchRequest) -> bool:
        """Take ``request`` if it is a hint (True); anything else is the caller's (False)."""
        if not held_back(request):
            return False
        account = (request.provider, request.account)
        backlog = self._backlogs.get((tp, account))
        if backlog is not None:  # the account's earlier hints in this partition wait: this one waits behind
            backlog.horizon = offset + 1
            FETCH_HINTS.labels(request.provider, "deferred").inc()
            return True
        if self._take(tp, offset, request):
            return True
        backlog = _Backlog(tp, account, position=offset, horizon=offset + 1)
        self._backlogs[(tp, account)] = backlog
        self._tracker.hold(tp, backlog.name, offset)
        FETCH_HINTS.labels(request.provider, "deferred").inc()
        log.info("fetch_hints_deferred", provider=account[0], account=account[1], partition=tp.partition,
                 offset=offset, held=self._engine.hints_held(*account))
        self._wakeup.set()
        return True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions went to another consumer: it reads their hints from the held commit."""
        gone = set(partitions)
        for key in [key for key in self._backlogs if key[0] in gone]:
            self._backlogs.pop(key).dropped = True

    def report(self) -> None:
        """Refresh the gauges of held hint fetches and of the backlogs."""
        spans: defaultdict[Account, int] = defaultdict(int)
        for backlog in self._backlogs.values():
            spans[backlog.account] += backlog.horizon - backlog.position
        accounts = {*spans, *self._engine.hint_accounts()}
        for account in accounts | self._reported:  # accounts that went quiet are set back to 0
            FETCH_HINT_BACKLOG.labels(*account).set(spans.get(account, 0))
            FETCH_HINTS_HELD.labels(*account).set(self._engine.hints_held(*account))
        self._reported = accounts

    def backlogs(self) -> dict[Account, int]:
        """Offsets still to read again per account (for tests and debugging)."""
        spans: defaultdict[Account, int] = defaultdict(int)
        for backlog in self._backlogs.values():
            spans[backlog.account] += backlog.horizon - backlog.position
        return dict(spans)

    def _room(self, account: Account) -> int:
        if not self._engine.room.is_set():  # the engine as a whole is full (max_pending)
            return 0
        return self._bound - self._engine.hints_held(*account)

    def _take(self, tp: TopicPartition, offset: int, request: FetchRequest) -> bool:
        """Coalesce the hint or hold a fetch for it; False when its account has no room."""
        if self._engine.covers(request):
            self._tracker.add(tp, offset)  # done: the fetch that covers it is durable until it is published
            FETCH_HINTS.labels(request.provider, "coalesced").inc()
            return True
        if self._room((request.provider, request.account)) <= 0:
            return False
        job = self._engine.submit(request)
        job.on_done = partial(self._tracker.done, tp, offset)
        self._tracker.add(tp, offset, job)
        FETCH_HINTS.labels(request.provider, "fetch").inc()
        return True

    # --- reading the backlogs again ------------------------------------------------------------------
    async def _reread_loop(self) -> None:
        while True:
            self.report()
            self._engine.hint_done.clear()
            self._wakeup.clear()
            progressed = False
            for backlog in list(self._backlogs.values()):
                if not backlog.dropped and self._worth_reading(backlog):
                    await self._reread(backlog)
                    progressed = True
            if not progressed:
                waits = [asyncio.ensure_future(self._engine.hint_done.wait()),
                         asyncio.ensure_future(self._wakeup.wait())]
                try:
                    await asyncio.wait(waits, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()

    def _worth_reading(self, backlog: _Backlog) -> bool:
        """Read again once the account has room for half its share (or for all that is left): one read per
        finished fetch would seek and fetch a batch for every single hint."""
        room = self._room(backlog.account)
        return room > 0 and room >= min(max(1, self._bound // 2), backlog.horizon - backlog.position)

    async def _reread(self, backlog: _Backlog) -> None:
        tp = backlog.tp
        self._consumer.assign([tp])
        self._consumer.seek(tp, backlog.position)
        try:
            batches = await self._consumer.getmany(tp, timeout_ms=500, max_records=READ_BATCH)
        except Exception as exc:  # tried again on the next round; the hold keeps the hints safe meanwhile
            log.warning("fetch_hints_reread_failed", partition=tp.partition, error=repr(exc))
            await asyncio.sleep(IDLE_WAIT_S)
            return
        records = batches.get(tp, [])
        if not records:  # e.g. only transaction markers ahead: skip to where the consumer stands
            with contextlib.suppress(Exception):
                ahead = await self._consumer.position(tp)
                backlog.position = min(backlog.horizon, max(backlog.position, ahead))
        if backlog.dropped:  # revoked while reading: the next owner has them
            return
        for record in records:
            if record.offset >= backlog.horizon:
                backlog.position = backlog.horizon
                break
            if not self._readmit(backlog, record):
                break
            backlog.position = record.offset + 1
        if backlog.position >= backlog.horizon:
            del self._backlogs[(tp, backlog.account)]
            self._tracker.release(tp, backlog.name)
            log.info("fetch_hints_backlog_read", provider=backlog.account[0], account=backlog.account[1],
                     partition=tp.partition)
        else:
            self._tracker.hold(tp, backlog.name, backlog.position)

    def _readmit(self, backlog: _Backlog, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Admit the record if it is one of the backlog's hints; False when the account is full again."""
        try:
            request = FetchRequest.from_bytes(record.value or b"")
        except NormalizationError:
            return True  # dead-lettered by the main consumer
        if not held_back(request) or (request.provider, request.account) != backlog.account:
            return True  # handled by the main consumer when it read it
        return self._take(backlog.tp, record.offset, request)


__all__ = ["HintDesk", "held_back"]
