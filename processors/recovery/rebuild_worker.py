"""The processor worker of ``paystream rebuild --through-processors``, as a child process.

    python -m processors.recovery.rebuild_worker  < settings.json

Why a child process: the Quix Streams application must run in a main thread (it installs the SIGTERM /
SIGINT handlers that make its shutdown graceful), while the rebuild itself is an asyncio program; a child
also keeps the engine's librdkafka threads and RocksDB files out of the operator's process, and SIGTERM is
the same graceful stop as in production.

The settings come as JSON on stdin, with secrets in clear (:func:`settings_json`): never through argv or the
environment, where other users of the machine could read them. Every field is given, and given values win
over the environment, so the operator's ``PAYSTREAM_*`` variables (the LIVE topic names, app id) cannot
override the rebuild's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from paystream.config import Settings


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def settings_json(settings: Settings) -> bytes:
    """All of ``settings`` as JSON, secrets included (``model_dump_json`` would write ``**********``)."""
    return orjson.dumps(settings.model_dump(mode="python"), default=_plain)


def main() -> None:
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    # Imported after the settings are read: a broken pipe fails fast, before the engine loads.
    from paystream.logs import configure
    from processors.worker import run_processor

    configure(settings.log_level, settings.log_format, process="rebuild-processor")
    run_processor(settings, settings.processor)


if __name__ == "__main__":
    main()
