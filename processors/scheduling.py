"""Stale-payment polls and freshness gauges (pure, no Kafka).

A payment that awaits news (see :mod:`processors.reconcile`) is polled when nothing new has been observed
for a while: the gaps between polls follow the schedule (default 1 m, 5 m, 15 m, 1 h, 6 h, 24 h, then daily)
counted from its last news, and any new observation restarts the schedule. Nothing is ever auto-failed.
The n-th poll of one quiet period has a deterministic request id, so re-sending it (after a worker restart)
is recognisable downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from schemas.envelopes import FetchRequest, to_rfc3339


@dataclass(frozen=True, slots=True)
class PollSchedule:
    gaps_s: Sequence[int]
    repeat_s: int

    def polls_due(self, quiet_s: float) -> int:
        """How many polls are due after ``quiet_s`` seconds without news."""
        offsets = list(accumulate(self.gaps_s))
        due = sum(1 for offset in offsets if offset <= quiet_s)
        if due == len(offsets) and offsets:
            due += int((quiet_s - offsets[-1]) // self.repeat_s)
        return due

    def offset_of(self, poll: int) -> int:
        """Seconds after the last news at which poll number ``poll`` (1-based) is due."""
        offsets = list(accumulate(self.gaps_s))
        if poll <= len(offsets):
            return offsets[poll - 1]
        return (offsets[-1] if offsets else 0) + (poll - len(offsets)) * self.repeat_s


def stale_request(key: str, entry: Mapping[str, Any], poll: int, schedule: PollSchedule,
                  now: datetime) -> FetchRequest:
    last_news = float(entry["last_news"])
    due = datetime.fromtimestamp(last_news + schedule.offset_of(poll), UTC)
    return FetchRequest(
        payment_key=key, provider=entry["provider"], account=entry["account"],
        object_type=entry["object_type"], object_id=entry["object_id"], reason="stale",
        not_before=to_rfc3339(due), requested_at=to_rfc3339(now),
        request_id=f"{key}:stale:{last_news:.6f}:{poll}", attempt=poll,
    )


class StalePoller:
    """Remembers (per worker, in memory) which poll of the current quiet period was already requested."""

    def __init__(self, schedule: PollSchedule, pollable: Iterable[str]) -> None:
        self.schedule = schedule
        self.pollable = frozenset(pollable)
        self.requested: dict[str, tuple[float, int]] = {}

    def due(self, entries: Iterable[tuple[str, Mapping[str, Any]]], now: datetime) -> list[FetchRequest]:
        """One request per payment whose next poll is due (missed polls are not back-filled)."""
        requests = []
        seen = set()
        for key, entry in entries:
            seen.add(key)
            if entry["provider"] not in self.pollable:
                continue
            last_news = float(entry["last_news"])
            poll = self.schedule.polls_due(now.timestamp() - last_news)
            done_news, done_poll = self.requested.get(key, (last_news, 0))
            already = done_poll if done_news == last_news else 0
            if poll > already:
                requests.append(stale_request(key, entry, poll, self.schedule, now))
                self.requested[key] = (last_news, poll)
        for gone in set(self.requested) - seen:
            del self.requested[gone]
        return requests


def freshness(entries: Iterable[Mapping[str, Any]], now: datetime, slo_s: float,
              providers: Iterable[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per provider: the oldest awaiting payment's age, and how many have had no news for over ``slo_s``."""
    oldest = dict.fromkeys(providers, 0.0)
    late = dict.fromkeys(oldest, 0)
    moment = now.timestamp()
    for entry in entries:
        provider = entry["provider"]
        oldest[provider] = max(oldest.get(provider, 0.0), moment - float(entry["first_seen"]))
        if moment - float(entry["last_news"]) > slo_s:
            late[provider] = late.get(provider, 0) + 1
    return oldest, late

