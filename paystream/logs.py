"""The one structlog configuration: JSON lines rendered by orjson, context from contextvars.

Call :func:`configure` once at process start. Bind per-message context with
``structlog.contextvars.bound_contextvars(delivery_id=..., payment_key=...)``. Secrets never reach the
output: :class:`pydantic.SecretStr` renders as stars, and :func:`redact_secrets` masks values of keys
that name secrets and anything that looks like a card number (PAN).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from pydantic import SecretStr

_SECRET_KEY = re.compile(r"(secret|password|token|authorization|api_key|private_key|signature)", re.I)
# 13-19 digits, optionally separated by spaces or dashes: a card number must never be logged.
_PAN = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_MASK = "**********"


def _mask_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _MASK
    if isinstance(value, str):
        return _PAN.sub(_mask_pan, value)
    if isinstance(value, bytes):
        return _mask_value(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: (_MASK if _SECRET_KEY.search(str(k)) else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


def _mask_pan(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return _MASK if _luhn_ok(digits) else match.group(0)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys, SecretStr values and card numbers."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key):
            event_dict[key] = _MASK
        else:
            event_dict[key] = _mask_value(event_dict[key])
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode("utf-8")


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def configure(level: str = "info", fmt: str = "json", process: str | None = None) -> None:
    """Configure structlog (and route stdlib logging, e.g. aiokafka's, through the same renderer)."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[*shared_processors()]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Third-party libraries are noisy at info; our own loggers carry the story.
    root.setLevel(max(numeric, logging.WARNING))
    if process:
        structlog.contextvars.bind_contextvars(process=process)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
