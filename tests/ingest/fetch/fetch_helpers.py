"""Small helpers shared by the fetcher tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.fetch.lane import Decision
from schemas.envelopes import FetchRequest, FetchResult


@dataclass(frozen=True)
class AmazonKeys:
    public_key_id: str
    private_pem_path: Path
    public_pem: bytes


async def eventually(predicate: Callable[[], bool], *, within_s: float = 20.0) -> None:
    """Wait until ``predicate()`` holds (a safety limit against hanging, not a speed requirement)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class MemorySink:
    """Collects the engine's decisions (the Kafka sink is exercised by the broker tests)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    async def deliver(self, decision: Decision) -> None:
        self.decisions.append(decision)

    @property
    def results(self) -> list[FetchResult]:
        return [d.result for d in self.decisions if d.result is not None]

    @property
    def retries(self) -> list[FetchRequest]:
        return [d.retry for d in self.decisions if d.retry is not None]
