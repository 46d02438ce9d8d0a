"""``paystream process``: run the processor until SIGTERM / SIGINT, then stop gracefully.

Three threads:

* the **engine** (main thread): the Quix Streams application (:mod:`processors.topology`), which owns the
  signal handlers while it runs — on SIGTERM it finishes the record in hand, commits its checkpoint (the
  transaction under exactly-once) and leaves the consumer group. When it fails (a long broker outage) the
  worker builds a fresh one (:func:`run_engine`);
* the **operations** thread: an asyncio loop serving ``/healthz``, ``/readyz`` (:mod:`processors.readiness`)
  and ``/metrics`` on ``Settings.metrics_port``. It starts before the topics are ensured, so a worker waiting
  for an unreachable broker is alive (just not ready), and stops after the engine, so probes answer during a
  graceful shutdown too;
* the **freshness** thread: follows the current-state topic for the freshness gauges
  (:mod:`processors.freshness`; ``ProcessorSettings.freshness_gauges``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ingest.providers.parsing import PUSHING
from paystream.config import Settings
from paystream.errors import InfrastructureError
from paystream.kafka import ensure_topics
from paystream.logs import get_logger
from paystream.metrics import ENGINE_RESTARTS, MISSED_WEBHOOKS
from paystream.probes import probe_server
from processors.freshness import follow_state_topic
from processors.internal_topics import changelog_topic, ensure_internal_topics, migrate_store, refuse_unmigrated
from processors.readiness import Readiness
from processors.settings import ProcessorSettings
from processors.topology import build_application, internal_topics, stream_id, transactional_id

log = get_logger(__name__)

ENSURE_TOPICS_BACKOFF_MAX_S = 10.0
ENGINE_RESTART_BACKOFF_MAX_S = 30.0
ENGINE_HEALTHY_AFTER_S = 60.0
OPERATIONS_STOP_TIMEOUT_S = 10.0


async def ensure_topics_until_created(settings: Settings) -> None:
    """:func:`ensure_topics`, retried with backoff while the broker is unreachable (the process stays up
    and alive instead of exiting into a restart loop)."""
    delay = 0.5
    while True:
        try:
            await ensure_topics(settings)
            return
        except InfrastructureError as exc:
            log.warning("processor_topics_unavailable", error=str(exc)[:300], retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, ENSURE_TOPICS_BACKOFF_MAX_S)


class OperationsThread(threading.Thread):
    """Probes and freshness gauges on their own event loop, off the engine's thread."""

    def __init__(self, settings: Settings, readiness: Readiness) -> None:
        super().__init__(name="processor-operations", daemon=True)
        self.settings = settings
        self.readiness = readiness
        self.started_serving = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._quit = asyncio.Event()
        async with probe_server(self.settings, self.readiness):
            self.started_serving.set()
            await self._quit.wait()

    def stop(self) -> None:
        if self._loop is not None and self._quit is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._quit.set)
        self.join(OPERATIONS_STOP_TIMEOUT_S)


class FreshnessThread(threading.Thread):
    """Follows payments.state.v1 for the freshness gauges (:mod:`processors.freshness`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="processor-freshness", daemon=True)
        self.settings = settings
        self.quit = threading.Event()

    def run(self) -> None:
        try:
            follow_state_topic(self.settings, self.quit)
        except Exception:  # the gauges stop moving; processing goes on (and the alert on them says so)
            log.exception("freshness_follow_failed")

    def stop(self) -> None:
        self.quit.set()
        self.join(OPERATIONS_STOP_TIMEOUT_S)


class _StopBeforeRunning(Exception):
    """SIGTERM / SIGINT while the engine was not running: waiting for the broker, building its application,
    or waiting to restart it."""


def _stop_before_running(_signum: int, _frame: object) -> None:
    raise _StopBeforeRunning


def _arm_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_before_running)


class Engine(Protocol):
    def run(self) -> object: ...


def run_engine(build: Callable[[], Engine], *, backoff_max_s: float = ENGINE_RESTART_BACKOFF_MAX_S,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    """Run the engine until it stops gracefully (SIGTERM / SIGINT).

    Quix Streams ends its run loop with an exception on engine failures it does not retry itself: a broker
    outage longer than the transaction timeout, or a group membership lost during one (the checkpoint's
    offsets are refused). Its open transaction is aborted and nothing was committed past the last
    checkpoint, so a fresh application resumes exactly there. The worker builds one after a backoff (1 s,
    doubling up to ``backoff_max_s``; back to 1 s once an engine ran for a minute) instead of exiting into a
    restart loop: the process and its probes stay up (alive, not ready)."""
    delay = 1.0
    while True:
        _arm_signals()  # the engine installs its own handlers while it runs
        app = build()
        started = clock()
        try:
            app.run()
            return
        except Exception as exc:
            ENGINE_RESTARTS.inc()
            if clock() - started > ENGINE_HEALTHY_AFTER_S:
                delay = 1.0
            log.error("processor_engine_failed", error_class=type(exc).__name__, error=str(exc)[:500],
                      restart_in_s=delay)
        _arm_signals()
        sleep(delay)
        delay = min(delay * 2, backoff_max_s)


def run_processor(settings: Settings, processor: ProcessorSettings | None = None) -> None:
    """Blocking, until SIGTERM / SIGINT (graceful); an engine failure restarts the engine (:func:`run_engine`).
    Must run in the main thread: the engine installs its own SIGTERM / SIGINT handlers while it runs; outside
    that a signal ends the worker cleanly (nothing is in flight then)."""
    conf = processor or settings.processor
    settings = settings.model_copy(update={"processor": conf})
    readiness = Readiness()
    operations = OperationsThread(settings, readiness)
    operations.start()
    operations.started_serving.wait(OPERATIONS_STOP_TIMEOUT_S)
    freshness: FreshnessThread | None = None
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    _arm_signals()
    try:
        # The processor reads and writes the public topics: make sure they exist before subscribing; its
        # internal topics get their size limits before the engine would create them without.
        asyncio.run(ensure_topics_until_created(settings))
        refuse_unmigrated(settings, conf, changelog_topic(conf.app_id, stream_id(settings, conf)))
        ensure_internal_topics(settings, conf, inputs=internal_topics(settings, conf))
        # A labelled counter's series exists from its first increment on, which increase() cannot see:
        # create the alerted ones at zero so their first step counts.
        for provider in PUSHING:
            MISSED_WEBHOOKS.labels(provider)
        if conf.freshness_gauges:
            freshness = FreshnessThread(settings)
            freshness.start()
        log.info("processor_starting", app_id=conf.app_id, transactional_id=transactional_id(conf),
                 epoch=conf.epoch, bootstrap=settings.kafka.bootstrap,
                 guarantee=conf.processing_guarantee, commit_interval_s=conf.commit_interval_s,
                 metrics_port=settings.metrics_port)
        # Everything loaded so far (modules, settings, catalogs) lives as long as the worker: moved out of the
        # collector's generations, it is not traversed again on every collection of the per-record garbage.
        gc.collect()
        gc.freeze()
        run_engine(lambda: build_application(settings, conf, readiness))
        log.info("processor_stopped", app_id=conf.app_id)
    except _StopBeforeRunning:
        log.info("processor_stopped_before_start", app_id=conf.app_id)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        readiness.stopping = True
        if freshness is not None:
            freshness.stop()
        operations.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--migrate-store", action="store_true",
        help="copy the state of the two-stage processor (its changelog) into the single stage's store, once, with "
             "every worker stopped, then exit (docs/operations.md, 'Upgrading to the single-stage processor')")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream process`` subcommand."""
    conf = settings.processor
    if getattr(args, "migrate_store", False):
        migrate_store(settings, conf, changelog_topic(conf.app_id, stream_id(settings, conf)))
        return 0
    run_processor(settings, conf)
    return 0
