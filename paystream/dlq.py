"""Dead letters: the failed record goes to ``payments.dlq.v1`` unchanged (same key, same value, its own
headers kept) with headers that say what failed, where the record came from and when it first failed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from paystream.errors import NormalizationError

ERROR_CLASS = "paystream-error-class"
ERROR_MESSAGE = "paystream-error-message"
ERROR_REASON = "paystream-error-reason"
SOURCE_TOPIC = "paystream-source-topic"
SOURCE_PARTITION = "paystream-source-partition"
SOURCE_OFFSET = "paystream-source-offset"
FIRST_FAILURE_AT = "paystream-first-failure-at"
OURS = frozenset({ERROR_CLASS, ERROR_MESSAGE, ERROR_REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET,
                  FIRST_FAILURE_AT})
MAX_MESSAGE_CHARS = 1000


def reason_of(error: BaseException) -> str:
    """A short, bounded metric label: the NormalizationError reason, else ``unexpected``."""
    return error.reason if isinstance(error, NormalizationError) else "unexpected"


def dlq_headers(
    original: Iterable[tuple[str, bytes]],
    *,
    error: BaseException,
    topic: str,
    partition: int,
    offset: int,
    now: datetime,
) -> list[tuple[str, bytes]]:
    """The original headers plus ours. A record dead-lettered before (and replayed) keeps its first
    failure time; the other error headers describe the latest failure."""
    kept = [(name, value) for name, value in original if name not in OURS]
    first = next((value for name, value in original if name == FIRST_FAILURE_AT), None)
    message = str(error)[:MAX_MESSAGE_CHARS]
    return [
        *kept,
        (ERROR_CLASS, type(error).__name__.encode()),
        (ERROR_MESSAGE, message.encode("utf-8", "replace")),
        (ERROR_REASON, reason_of(error).encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (FIRST_FAILURE_AT, first if first is not None else _rfc3339(now).encode()),
    ]


def _rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, trailing Z: the time format of every topic (``schemas.envelopes``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
