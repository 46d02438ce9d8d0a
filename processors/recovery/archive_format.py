"""The archive's object layout and line format, shared by the archiver, replay and rebuild.

An object holds consecutive records of ONE topic partition from ONE hour (by record timestamp, UTC):

    {prefix}/{topic}/dt=YYYY-MM-DD/hour=HH/{topic}+{partition}+{first_offset}.jsonl.gz

Each line is one Kafka record as JSON: topic, partition, offset, timestamp (ms), key, value (base64, or
null) and headers (a list of ``[name, base64 value]`` pairs, order and repeats kept). Base64 keeps the
bytes exact whatever they contain. The key is a pure function of the first record, so uploading the same
batch again overwrites the object instead of adding a second copy; objects are gzipped with ``mtime=0``
so the same records always give the same bytes.
"""

from __future__ import annotations

import base64
import gzip
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from paystream.errors import NormalizationError

_KEY_PATTERN = re.compile(
    r"(?:^|/)(?P<topic>[^/]+)/dt=(?P<day>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P=topic)\+(?P<partition>\d+)\+(?P<first_offset>\d+)\.jsonl\.gz$"
)


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    """One Kafka record exactly as it was on the topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_consumer_record(cls, record: Any) -> ArchivedRecord:
        """From an aiokafka ``ConsumerRecord`` (untyped upstream, hence ``Any``)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=max(int(record.timestamp), 0),
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value)) for name, value in (record.headers or ())),
        )

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def to_line(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "topic": self.topic,
                    "partition": self.partition,
                    "offset": self.offset,
                    "timestamp": self.timestamp_ms,
                    "key": _b64(self.key),
                    "value": _b64(self.value),
                    "headers": [[name, _b64(value)] for name, value in self.headers],
                }
            )
            + b"\n"
        )

    @classmethod
    def from_line(cls, line: bytes) -> ArchivedRecord:
        try:
            raw = orjson.loads(line)
            return cls(
                topic=raw["topic"],
                partition=int(raw["partition"]),
                offset=int(raw["offset"]),
                timestamp_ms=int(raw["timestamp"]),
                key=_unb64(raw["key"]),
                value=_unb64(raw["value"]),
                headers=tuple((str(name), _unb64(value) or b"") for name, value in raw["headers"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise NormalizationError(f"archive line: {exc}", reason="malformed_archive_line") from exc


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def hour_of(timestamp_ms: int) -> datetime:
    """The UTC hour a record belongs to (the ``dt=``/``hour=`` of its object)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).replace(minute=0, second=0, microsecond=0)


def topic_prefix(prefix: str, topic: str) -> str:
    base = prefix.strip("/")
    return f"{base}/{topic}/" if base else f"{topic}/"


def day_prefix(prefix: str, topic: str, day: datetime) -> str:
    return f"{topic_prefix(prefix, topic)}dt={day:%Y-%m-%d}/"


def object_key(prefix: str, topic: str, partition: int, first_offset: int, hour: datetime) -> str:
    return f"{day_prefix(prefix, topic, hour)}hour={hour:%H}/{topic}+{partition}+{first_offset}.jsonl.gz"


@dataclass(frozen=True, slots=True, order=True)
class ObjectKeyParts:
    """What an object key says; sorts by hour, then partition, then offset."""

    hour: datetime
    partition: int
    first_offset: int
    topic: str


def parse_object_key(key: str) -> ObjectKeyParts | None:
    """The parts of an archive key, or None for a key that is not an archive object."""
    match = _KEY_PATTERN.search(key)
    if match is None:
        return None
    hour = datetime.strptime(f"{match['day']} {match['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return ObjectKeyParts(hour, int(match["partition"]), int(match["first_offset"]), match["topic"])


def day_prefixes(prefix: str, topic: str, since: datetime | None, until: datetime | None) -> list[str]:
    """The S3 prefixes to list for a time range: one per UTC day, or the whole topic when open-ended."""
    if since is None or until is None:
        return [topic_prefix(prefix, topic)]
    day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    prefixes = []
    while day < until:
        prefixes.append(day_prefix(prefix, topic, day))
        day += timedelta(days=1)
    return prefixes


def encode_object(lines: Iterable[bytes]) -> bytes:
    # mtime=0: the same records always compress to the same bytes (a re-upload is a true overwrite).
    return gzip.compress(b"".join(lines), compresslevel=6, mtime=0)


def decode_object(data: bytes) -> Iterator[ArchivedRecord]:
    for line in gzip.decompress(data).splitlines():
        if line:
            yield ArchivedRecord.from_line(line)
