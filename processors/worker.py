"""``run_processor``: run the processor's faust worker until SIGTERM / SIGINT (graceful shutdown).

Operations endpoints (``paystream.probes``) on ``Settings.metrics_port``: ``/healthz``, ``/readyz``
(:mod:`processors.readiness`), ``/metrics``. They are served on the worker's event loop by a small mode
service that starts *before* the topics are ensured (a pod waiting for an unreachable broker is alive,
just not ready) and is stopped by the faust worker after the app, so probes answer during a graceful
shutdown too (``/readyz`` says 503 "stopping" then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import faust
import mode

from paystream.config import Settings
from paystream.errors import InfrastructureError
from paystream.kafka import ensure_topics
from paystream.logs import get_logger
from paystream.probes import probe_server
from processors.app import create_app
from processors.readiness import is_ready, worker_state
from processors.settings import ProcessorSettings

log = get_logger(__name__)

ENSURE_TOPICS_BACKOFF_MAX_S = 10.0


class ProbeService(mode.Service):
    """``paystream.probes.probe_server`` as a mode service, so the faust worker stops it (on its own loop,
    before closing that loop) like any of its services."""

    def __init__(self, settings: Settings, ready: Callable[[], bool], **kwargs: Any) -> None:
        self._settings = settings
        self._ready = ready
        self._stack = contextlib.AsyncExitStack()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self._stack.enter_async_context(probe_server(self._settings, self._ready))

    async def on_stop(self) -> None:
        await self._stack.aclose()


class _Readiness:
    """The ``/readyz`` callback; not ready until the faust app exists."""

    def __init__(self) -> None:
        self.app: faust.App | None = None

    def __call__(self) -> bool:
        return self.app is not None and is_ready(worker_state(self.app))


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


def run_processor(settings: Settings, processor: ProcessorSettings | None = None) -> None:
    """Blocking. The worker's signal handlers stop the agents, wait for the batch in flight (faust
    ``stream_wait_empty``), commit offsets and flush table changelogs before the process exits."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    readiness = _Readiness()
    probes = ProbeService(settings, readiness, loop=loop)
    loop.run_until_complete(probes.start())
    try:
        # The processor reads and writes the public topics: make sure they exist before subscribing.
        loop.run_until_complete(ensure_topics_until_created(settings))
        app = create_app(settings, processor)
    except BaseException:  # the worker never took over the probes: stop them here
        loop.run_until_complete(probes.stop())
        loop.close()
        raise
    readiness.app = app
    log.info("processor_starting", app_id=app.conf.id, bootstrap=settings.kafka.bootstrap,
             store=str(app.conf.store), metrics_port=settings.metrics_port)
    # `probes` (already started) becomes one of the worker's services: stopped after the app, before the
    # worker closes the loop.
    worker = faust.Worker(app, probes, loop=loop, loglevel=settings.log_level.upper(), redirect_stdouts=False,
                          quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream process`` subcommand."""
    run_processor(settings, settings.processor)
    return 0
