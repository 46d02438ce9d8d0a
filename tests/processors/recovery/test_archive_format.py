"""The archive's key layout and line format (no broker, no S3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paystream.errors import NormalizationError
from processors.recovery.archive_format import (
    ArchivedRecord,
    day_prefixes,
    decode_object,
    encode_object,
    hour_of,
    object_key,
    parse_object_key,
)

RECORD = ArchivedRecord(
    topic="payments.inbox.v1",
    partition=2,
    offset=41,
    timestamp_ms=1_735_700_400_123,  # 2025-01-01T03:00:00.123Z
    key=b"stripe:eu:evt_1",
    value=bytes(range(256)),
    headers=(("trace", b"\x00\xff"), ("trace", b"second"), ("empty", b"")),
)


def test_line_round_trip_keeps_every_byte_and_header_order() -> None:
    assert ArchivedRecord.from_line(RECORD.to_line()) == RECORD


def test_line_round_trip_keeps_null_key_and_value_apart_from_empty() -> None:
    record = ArchivedRecord("t", 0, 0, 0, key=None, value=b"", headers=())
    assert ArchivedRecord.from_line(record.to_line()) == record


def test_malformed_line_is_a_normalization_error() -> None:
    with pytest.raises(NormalizationError):
        ArchivedRecord.from_line(b'{"topic": "t"}')


def test_object_key_follows_the_layout() -> None:
    key = object_key("raw", RECORD.topic, RECORD.partition, RECORD.offset, hour_of(RECORD.timestamp_ms))
    assert key == "raw/payments.inbox.v1/dt=2025-01-01/hour=03/payments.inbox.v1+2+41.jsonl.gz"


def test_object_key_parses_back() -> None:
    hour = hour_of(RECORD.timestamp_ms)
    parts = parse_object_key(object_key("raw/", "payments.inbox.v1", 5, 7, hour))
    assert parts is not None
    assert (parts.topic, parts.partition, parts.first_offset, parts.hour) == ("payments.inbox.v1", 5, 7, hour)


def test_foreign_key_is_not_an_archive_object() -> None:
    assert parse_object_key("raw/payments.inbox.v1/README.txt") is None


def test_encoding_is_deterministic_so_a_reupload_is_an_identical_overwrite() -> None:
    lines = [RECORD.to_line()] * 3
    assert encode_object(lines) == encode_object(lines)
    assert list(decode_object(encode_object(lines))) == [RECORD] * 3


def test_day_prefixes_cover_every_day_of_the_range() -> None:
    since = datetime(2025, 1, 30, 22, tzinfo=UTC)
    until = datetime(2025, 2, 1, 1, tzinfo=UTC)
    assert day_prefixes("raw", "t", since, until) == [
        "raw/t/dt=2025-01-30/",
        "raw/t/dt=2025-01-31/",
        "raw/t/dt=2025-02-01/",
    ]


def test_open_range_lists_the_whole_topic() -> None:
    assert day_prefixes("raw", "t", None, None) == ["raw/t/"]
