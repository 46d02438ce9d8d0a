"""The publisher's murmur2 partitioner must place every key where Java clients (and aiokafka) do."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from ingest.publisher import java_compatible_partition, murmur2


# Partitions chosen by Kafka's Java partitioner among 1000, as published in aio-libs/aiokafka
# tests/test_partitioner.py (commit a1f5b763404d4fdac123c81c6e37da5f5c276c8a).
@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_matches_the_java_client(key: bytes, partition: int) -> None:
    assert java_compatible_partition(key, list(range(1000)), list(range(1000))) == partition


@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=120), st.integers(min_value=1, max_value=64))
def test_partition_equals_aiokafkas_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert java_compatible_partition(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert java_compatible_partition(None, [0, 1, 2, 3], [2]) == 2
