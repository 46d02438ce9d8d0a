"""A circuit breaker per provider account: stop calling a provider that keeps failing, probe it later.

The wait before a probe starts short and doubles with every failed probe, up to a ceiling: a provider that
was down for a few seconds is called again a moment after it is back, while one that stays down is still
probed only once per ceiling (a fixed 30 s wait made every request of the account wait ~30 s after a
5 s outage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class CircuitState(IntEnum):
    # The values are what ``paystream_fetch_circuit_state`` reports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class Outage:
    """One open period, from the circuit opening until a probe succeeded (for the closing log line)."""

    open_s: float  # how long no normal call went out: from opening until the successful probe answered
    failed_probes: int


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures (5xx, 408, timeouts). While open, one
    probe call is let through (half-open) after a reset wait: success closes, failure reopens with the wait
    doubled. The first wait is ``first_reset_s``, the longest ``reset_after_s``."""

    def __init__(
        self,
        failure_threshold: int,
        reset_after_s: float,
        *,
        first_reset_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.first_reset_s = min(reset_after_s, first_reset_s if first_reset_s is not None else reset_after_s)
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._outage_started = 0.0
        self._failed_probes = 0
        self._probe_in_flight = False
        self.last_outage: Outage | None = None

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def current_reset_s(self) -> float:
        """The wait before the next probe: doubled per failed probe of this outage, capped."""
        return min(self.reset_after_s, self.first_reset_s * (1 << min(self._failed_probes, 62)))

    def try_acquire(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time may."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            if self._clock() - self._opened_at < self.current_reset_s:
                return False
            self._state = CircuitState.HALF_OPEN
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def seconds_until_probe(self) -> float:
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self.current_reset_s - self._clock())
        return 0.0

    def record_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            self.last_outage = Outage(self._clock() - self._outage_started, self._failed_probes)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._failed_probes = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        now = self._clock()
        if self._state is CircuitState.HALF_OPEN:
            self._failed_probes += 1
            self._state = CircuitState.OPEN
            self._opened_at = now
        elif self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold:
            self._state = CircuitState.OPEN
            self._opened_at = self._outage_started = now
            self._failed_probes = 0
            self.last_outage = None

    def record_neutral(self) -> None:
        """An answer that says nothing about the provider's health (e.g. 429): a probe may go again."""
        self._probe_in_flight = False
