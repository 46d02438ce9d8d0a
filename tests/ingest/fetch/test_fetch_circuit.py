"""The circuit breaker per provider account (fake clock)."""

from __future__ import annotations

import pytest

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


# --- the reset wait: short at first, doubled per failed probe, capped -------------------------------------


def _opened(clock: FakeClock, *, first: float = 1.0, ceiling: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=ceiling, first_reset_s=first, clock=clock)
    for _ in range(3):
        assert breaker.try_acquire()
        breaker.record_failure()
    return breaker


def test_the_first_probe_goes_after_the_short_first_reset() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    assert breaker.seconds_until_probe() == 1.0
    clock.now += 0.999
    assert not breaker.try_acquire()
    clock.now += 0.001
    assert breaker.try_acquire()


def test_each_failed_probe_doubles_the_wait_up_to_the_ceiling() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    waits = []
    for _ in range(8):
        waits.append(breaker.seconds_until_probe())
        clock.now += waits[-1]
        assert breaker.try_acquire()
        breaker.record_failure()
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_successful_probe_starts_the_next_outage_short_again() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    for _ in range(3):  # three failed probes: the wait grew to 8 s
        clock.now += breaker.seconds_until_probe()
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.seconds_until_probe() == 8.0
    clock.now += 8.0
    assert breaker.try_acquire()
    breaker.record_success()
    for _ in range(3):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.seconds_until_probe() == 1.0


def test_the_closing_note_says_how_long_the_account_was_cut_off() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    for _ in range(2):
        clock.now += breaker.seconds_until_probe()
        assert breaker.try_acquire()
        breaker.record_failure()
    clock.now += breaker.seconds_until_probe()
    assert breaker.try_acquire()
    clock.now += 0.25  # the probe's answer takes a moment
    breaker.record_success()
    assert breaker.last_outage is not None
    assert breaker.last_outage.open_s == 1.0 + 2.0 + 4.0 + 0.25
    assert breaker.last_outage.failed_probes == 2


def test_answers_of_calls_sent_before_it_opened_do_not_extend_the_wait() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 0.5
    breaker.record_failure()  # a call that was already in flight
    assert breaker.seconds_until_probe() == 0.5


def test_a_first_reset_longer_than_the_ceiling_is_the_ceiling() -> None:
    breaker = _opened(FakeClock(), first=60.0, ceiling=30.0)
    assert breaker.seconds_until_probe() == 30.0


def recovery_after_outage(breaker: CircuitBreaker, clock: FakeClock, outage_s: float) -> float:
    """A request every 0.1 s (and each failing one retried), the provider down for ``outage_s`` from the
    first request on; returns how long after the outage the first call went through."""
    started = clock.now
    while True:
        if breaker.try_acquire():
            if clock.now - started < outage_s:
                breaker.record_failure()
            else:
                breaker.record_success()
                return clock.now - started - outage_s
        clock.now = round(clock.now + 0.1, 6)


def test_recovery_after_a_5_s_outage_takes_seconds_not_the_ceiling() -> None:
    """The issue's measurement, on a fake clock: the old breaker (one fixed 30 s reset) against the new one
    (1 s first reset, doubled per failed probe, 30 s ceiling); threshold 5 as by default."""
    old_clock, new_clock = FakeClock(), FakeClock()
    old = CircuitBreaker(5, 30.0, clock=old_clock)
    new = CircuitBreaker(5, 30.0, first_reset_s=1.0, clock=new_clock)
    old_recovery = recovery_after_outage(old, old_clock, 5.0)
    new_recovery = recovery_after_outage(new, new_clock, 5.0)
    print(f"\nrecovery after a 5 s outage: fixed 30 s reset {old_recovery:.1f} s, growing reset {new_recovery:.1f} s")
    assert old_recovery == pytest.approx(25.4)  # opened at 0.4 s (5th failure), probe at 30.4 s
    assert new_recovery == pytest.approx(2.4)  # probes at 1.4 s, 3.4 s (failed), 7.4 s (through)
    assert new.last_outage is not None and new.last_outage.failed_probes == 2
