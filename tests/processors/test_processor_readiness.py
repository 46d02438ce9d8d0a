"""/readyz of the processor: the readiness decision over librdkafka statistics, and the real worker's probe
server (/healthz, /readyz, /metrics) against the shared broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from processor_harness import Worker, processor_settings, start_worker

from paystream.config import Settings
from processors.readiness import ConsumerSnapshot, Readiness, not_ready_reason, snapshot_of

# --- the decision -------------------------------------------------------------------------------------

STEADY = ConsumerSnapshot(broker_up=True, group_state="up", join_state="steady", assigned_partitions=3)


def stats(*, broker_state: str = "UP", group_state: str = "up", join_state: str = "steady") -> dict[str, Any]:
    """The parts of a librdkafka statistics document (STATISTICS.md) readiness reads, with a bootstrap
    entry (nodeid -1) that must not count as a broker connection."""
    return {
        "brokers": {"127.0.0.1:9092/bootstrap": {"state": "UP", "nodeid": -1},
                    "127.0.0.1:9092/1": {"state": broker_state, "nodeid": 1}},
        "cgrp": {"state": group_state, "join_state": join_state, "assignment_size": 3},
    }


def test_a_steady_group_member_with_a_broker_is_ready() -> None:
    assert snapshot_of(stats()) == STEADY
    assert not_ready_reason(STEADY, stopping=False, age_s=1.0, max_age_s=6.0) is None


def test_not_ready_before_the_first_statistics() -> None:
    assert not_ready_reason(None, stopping=False, age_s=0.0, max_age_s=6.0) == "consumer not started"


def test_not_ready_without_a_broker_connection() -> None:
    snapshot = snapshot_of(stats(broker_state="DOWN"))
    assert not_ready_reason(snapshot, stopping=False, age_s=1.0, max_age_s=6.0) == \
        "no broker connection (broker unreachable?)"


def test_a_bootstrap_connection_alone_is_not_a_broker() -> None:
    document = stats()
    del document["brokers"]["127.0.0.1:9092/1"]
    assert not snapshot_of(document).broker_up


def test_not_ready_while_joining_the_group() -> None:
    reason = not_ready_reason(snapshot_of(stats(group_state="wait-coord")), stopping=False, age_s=1.0,
                              max_age_s=6.0)
    assert reason == "consumer group wait-coord"


def test_not_ready_while_rebalancing() -> None:
    reason = not_ready_reason(snapshot_of(stats(join_state="wait-assign-call")), stopping=False, age_s=1.0,
                              max_age_s=6.0)
    assert reason == "rebalancing (wait-assign-call)"


def test_stale_statistics_are_not_trusted() -> None:
    assert not_ready_reason(STEADY, stopping=False, age_s=7.0, max_age_s=6.0) == "no consumer statistics for 7s"


def test_stopping_comes_first() -> None:
    assert not_ready_reason(None, stopping=True, age_s=99.0, max_age_s=6.0) == "stopping"


def test_readiness_follows_the_statistics_callback_and_its_clock() -> None:
    now = [100.0]
    readiness = Readiness(interval_ms=1000, clock=lambda: now[0])
    assert readiness() == "consumer not started"
    readiness.observe(orjson.dumps(stats()).decode())
    assert readiness() is True
    now[0] += 3.5  # three intervals without statistics
    assert readiness() == "no consumer statistics for 4s"
    readiness.observe(orjson.dumps(stats(join_state="wait-join")).decode())
    assert readiness() == "rebalancing (wait-join)"


def test_unreadable_statistics_are_logged_and_ignored() -> None:
    readiness = Readiness(interval_ms=1000, clock=lambda: 0.0)
    readiness.observe(orjson.dumps(stats()).decode())
    readiness.observe("not json")
    assert readiness() is True


# --- the real worker ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def bootstrap_proxy(listen_port: int, upstream: str) -> AsyncIterator[None]:
    """A TCP relay to the real broker: the worker's bootstrap address only becomes reachable when this
    starts (after bootstrap, clients talk to the broker's advertised address directly)."""
    host, _, port = upstream.split(",")[0].rpartition(":")

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes] | None:
    """(status, body), or None while nothing listens yet."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return response.status, await response.read()
    except aiohttp.ClientConnectionError:
        return None


async def _poll(session: aiohttp.ClientSession, url: str, worker: Worker, until: Any,
                timeout_s: float = 120.0) -> tuple[int, bytes] | None:
    deadline = time.monotonic() + timeout_s
    answer = None
    while time.monotonic() < deadline and worker.process.poll() is None:
        answer = await _get(session, url)
        if until(answer):
            return answer
        await asyncio.sleep(0.25)
    return answer


@pytest.mark.kafka
async def test_worker_probes_follow_the_broker(kafka_settings: Settings, tmp_path: Path) -> None:
    metrics_port, kafka_port = _free_port(), _free_port()
    # Bootstrap through a relay that is not listening yet: the worker starts while "Kafka is down".
    settings = kafka_settings.model_copy(update={
        "metrics_port": metrics_port,
        "kafka": kafka_settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{kafka_port}"}),
    })
    worker = start_worker(settings, processor_settings(), tmp_path, name="probes")
    base = f"http://127.0.0.1:{metrics_port}"
    try:
        async with aiohttp.ClientSession() as session:
            healthz = await _poll(session, f"{base}/healthz", worker, lambda answer: answer is not None)
            assert healthz is not None and healthz[0] == 200, worker.log_tail()
            readyz = await _get(session, f"{base}/readyz")
            assert readyz is not None and readyz[0] == 503, worker.log_tail()
            assert orjson.loads(readyz[1])["error"] == "not_ready"

            async with bootstrap_proxy(kafka_port, kafka_settings.kafka.bootstrap):
                readyz = await _poll(session, f"{base}/readyz", worker,
                                     lambda answer: answer is not None and answer[0] == 200)
                assert readyz is not None and readyz[0] == 200, worker.log_tail()
                healthz = await _get(session, f"{base}/healthz")
                assert healthz is not None and healthz[0] == 200
                metrics = await _get(session, f"{base}/metrics")
                assert metrics is not None and metrics[0] == 200 and b"# HELP paystream_" in metrics[1]
                assert worker.stop() == 0, worker.log_tail()
    finally:
        worker.stop()
