"""A circuit breaker per provider account: stop calling a provider that keeps failing, probe it later."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class CircuitState(IntEnum):
    # The values are what ``paystream_fetch_circuit_state`` reports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures (5xx, timeouts); after
    ``reset_after_s`` one probe call is let through (half-open): success closes, failure reopens."""

    def __init__(
        self, failure_threshold: int, reset_after_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        return self._state

    def try_acquire(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time may."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            if self._clock() - self._opened_at < self.reset_after_s:
                return False
            self._state = CircuitState.HALF_OPEN
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def seconds_until_probe(self) -> float:
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self.reset_after_s - self._clock())
        return 0.0

    def record_success(self) -> None:
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()

    def record_neutral(self) -> None:
        """An answer that says nothing about the provider's health (e.g. 429): a probe may go again."""
        self._probe_in_flight = False
