"""/readyz of the processor: the readiness decision against fakes of faust's state, and the real worker's
probe server (/healthz, /readyz, /metrics) against the shared broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import faust
import pytest
from processor_harness import Worker, processor_settings, start_worker

from paystream.config import Settings
from processors.readiness import WorkerState, is_ready, not_ready_reason, worker_state

# --- the decision, against fakes ---------------------------------------------------------------------


def fake_app(*, consumer: bool = True, consumer_started: bool = True, coordinator_id: int | None = 1,
             recovered: bool = True, rebalancing: bool = False, in_recovery: bool = False,
             stopping: bool = False) -> SimpleNamespace:
    """The attributes of faust.App (and its aiokafka driver) that processors.readiness reads."""
    completed = asyncio.Event()
    if recovered:
        completed.set()
    aiokafka_consumer = SimpleNamespace(_coordinator=SimpleNamespace(coordinator_id=coordinator_id))
    faust_consumer = SimpleNamespace(started=consumer_started, should_stop=False,
                                     _thread=SimpleNamespace(_consumer=aiokafka_consumer))
    return SimpleNamespace(
        _consumer=faust_consumer if consumer else None,
        tables=SimpleNamespace(_recovery=SimpleNamespace(completed=completed)),
        rebalancing=rebalancing, in_recovery=in_recovery, should_stop=stopping,
    )


def test_consuming_worker_is_ready() -> None:
    assert is_ready(worker_state(fake_app()))


def test_not_ready_before_the_consumer_exists() -> None:
    assert not_ready_reason(worker_state(fake_app(consumer=False))) == "consumer not started"


def test_not_ready_while_the_consumer_starts() -> None:
    assert not_ready_reason(worker_state(fake_app(consumer_started=False))) == "consumer not started"


def test_not_ready_when_the_group_coordinator_is_unknown() -> None:
    # aiokafka clears coordinator_id when the coordinator connection dies (broker outage).
    reason = not_ready_reason(worker_state(fake_app(coordinator_id=None)))
    assert reason is not None and reason.startswith("group coordinator unknown")


def test_not_ready_before_the_first_assignment_is_recovered() -> None:
    assert not_ready_reason(worker_state(fake_app(recovered=False))) == "no assignment recovered yet"


def test_not_ready_while_rebalancing() -> None:
    assert not_ready_reason(worker_state(fake_app(rebalancing=True))) == "rebalancing"


def test_not_ready_while_recovering_tables() -> None:
    assert not_ready_reason(worker_state(fake_app(in_recovery=True))) == "recovering tables"


def test_not_ready_while_stopping() -> None:
    assert not_ready_reason(worker_state(fake_app(stopping=True))) == "stopping"


def test_reason_names_the_first_failing_signal() -> None:
    state = WorkerState(stopping=False, consumer_started=True, coordinator_known=True, recovery_completed=False,
                        rebalancing=True, in_recovery=True)
    assert not_ready_reason(state) == "no assignment recovered yet"


class _NoLazyCreation(SimpleNamespace):
    @property
    def consumer(self) -> Any:
        raise AssertionError("worker_state must not create the consumer")


def test_worker_state_does_not_create_the_consumer() -> None:
    app = _NoLazyCreation(**vars(fake_app(consumer=False)))
    assert worker_state(app).consumer_started is False


async def test_real_unstarted_faust_app_is_not_ready() -> None:
    # Guards the attribute names read from faust against an upgrade renaming them.
    app = faust.App(f"readiness-{uuid.uuid4().hex[:8]}", web_enabled=False, autodiscover=False)
    app.Table("t", partitions=1)
    state = worker_state(app)
    assert (state.consumer_started, state.recovery_completed, state.rebalancing) == (False, False, False)
    assert "tables" in vars(app)  # the manager readiness reads exists once a table is declared
    assert not is_ready(state)


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
