"""What ``GET /readyz`` of ``paystream process`` means: this worker is connected and consuming.

:func:`worker_state` reads a snapshot of the faust app (faust-streaming 0.15.3: the attributes read here
were checked against its source); :func:`not_ready_reason` is the pure decision over that snapshot.

The signals, and why each one:

* the app is not stopping (a worker draining on SIGTERM takes no new work);
* the faust consumer service has started, and aiokafka knows the group coordinator
  (``coordinator_id`` is cleared when the coordinator connection dies: a broker outage makes the worker
  unready, never unhealthy — ``/healthz`` does not look at any of this);
* table recovery has completed at least once (``app.tables.recovery.completed``, set after the first
  assignment — possibly empty — was received, tables were restored and streams resumed);
* no rebalance is in progress: ``app.rebalancing`` is set by the aiokafka rebalance listener *before*
  partitions are revoked and cleared only by ``app.on_rebalance_end()``, which recovery calls once the
  changelogs are replayed and the streams resumed; ``app.in_recovery`` covers the changelog replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerState:
    stopping: bool
    consumer_started: bool
    coordinator_known: bool
    recovery_completed: bool
    rebalancing: bool
    in_recovery: bool


def not_ready_reason(state: WorkerState) -> str | None:
    """``None`` when ready, else the first reason the worker is not (reported in the 503 body / logs)."""
    if state.stopping:
        return "stopping"
    if not state.consumer_started:
        return "consumer not started"
    if not state.coordinator_known:
        return "group coordinator unknown (broker unreachable?)"
    if not state.recovery_completed:
        return "no assignment recovered yet"
    if state.rebalancing:
        return "rebalancing"
    if state.in_recovery:
        return "recovering tables"
    return None


def is_ready(state: WorkerState) -> bool:
    return not_ready_reason(state) is None


def worker_state(app: Any) -> WorkerState:
    """Snapshot of a faust app. Never creates anything: ``app.consumer`` and ``app.tables`` are lazy
    properties, so their backing attributes are read instead. Safe to call from the app's event loop
    while the consumer runs in its own thread (only plain attribute reads)."""
    consumer = getattr(app, "_consumer", None)
    consumer_started = consumer is not None and bool(consumer.started) and not consumer.should_stop
    return WorkerState(
        stopping=bool(app.should_stop),
        consumer_started=consumer_started,
        coordinator_known=consumer_started and _coordinator_known(consumer),
        recovery_completed=_recovery_completed(app),
        rebalancing=bool(app.rebalancing),
        in_recovery=bool(app.in_recovery),
    )


def _coordinator_known(consumer: Any) -> bool:
    # faust's aiokafka driver: Consumer._thread (AIOKafkaConsumerThread)._consumer (AIOKafkaConsumer).
    aiokafka_consumer = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    coordinator = getattr(aiokafka_consumer, "_coordinator", None)
    return coordinator is not None and getattr(coordinator, "coordinator_id", None) is not None


def _recovery_completed(app: Any) -> bool:
    tables = app.__dict__.get("tables")  # faust's cached_property stores the manager in the instance dict
    recovery = getattr(tables, "_recovery", None)
    return recovery is not None and recovery.completed.is_set()
