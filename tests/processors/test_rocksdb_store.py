"""processors.rocksdb_store: every key lives in the RocksDB database of its changelog partition.

Unit tests drive the store directly (no broker); the last test runs the processor worker with the store on
the real broker across a restart, where faust's stock ``rocksdb://`` store re-reads stale copies.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.exceptions import ImproperlyConfigured
from faust.streams import _current_event
from faust.types import TP
from faust.types.tuples import Message
from processor_harness import envelope, events_of, processor_settings, read_until, start_worker, wait_drained

from paystream.config import Settings
from paystream.kafka import make_producer
from processors import rocksdb_store
from processors.rocksdb_store import STORE_URL, KeyPartitionedStore, changelog_partition
from schemas.envelopes import InboxEnvelope

PARTITIONS = 3
KEYS = [f"adyen:main:payment:P{n}".encode() for n in range(40)]


def make_app(datadir: Path, app_id: str = "store-test") -> faust.App:
    rocksdb_store.register()
    return faust.App(app_id, broker="kafka://127.0.0.1:1", store=STORE_URL, datadir=str(datadir),
                     web_enabled=False, autodiscover=False)


def make_table(app: faust.App, name: str = "payments", key_type: Any = bytes) -> Any:
    return app.Table(name, key_type=key_type, value_type=bytes, partitions=PARTITIONS, use_partitioner=True)


def open_partitions(store: Any) -> None:
    """What faust does on assignment: open the database of every partition this worker owns."""
    for partition in range(PARTITIONS):
        store._db_for_partition(partition)


def close(store: Any) -> None:
    for db in store._dbs.values():
        db.close()
    store._dbs.clear()


def partitions_holding(store: Any, key: bytes) -> list[int]:
    return [partition for partition, db in store._dbs.items() if db.get(key) is not None]


def key_in_partition(partition: int, *, other_than: bool = False) -> bytes:
    return next(k for k in KEYS if (changelog_partition(k, PARTITIONS) == partition) != other_than)


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="some-source")


@contextmanager
def current_event_of_partition(partition: int) -> Iterator[None]:
    """What a stream sets while an agent handles an event of ``partition``."""
    event = _Event(partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    table = make_table(make_app(tmp_path))
    data = table.data
    open_partitions(data)
    yield data
    close(data)


def test_scheme_resolves_to_the_key_partitioned_store() -> None:
    rocksdb_store.register()
    rocksdb_store.register()  # idempotent
    assert faust.stores.by_url(STORE_URL) is KeyPartitionedStore


def test_partition_is_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for key in [*KEYS, b"", b"stripe:acct:payment_intent:pi_\xff\x00"]:
        for partitions in (1, 3, 6, 12):
            assert changelog_partition(key, partitions) == partitioner(key, list(range(partitions)), [])


@pytest.mark.parametrize("key_type, key", [(bytes, b"adyen:main:payment:P1"), (str, "adyen:main:payment:P1")])
def test_store_hashes_the_same_bytes_the_changelog_record_carries(tmp_path: Path, key_type: Any, key: Any) -> None:
    table = make_table(make_app(tmp_path), key_type=key_type)
    store = table.data
    changelog_key, _ = table.changelog_topic.prepare_key(key, table.key_serializer)
    assert store._encode_key(key) == changelog_key


def test_write_without_a_current_event_lands_in_the_keys_partition(store: Any) -> None:
    key = key_in_partition(1)
    store[key] = b"v1"
    assert partitions_holding(store, key) == [1]
    assert store[key] == b"v1"


def test_write_during_an_event_of_another_partition_lands_in_the_keys_partition(store: Any) -> None:
    key = key_in_partition(2)
    with current_event_of_partition(0):
        store[key] = b"v1"
    with current_event_of_partition(1):
        store[key] = b"v2"
        assert store[key] == b"v2"
    assert partitions_holding(store, key) == [2]
    assert store[key] == b"v2"
    assert key in store


def test_delete_removes_the_key(store: Any) -> None:
    key = key_in_partition(0)
    with current_event_of_partition(1):
        store[key] = b"v1"
    with current_event_of_partition(2):
        store[key] = b"v2"
    del store[key]
    assert partitions_holding(store, key) == []
    assert key not in store
    with pytest.raises(KeyError):
        store[key]


def test_iteration_over_the_active_partitions_yields_each_key_once(store: Any, monkeypatch: Any) -> None:
    topic = store.table.changelog_topic.get_topic_name()
    monkeypatch.setattr(store.app.assignor, "assigned_actives",
                        lambda: {TP(topic, partition) for partition in range(PARTITIONS)})
    for index, key in enumerate(KEYS):
        for event_partition in (index % PARTITIONS, (index + 1) % PARTITIONS):
            with current_event_of_partition(event_partition):
                store[key] = f"{key!r} seen at {event_partition}".encode()
    items = list(store.items())
    assert sorted(key for key, _ in items) == sorted(KEYS)
    assert dict(items) == {key: f"{key!r} seen at {(i + 1) % PARTITIONS}".encode() for i, key in enumerate(KEYS)}


def test_read_of_a_partition_not_opened_here_is_a_miss_and_opens_nothing(tmp_path: Path) -> None:
    store = make_table(make_app(tmp_path)).data
    store._db_for_partition(0)
    key = key_in_partition(0, other_than=True)
    assert key not in store
    assert store.get(key) is None
    assert set(store._dbs) == {0}
    close(store)


def test_values_survive_reopening_the_databases(tmp_path: Path) -> None:
    first = make_table(make_app(tmp_path)).data
    open_partitions(first)
    written = {key: f"value of {key!r}".encode() for key in KEYS}
    for index, (key, value) in enumerate(written.items()):
        # Two writes of each key while handling events of two different partitions (an older copy is
        # what a misplacing store would find after a restart).
        with current_event_of_partition(index % PARTITIONS):
            first[key] = b"older value"
        with current_event_of_partition((index + 1) % PARTITIONS):
            first[key] = value
    del first[KEYS[0]]
    close(first)

    second = make_table(make_app(tmp_path)).data
    open_partitions(second)
    assert KEYS[0] not in second
    assert {key: second[key] for key in KEYS[1:]} == {key: written[key] for key in KEYS[1:]}
    close(second)


def changelog_event(key: bytes, value: bytes | None, offset: int, topic: str = "store-test-payments-changelog") -> Any:
    partition = changelog_partition(key, PARTITIONS)
    message = Message(topic, partition, offset, 0.0, 0, None, key, value, None, tp=TP(topic, partition))
    return SimpleNamespace(message=message)


def test_recovered_changelog_is_read_back_and_overrides_an_older_local_value(store: Any) -> None:
    key, gone = key_in_partition(1), key_in_partition(2)
    store[key] = b"old"
    store[gone] = b"old"
    store.apply_changelog_batch([changelog_event(key, b"new", 7), changelog_event(gone, None, 8)],
                                to_key=lambda k: k, to_value=lambda v: v)
    assert store[key] == b"new"
    assert gone not in store
    assert partitions_holding(store, key) == [1]
    assert store.persisted_offset(TP("store-test-payments-changelog", 2)) == 8


def test_table_without_use_partitioner_is_refused(tmp_path: Path) -> None:
    table = make_app(tmp_path).Table("plain", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    with pytest.raises(ImproperlyConfigured, match="use_partitioner"):
        _ = table.data


def test_changelog_topic_with_another_partition_count_is_refused(store: Any) -> None:
    store.check_partition_count(PARTITIONS)
    store.check_partition_count(None)
    with pytest.raises(ImproperlyConfigured, match="6 partitions"):
        store.check_partition_count(6)


# --- the worker on the real broker ------------------------------------------------------------------------

PAYMENTS = 200


def adyen_delivery(payment: str, step: int) -> InboxEnvelope:
    """Step 0 authorises 1000, step 1 captures it, later steps refund 100 each: every step is a change."""
    code, psp, original = {0: ("AUTHORISATION", payment, None), 1: ("CAPTURE", f"{payment}C", payment)}.get(
        step, ("REFUND", f"{payment}R{step}", payment))
    item: dict[str, Any] = {"pspReference": psp, "merchantAccountCode": "M", "merchantReference": f"order-{payment}",
                            "amount": {"currency": "EUR", "value": 1000 if step < 2 else 100}, "eventCode": code,
                            "success": "true", "eventDate": f"2024-05-01T10:{step:02d}:00+00:00"}
    if original:
        item["originalReference"] = original
    return envelope("adyen", "main", f"{payment}:{step}", orjson.dumps(item))


def expected_summaries(steps: int) -> list[tuple[Any, ...]]:
    states = [("authorized", 1000, 0, 0), ("captured", 1000, 1000, 0)]
    states += [("partially_refunded", 1000, 1000, 100 * n) for n in range(1, steps - 1)]
    return states[:steps]


async def send_wave(settings: Settings, step: int, payments: list[str]) -> None:
    """All payments' delivery of one step at once (large, mixed-partition batches in the worker)."""
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        deliveries = [adyen_delivery(payment, step) for payment in payments]
        sent = [await producer.send(settings.topics.inbox, d.to_bytes(), key=d.key) for d in deliveries]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def run_waves(settings: Settings, store_url: str, state: Path, steps: int = 4) -> dict[str, Any]:
    """``steps`` deliveries per payment, one wave per step, each wave fully processed before the next (a
    payment's deliveries sit in different inbox partitions); the worker is restarted after half the waves.
    Returns the status events and the payments changelog records."""
    # (processor_settings(store=...) collides with the harness's own store="memory://" keyword.)
    conf = processor_settings().model_copy(update={"store": store_url})
    payments = [f"P{uuid.uuid4().hex[:8]}" for _ in range(PAYMENTS)]
    drained_topics = [settings.topics.inbox, conf.observations_topic()]
    for half in (range(steps // 2), range(steps // 2, steps)):
        await send_wave(settings, half[0], payments)  # pre-filled: the worker starts on a backlog
        worker = start_worker(settings, conf, state)
        try:
            for step in half:
                if step != half[0]:
                    await send_wave(settings, step, payments)
                lag = await wait_drained(settings, conf, drained_topics, timeout_s=120)
                assert lag == "", f"{lag}\n{worker.log_tail()}"
        finally:
            code = worker.stop()
        assert code == 0, worker.log_tail()
    expected = PAYMENTS * steps
    status = events_of(await read_until(settings, settings.topics.status, lambda r: len(r) >= expected,
                                        timeout_s=10))
    changelog = await read_until(settings, f"{conf.app_id}-payments-changelog", lambda r: False, timeout_s=5)
    return {"status": status, "changelog": changelog}


@pytest.mark.kafka
async def test_worker_on_the_store_emits_every_status_event_once_across_a_restart(
    kafka_settings: Settings, tmp_path: Path,
) -> None:
    steps = 4
    outcome = await run_waves(kafka_settings, STORE_URL, tmp_path, steps)
    events = outcome["status"]
    identities = [(e["subject"], e["data"]["sequence"]) for e in events]
    assert len(identities) == len(set(identities)), "repeated status events"
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["subject"], []).append(event)
    assert len(grouped) == PAYMENTS
    wrong = {subject: [(e["data"]["sequence"], e["data"]["status"]) for e in group]
             for subject, group in grouped.items()
             if [e["data"]["sequence"] for e in group] != list(range(1, steps + 1))
             or [(e["data"]["status"], e["data"]["amount"], e["data"]["captured_amount"],
                  e["data"]["refunded_amount"]) for e in group] != expected_summaries(steps)}
    assert wrong == {}
    # The producer put every changelog record where the store looks for its key.
    changelog = outcome["changelog"]
    assert changelog, "no payments changelog records read"
    partitions = kafka_settings.topics.partitions
    assert [r.partition for r in changelog] == [changelog_partition(r.key, partitions) for r in changelog]
