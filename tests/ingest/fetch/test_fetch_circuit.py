"""The circuit breaker per provider account (fake clock)."""

from __future__ import annotations

from ingest.fetch.circuit import CircuitBreaker, CircuitState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open_breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=30.0, clock=clock)
    for _ in range(3):
        assert breaker.try_acquire()
        breaker.record_failure()
    return breaker


def test_opens_after_consecutive_failures() -> None:
    breaker = _open_breaker(FakeClock())
    assert breaker.state is CircuitState.OPEN
    assert not breaker.try_acquire()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=30.0, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = _open_breaker(clock)
    clock.now += 30.0
    assert breaker.try_acquire()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.try_acquire()


def test_successful_probe_closes() -> None:
    clock = FakeClock()
    breaker = _open_breaker(clock)
    clock.now += 30.0
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.try_acquire()


def test_failed_probe_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = _open_breaker(clock)
    clock.now += 30.0
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_probe() == 30.0


def test_neutral_answer_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = _open_breaker(clock)
    clock.now += 30.0
    assert breaker.try_acquire()
    breaker.record_neutral()
    assert breaker.try_acquire()
