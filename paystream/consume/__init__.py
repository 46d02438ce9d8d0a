"""Consume the payment-status stream correctly (docs/consumers.md).

* :func:`parse_event` / :func:`parse_state`: typed, immutable :class:`StatusEvent` / :class:`StateDocument`
  objects from record values, validated against the published JSON Schemas (:class:`InvalidEvent` otherwise).
* :class:`Follower`: bootstrap from ``payments.state.v1``, follow ``payments.status.v1`` read_committed, drop
  what was already applied by payment and ``(epoch, sequence)``, report gaps, keep its position in its own
  consumer group.
* :func:`judge`: the dedupe and gap rules on their own, for consumers with their own Kafka loop.
"""

from paystream.consume.events import (
    AGREEMENT_EVENT,
    PAYMENT_EVENT,
    EventData,
    InvalidEvent,
    Polling,
    Position,
    Risk,
    RiskSignal,
    StateDocument,
    StatusEvent,
    parse_event,
    parse_state,
)
from paystream.consume.follower import Follower, FollowerStats, Handler, Origin
from paystream.consume.positions import Gap, Judgement, MemoryPositions, PositionStore, Verdict, judge
from paystream.consume.schema import AGREEMENT_STATUSES, PAYMENT_STATUSES

__all__ = [
    "AGREEMENT_EVENT",
    "AGREEMENT_STATUSES",
    "PAYMENT_EVENT",
    "PAYMENT_STATUSES",
    "EventData",
    "Follower",
    "FollowerStats",
    "Gap",
    "Handler",
    "InvalidEvent",
    "Judgement",
    "MemoryPositions",
    "Origin",
    "Polling",
    "Position",
    "PositionStore",
    "Risk",
    "RiskSignal",
    "StateDocument",
    "StatusEvent",
    "Verdict",
    "judge",
    "parse_event",
    "parse_state",
]
