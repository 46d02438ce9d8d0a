"""Wait until table writes are on the broker before a batch is acknowledged.

faust writes a table's changelog through its producer buffer and, before committing offsets, "flushes"
that buffer — but its flush gives up after 0.1 s without a message leaving the buffer
(``ProducerBuffer.flush_atmost``), so a commit can overtake changelog records still waiting there (for
example while the producer fetches metadata for a new changelog topic). A worker killed at that moment
restarts with offsets past observations its recovered table never saw: a lost status event.
:class:`ChangelogWaiter` closes that gap by collecting the future of every changelog record a table sends
and letting the agent await them (retrying failures) before its batch is acknowledged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from paystream.logs import get_logger

log = get_logger(__name__)


class _Write:
    """One changelog record: how to send it again, and the future of its latest send."""

    __slots__ = ("args", "future", "send")

    def __init__(self, send: Any, args: tuple[Any, ...], future: Any) -> None:
        self.send, self.args, self.future = send, args, future


class ChangelogWaiter:
    """Shared by every agent and timer of the app. Each :meth:`written` waits for the writes pending when
    it is called (its own and any other agent's), never fewer: an agent must not return while its own
    writes are in flight merely because another agent happened to be waiting for them first."""

    def __init__(self) -> None:
        self.pending: dict[_Write, None] = {}  # insertion-ordered set

    def watch(self, table: Any) -> None:
        """Track every changelog record ``table`` sends from now on."""
        send = table.send_changelog

        def tracked(partition: Any, key: Any, value: Any, key_serializer: Any = None,
                    value_serializer: Any = None) -> Any:
            args = (partition, key, value, key_serializer, value_serializer)
            future = send(*args)
            self.pending[_Write(send, args, future)] = None
            return future

        table.send_changelog = tracked

    async def written(self) -> None:
        """Return once every changelog record pending at the call is acknowledged (failed sends are
        repeated, once per failure whoever notices it first)."""
        waiting = list(self.pending)
        delay = 0.2
        while waiting:
            futures = [write.future for write in waiting]
            results = await asyncio.gather(*futures, return_exceptions=True)
            still: list[_Write] = []
            for write, future, result in zip(waiting, futures, results, strict=True):
                if not isinstance(result, BaseException):
                    if write.future is future:
                        self.pending.pop(write, None)
                    continue
                if write.future is future:  # nobody has sent it again yet
                    write.future = write.send(*write.args)
                still.append(write)
            if still:
                log.warning("changelog_send_failed", failed=len(still))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            waiting = still
