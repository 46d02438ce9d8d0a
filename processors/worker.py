"""``run_processor``: run the processor's faust worker until SIGTERM / SIGINT (graceful shutdown)."""

from __future__ import annotations

import argparse
import asyncio

import faust
from prometheus_client import start_http_server

from paystream.config import Settings
from paystream.kafka import ensure_topics
from paystream.logs import get_logger
from processors.app import create_app
from processors.settings import ProcessorSettings

log = get_logger(__name__)


def run_processor(settings: Settings, processor: ProcessorSettings | None = None) -> None:
    """Blocking. The worker's signal handlers stop the agents, wait for the batch in flight (faust
    ``stream_wait_empty``), commit offsets and flush table changelogs before the process exits."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The processor reads and writes the public topics: make sure they exist before subscribing.
    loop.run_until_complete(ensure_topics(settings))
    app = create_app(settings, processor)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    log.info("processor_starting", app_id=app.conf.id, bootstrap=settings.kafka.bootstrap,
             store=str(app.conf.store))
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level.upper(), redirect_stdouts=False,
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
