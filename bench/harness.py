"""What the processor and end-to-end benchmarks share: per-run topics and settings on the shared broker,
subprocesses (processor worker, ingest server), and reading topics back.

Every run uses its own topic names (``bench<8 hex>.<default name>``) and its own processor app id, so it
never meets another run or another engineer's tests on the same broker; its topics (and the processor's
internal and changelog topics, named after the app id) are deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import workload

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """One benchmark's topics, settings, scratch directory and the environment of its subprocesses."""

    tag: str
    settings: Any  # paystream.config.Settings with this run's topic names
    scratch: Path
    env: dict[str, str]

    def processor_settings(self, **overrides: Any) -> Any:
        from processors.settings import ProcessorSettings

        # The production settings (RocksDB state under this run's scratch directory, exactly-once).
        return ProcessorSettings(**{"app_id": f"{self.tag}-processor", **overrides})

    def cleanup(self) -> None:
        asyncio.run(delete_topics(self.settings, self.tag))
        if os.environ.get("PAYSTREAM_BENCH_KEEP"):  # logs and specs of the subprocesses, for a post-mortem
            print(f"kept {self.scratch}", file=sys.stderr)
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)


def prepare(label: str) -> Run:
    """Fresh topics and a config with the bench Stripe and Adyen accounts (secrets by env reference)."""
    from paystream.config import load_settings
    from paystream.kafka import check_metadata, ensure_topics

    scratch = Path(tempfile.mkdtemp(prefix=f"paystream-bench-{label}-"))
    config = scratch / "paystream.toml"
    config.write_text(workload.config_toml())
    os.environ.update(workload.secret_env())  # this process verifies deliveries too (bench.workload.envelopes)
    # Accounts given directly: this process's environment keeps no PAYSTREAM_CONFIG_FILE pointing at a
    # scratch file that is deleted at the end (the subprocesses get the file through their environment).
    base = load_settings(accounts=workload.accounts(), log_level="warning", state_dir=scratch / "state")
    asyncio.run(check_metadata(base.kafka.bootstrap))  # fails loudly when the broker is not there
    tag = f"bench{uuid.uuid4().hex[:8]}"
    names = ("inbox", "fetch_requests", "fetch_results", "status", "state", "dlq")
    topics = base.topics.model_copy(update={name: f"{tag}.{getattr(base.topics, name)}" for name in names})
    settings = base.model_copy(update={"topics": topics})
    asyncio.run(ensure_topics(settings))
    env = {**os.environ, **workload.secret_env(), "PAYSTREAM_CONFIG_FILE": str(config),
           "PAYSTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap, "PAYSTREAM_LOG_LEVEL": "warning",
           "PAYSTREAM_STATE_DIR": str(scratch / "state"), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.update({f"PAYSTREAM_TOPICS__{name.upper()}": getattr(topics, name) for name in names})
    return Run(tag, settings, scratch, env)


def quiet_client_logs() -> None:
    """The orchestrator's own Kafka clients read topics it has just created; aiokafka logs the broker's
    transient NotLeader / unknown-topic answers as errors while it retries them. Real failures still raise."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --- subprocesses -------------------------------------------------------------------------------------


def start_processor(run: Run, conf: Any, name: str, *, profile: Path | None = None,
                    floor: bool = False) -> subprocess.Popen[bytes]:
    """``paystream process`` as its own process (processors.worker.run_processor), output to a log file."""
    spec = run.scratch / f"{name}.json"
    # Each worker its own state directory (a crashed run's leftovers never meet the next one).
    settings = run.settings.model_copy(update={"state_dir": run.scratch / f"state-{name}"})
    spec.write_text(json.dumps({"settings": json.loads(settings.model_dump_json()),
                                "processor": json.loads(conf.model_dump_json()),
                                "profile": str(profile) if profile else None, "floor": floor}))
    return spawn(run, [sys.executable, "-m", "bench.processors", "worker", str(spec)], name)


def spawn(run: Run, argv: list[str], name: str) -> subprocess.Popen[bytes]:
    log = (run.scratch / f"{name}.log").open("wb")
    return subprocess.Popen(argv, cwd=ROOT, env=run.env, stdout=log, stderr=subprocess.STDOUT)


def log_tail(run: Run, name: str, chars: int = 3000) -> str:
    path = run.scratch / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    """Graceful stop (the processor and uvicorn both drain on SIGTERM/SIGINT); killed if it takes too long."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until(condition: Callable[[], bool], timeout_s: float, *, every_s: float = 0.2,
               alive: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if alive is not None and alive.poll() is not None:
            return False
        time.sleep(every_s)
    return condition()


# --- topics -------------------------------------------------------------------------------------------


async def produce(settings: Any, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send everything with acks=all (ingest's producer settings), as fast as the producer batches."""
    from paystream.kafka import make_producer

    producer = make_producer(settings, client_suffix="bench-prefill", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Tail:
    """Follows a topic from its beginning in this process (its own event loop): every record is kept once
    per identity (``identify(record)``), repeats are counted. Polled between sleeps, so it costs the
    measured processes little."""

    def __init__(self, settings: Any, topic: str, identify: Callable[[Any], Any]) -> None:
        self.settings, self.topic, self.identify = settings, topic, identify
        self.loop = asyncio.new_event_loop()
        self.consumer: Any = None
        self.first: dict[Any, Any] = {}  # identity -> the first record seen with it
        self.repeated: list[Any] = []  # records whose identity was seen before
        self.records = 0

    def __enter__(self) -> Tail:
        from aiokafka import TopicPartition

        from paystream.kafka import make_consumer

        async def started() -> Any:
            consumer = make_consumer(self.settings, group_id=None, client_suffix="bench-tail",
                                     max_partition_fetch_bytes=4 << 20)
            await consumer.start()
            partitions = [TopicPartition(self.topic, p) for p in range(self.settings.topics.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            return consumer

        self.consumer = self.loop.run_until_complete(started())
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()

    def poll(self) -> int:
        """Read what has arrived; returns the number of distinct records so far."""
        while True:
            batch = self.loop.run_until_complete(self.consumer.getmany(timeout_ms=50, max_records=10_000))
            got = [record for records in batch.values() for record in records]
            for record in got:
                self.records += 1
                identity = self.identify(record)
                if identity in self.first:
                    self.repeated.append(record)
                else:
                    self.first[identity] = record
            if len(got) < 10_000:
                return len(self.first)

    @property
    def repeats(self) -> int:
        return self.records - len(self.first)


async def read_all(settings: Any, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (stops at ``expected`` records or the timeout)."""
    from aiokafka import TopicPartition

    from paystream.kafka import make_consumer

    consumer = make_consumer(settings, group_id=None, client_suffix="bench-reader", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def delete_topics(settings: Any, tag: str) -> None:
    """This run's topics and the processor's internal / changelog topics (all named after ``tag``)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from paystream.kafka import connection_options

    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        ours = [name for name in await admin.list_topics() if name.startswith(tag)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
