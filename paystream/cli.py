"""The ``paystream`` command line: one entry point, one subcommand per process (DESIGN §4.4).

Every subcommand reads the same settings (environment ``PAYSTREAM_*`` and the optional TOML file named
by ``PAYSTREAM_CONFIG_FILE``); ``paystream <command> --help`` explains each.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from paystream import __version__
from paystream.config import Settings, load_settings
from paystream.errors import ConfigurationError, PaystreamError
from paystream.logs import configure

EPILOG = """configuration:
  environment variables PAYSTREAM_* (nested with __, e.g. PAYSTREAM_KAFKA__BOOTSTRAP; the shortcuts
  PAYSTREAM_KAFKA_BOOTSTRAP and PAYSTREAM_S3_ENDPOINT_URL work too) and the TOML file named by
  PAYSTREAM_CONFIG_FILE for provider accounts. See README.md#configuration.
"""

# name -> (help, "module:function" building the arguments, "module:function" running it)
# A runner takes (settings, args) and returns the exit code.
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "ingest": ("receive signed provider pushes over HTTP and publish them to the inbox topic",
               "ingest.server:add_arguments", "ingest.server:main"),
    "process": ("normalize, dedupe and reconcile observations into payments.status.v1 (Quix Streams worker)",
                "processors.worker:add_arguments", "processors.worker:main"),
    "fetch": ("fetch provider state for thin pushes, hints, sweeps and stale payments",
              None, "ingest.fetch.service:main"),
    "archive": ("archive raw deliveries and fetch results to S3 as encrypted gzip JSON lines",
                "processors.recovery.archive:add_archive_arguments", "processors.recovery.archive:main"),
    "replay": ("republish archived (S3) or retained (Kafka) deliveries into the inbox",
               "processors.recovery.replay:add_replay_arguments", "processors.recovery.replay:run_replay"),
    "rebuild": ("re-derive payment state from the archive and diff it against the live status stream",
                "processors.recovery.rebuild:add_rebuild_arguments", "processors.recovery.rebuild:run_rebuild"),
    "tail": ("follow payments.status.v1 and print one readable line per status change",
             "processors.tail:add_arguments", "processors.tail:main"),
    "run": ("run every process at once for local use (ingest, process, fetch, archive)",
            "processors.devrun:add_arguments", "processors.devrun:run_all"),
}


def _resolve(target: str) -> Callable[..., Any] | None:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "this part is not built yet" is tolerated; a missing third-party import is a real error.
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            return None
        raise
    function = getattr(module, attribute, None)
    return function if callable(function) else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paystream",
        description="Payment-provider notifications, polls and sync results as one payment-status stream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"paystream {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                        help="override PAYSTREAM_LOG_LEVEL")
    parser.add_argument("--log-format", choices=["json", "console"], default=None,
                        help="override PAYSTREAM_LOG_FORMAT (json for machines, console for people)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _runner) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if add_arguments is not None:
            adder = _resolve(add_arguments)
            if adder is not None:
                adder(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings: Settings = load_settings()
    except ConfigurationError as exc:
        print(f"paystream: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(level=args.log_level or settings.log_level, fmt=args.log_format or settings.log_format,
              process=args.command)
    runner = _resolve(COMMANDS[args.command][2])
    if runner is None:
        print(f"paystream {args.command}: not implemented yet", file=sys.stderr)
        return 3
    try:
        return int(runner(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except PaystreamError as exc:
        print(f"paystream {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
