"""The worker's engine loop (processors.worker.run_engine): a failed engine is rebuilt after a backoff, a
graceful stop ends the loop, and a signal between engines stops the worker cleanly."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from paystream.metrics import ENGINE_RESTARTS
from processors import worker


class FakeEngine:
    """An engine whose run() raises the next scripted error, or returns (a graceful stop)."""

    def __init__(self, script: list[BaseException | None], built: list[FakeEngine]) -> None:
        self.script = script
        built.append(self)

    def run(self) -> None:
        error = self.script.pop(0)
        if error is not None:
            raise error


def test_a_failed_engine_is_rebuilt_with_a_growing_backoff_until_it_stops_gracefully() -> None:
    script: list[BaseException | None] = [RuntimeError("transaction timed out"), RuntimeError("unknown member"),
                                          RuntimeError("unknown member"), None]
    built: list[FakeEngine] = []
    slept: list[float] = []
    before = ENGINE_RESTARTS._value.get()
    worker.run_engine(lambda: FakeEngine(script, built), backoff_max_s=3.0, sleep=slept.append,
                      clock=lambda: 0.0)
    assert len(built) == 4 and script == []
    assert slept == [1.0, 2.0, 3.0]
    assert ENGINE_RESTARTS._value.get() == before + 3


def test_an_engine_that_ran_a_while_restarts_after_the_shortest_backoff() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 70.0  # each engine runs 70 s before it fails: longer than a healthy minute
        return now[0]

    script: list[BaseException | None] = [RuntimeError("a"), RuntimeError("b"), None]
    slept: list[float] = []
    worker.run_engine(lambda: FakeEngine(script, []), sleep=slept.append, clock=clock)
    assert slept == [1.0, 1.0]


def test_a_graceful_stop_runs_the_engine_once() -> None:
    built: list[FakeEngine] = []
    worker.run_engine(lambda: FakeEngine([None], built), sleep=pytest.fail)
    assert len(built) == 1


def test_sigterm_while_waiting_to_restart_stops_the_worker() -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def sleep(_seconds: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler the loop armed raises here

    try:
        with pytest.raises(worker._StopBeforeRunning):
            worker.run_engine(lambda: FakeEngine([RuntimeError("down"), None], []), sleep=sleep)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_engine_loop_arms_its_handlers_before_every_build() -> None:
    handlers: list[Any] = []
    previous = signal.getsignal(signal.SIGTERM)

    def build() -> FakeEngine:
        handlers.append(signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what an engine does while it runs: its own handler
        return FakeEngine([RuntimeError("down")] if not handlers[1:] else [None], [])

    try:
        worker.run_engine(build, sleep=lambda _s: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handlers == [worker._stop_before_running, worker._stop_before_running]
