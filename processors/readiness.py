"""What ``GET /readyz`` of ``paystream process`` means: this worker is in its consumer group and consuming.

The signal comes from librdkafka's own statistics (the documented ``stats_cb`` / ``statistics.interval.ms``
of the consumer Quix Streams runs on), so nothing reads the engine's internals:

* the worker is not stopping (a worker draining on SIGTERM takes no new work);
* a broker connection is up (``brokers.*.state == "UP"`` for a real node): a broker outage makes the worker
  unready, never unhealthy — ``/healthz`` does not look at any of this;
* the consumer group is joined and stable (``cgrp.state == "up"`` and ``cgrp.join_state == "steady"``): not
  while joining or rebalancing;
* the statistics are recent (three intervals): a consumer that stopped reporting is not trusted.

Changelog recovery after an assignment runs inside the steady group and is short with on-disk state; it is
not reported separately (Quix Streams offers no public signal for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from paystream.logs import get_logger

log = get_logger(__name__)

STATS_INTERVAL_MS = 2000


@dataclass(frozen=True, slots=True)
class ConsumerSnapshot:
    broker_up: bool
    group_state: str  # librdkafka cgrp.state: "init", "wait-coord", "up", ...
    join_state: str  # librdkafka cgrp.join_state: "init", "wait-join", "steady", ...
    assigned_partitions: int


def snapshot_of(stats: dict[str, Any]) -> ConsumerSnapshot:
    """The fields readiness needs from one librdkafka statistics document."""
    brokers = stats.get("brokers", {}) or {}
    broker_up = any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values())
    group = stats.get("cgrp", {}) or {}
    return ConsumerSnapshot(broker_up, str(group.get("state", "unknown")), str(group.get("join_state", "unknown")),
                            int(group.get("assignment_size", 0) or 0))


def not_ready_reason(snapshot: ConsumerSnapshot | None, *, stopping: bool, age_s: float,
                     max_age_s: float) -> str | None:
    """``None`` when ready, else the first reason the worker is not (reported in the 503 body / logs)."""
    if stopping:
        return "stopping"
    if snapshot is None:
        return "consumer not started"
    if age_s > max_age_s:
        return f"no consumer statistics for {age_s:.0f}s"
    if not snapshot.broker_up:
        return "no broker connection (broker unreachable?)"
    if snapshot.group_state != "up":
        return f"consumer group {snapshot.group_state}"
    if snapshot.join_state != "steady":
        return f"rebalancing ({snapshot.join_state})"
    return None


class Readiness:
    """Fed by the consumer's ``stats_cb`` (engine thread), read by the probe server (its own thread)."""

    def __init__(self, interval_ms: int = STATS_INTERVAL_MS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_ms = interval_ms
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: ConsumerSnapshot | None = None
        self._at = 0.0
        self.stopping = False

    def observe(self, stats_json: str) -> None:
        """The ``stats_cb`` of the consumer's librdkafka configuration."""
        try:
            snapshot = snapshot_of(orjson.loads(stats_json))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            log.warning("processor_stats_unreadable", error=str(exc)[:200])
            return
        with self._lock:
            self._snapshot, self._at = snapshot, self.clock()

    def reason(self) -> str | None:
        with self._lock:
            snapshot, at = self._snapshot, self._at
        return not_ready_reason(snapshot, stopping=self.stopping, age_s=self.clock() - at,
                                max_age_s=3 * self.interval_ms / 1000)

    def __call__(self) -> bool | str:
        """``True`` when ready, else the reason (the probe server's ``ready`` callback)."""
        reason = self.reason()
        return True if reason is None else reason
