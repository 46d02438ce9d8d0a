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


class ChangelogWaiter:
    def __init__(self) -> None:
        # (the table's original send_changelog, its arguments, the future of that send)
        self.pending: list[tuple[Any, tuple[Any, ...], Any]] = []

    def watch(self, table: Any) -> None:
        """Track every changelog record ``table`` sends from now on."""
        send = table.send_changelog

        def tracked(partition: Any, key: Any, value: Any, key_serializer: Any = None,
                    value_serializer: Any = None) -> Any:
            args = (partition, key, value, key_serializer, value_serializer)
            future = send(*args)
            self.pending.append((send, args, future))
            return future

        table.send_changelog = tracked

    async def written(self) -> None:
        """Return once every tracked changelog record is acknowledged (failed sends are repeated)."""
        delay = 0.2
        while self.pending:
            batch, self.pending = self.pending, []
            results = await asyncio.gather(*(future for _, _, future in batch), return_exceptions=True)
            failed = [(send, args) for (send, args, _), result in zip(batch, results, strict=True)
                      if isinstance(result, BaseException)]
            if failed:
                log.warning("changelog_send_failed", failed=len(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                self.pending += [(send, args, send(*args)) for send, args in failed]
