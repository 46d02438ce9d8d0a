"""Stale-payment polls as a chain of durable records (pure, no Kafka).

The stream engine has no timers, so a payment that awaits news carries its next poll as a fetch request
with a ``not_before`` in the future; the fetcher holds such requests durably until they are due
(``ingest/fetch``), and every fetch result moves the chain on:

* news (a new observation content) restarts the chain: poll 1 is due ``gaps[0]`` after the news — unless
  the poll already armed comes no later than that, in which case it stands for poll 1 (a payment moving
  through several statuses within seconds keeps one pending poll instead of one per status);
* the armed poll's result, whatever its outcome, arms the next one: poll ``n`` is due at the ``n``-th offset
  of the schedule after the last news (default gaps 1 m, 5 m, 15 m, 1 h, 6 h, 24 h, then daily), never
  earlier than now; polls missed while nothing ran are not back-filled: the chain continues with the latest
  poll that is already due;
* a payment in an outcome status stops the chain (its armed poll still fires once and then ends it);
  nothing is ever auto-failed;
* a chain also ends at the provider's documented horizon (:class:`Horizons`): ``not_found_limit`` answers
  of ``not_found`` in a row (an id the provider does not know), an authorisation past its expiry, or a
  payment still waiting ``horizon_s`` after paystream first heard of it. The end is recorded with its reason
  (and published in ``payments.state.v1``); news restarts a chain that ended.

A poll's request id is deterministic (``{payment_key}:stale:{last news}:{n}``): re-emitting it after a worker
restart is recognisable downstream. Every link armed carries the chain's next ``version``: the fetcher keeps,
per payment, the stale poll of the highest version, so a late retry of an older link never replaces a newer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate

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


@dataclass(frozen=True, slots=True)
class Horizons:
    """Where a payment's polling ends (DESIGN §5: a chain ends at the provider's documented horizon)."""

    not_found_limit: int  # answers of not_found in a row
    horizon_s: float  # since paystream first heard of the payment
    expiry_grace_s: float  # after an authorisation's expiry: one more poll may see the provider void it


@dataclass(frozen=True, slots=True)
class PollChain:
    """Where a payment's stale polls stand."""

    since: float  # unix seconds of the last news (or of the registration that started the wait)
    poll: int  # the armed poll's number (1-based)
    request_id: str  # the armed poll's request id
    version: int = 0  # the armed link's chain version (increases with every link armed for the payment)
    not_found: int = 0  # answers of not_found in a row


def poll_request(key: str, provider: str, account: str, object_type: str, object_id: str, *, since: float,
                 poll: int, version: int, schedule: PollSchedule, now: datetime) -> FetchRequest:
    due = max(since + schedule.offset_of(poll), now.timestamp())
    stamp = to_rfc3339(now)
    return FetchRequest(
        payment_key=key, provider=provider, account=account, object_type=object_type, object_id=object_id,
        reason="stale", not_before=to_rfc3339(datetime.fromtimestamp(due, UTC)), requested_at=stamp,
        request_id=f"{key}:stale:{since:.6f}:{poll}", attempt=poll, chain_version=version,
    )


def next_poll(schedule: PollSchedule, *, since: float, done: int, now: datetime) -> int:
    """The number of the poll to arm after poll ``done`` (0: none yet) finished: the next one, or the
    latest already due when the chain fell behind."""
    return max(done + 1, schedule.polls_due(now.timestamp() - since))
