"""Run the fetcher in a subprocess for the fault scenarios (so it can be SIGKILLed).

    python tests/reliability/rel_fetcher_process.py '<Settings JSON>'

SIGTERM / SIGINT stop it gracefully (in-flight calls finish, offsets are committed).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from ingest.fetch.service import run_fetcher
from paystream.config import Settings
from paystream.logs import configure


async def fetch_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_fetcher(settings, stop)


if __name__ == "__main__":
    configure("warning", "console", process="fetcher-test")
    asyncio.run(fetch_until_signalled(Settings.model_validate_json(sys.argv[1])))
