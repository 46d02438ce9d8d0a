"""Profile the real ingest process under the benchmark's load (a dev-time tool, not a benchmark).

    .venv/bin/python -m bench.profile_ingest                        # Stripe, closed loop, pyinstrument, 6 s
    .venv/bin/python -m bench.profile_ingest --payload sns --profiler cprofile
    .venv/bin/python -m bench.profile_ingest --profiler perf --rate 1000   # open loop, Linux perf
    .venv/bin/python -m bench.profile_ingest --components 6000      # in-process costs, no HTTP

Needs the local broker. Profilers: ``pyinstrument`` (sampling, a dev-only dependency: pip install it),
``cprofile`` (call counts; its per-call overhead inflates cheap functions) and ``perf`` (Linux perf on the
server process: the split between interpreter, kernel and C extensions that no Python profiler shows).
The server is the production stack (``ingest.server.uvicorn_config``: uvicorn + uvloop + httptools,
access log off) in a subprocess and the load is bench.ingest's generator in another; only the measured
window is profiled (the generator signals SIGUSR1/SIGUSR2 around it). The report is written to
``$TMPDIR/paystream-profiles/`` and its head printed. ``--components`` instead measures, in one process
on uvloop: the app driven directly with and without Kafka, and aiokafka alone (send + ack at concurrency
1 and 64). Topics are per run and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from bench import ingest as bench
from ingest.publisher import InboxPublisher
from schemas.envelopes import InboxEnvelope

Scope = MutableMapping[str, Any]

# Profiles are per-machine, per-run evidence, not results to keep in the repository.
OUT_DIR = Path(tempfile.gettempdir()) / "paystream-profiles"


def serve(port: int, profiler: str, out: Path) -> None:
    """The ingest server, profiled between SIGUSR1 and SIGUSR2 (sent by the load generator around the
    measured window, so start-up, payload generation and warm-up stay out of the report)."""
    import uvicorn

    from ingest.server import uvicorn_config
    from paystream.config import load_settings
    from paystream.logs import configure

    settings = load_settings()
    configure(level=settings.log_level, fmt=settings.log_format, process="ingest")
    server = uvicorn.Server(uvicorn_config(settings, host="127.0.0.1", port=port, workers=1))
    if profiler == "cprofile":
        profile = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
        signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
            server.run()
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        out.write_text(text.getvalue())
        return
    if profiler == "perf":
        # Linux perf on this process (no Python overhead): where CPU goes by library and kernel symbol —
        # the share of syscalls and the loopback TCP stack that no Python profiler sees.
        recorder: list[subprocess.Popen[bytes]] = []
        data = out.with_suffix(".data")
        signal.signal(signal.SIGUSR1, lambda *_: recorder.append(subprocess.Popen(
            ["perf", "record", "-F", "1999", "-g", "-o", str(data), "-p", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

        def stop_recording(*_: object) -> None:
            for running in recorder:
                running.send_signal(signal.SIGINT)

        signal.signal(signal.SIGUSR2, stop_recording)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        for r in recorder:
            r.wait(timeout=30)
        reports = [subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio",
                                   "-g", "none", "--percent-limit", "0.7"], capture_output=True, text=True).stdout
                   for sort in ("dso", "dso,sym")]
        out.write_text("\n".join(reports))
        return
    from pyinstrument import Profiler

    # async_mode disabled: sample the one thread as it is; time idle in the event loop shows as the
    # loop's own frame (its share is the headroom left).
    sampler = Profiler(interval=0.001, async_mode="disabled")
    signal.signal(signal.SIGUSR1, lambda *_: sampler.start())
    signal.signal(signal.SIGUSR2, lambda *_: sampler.stop())
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if sampler.is_running:
        sampler.stop()
    out.write_text(
        "# flat, by self time\n" + sampler.output_text(flat=True, show_all=True)[:12_000]
        + "\n\n# call tree\n" + sampler.output_text(show_all=False)
    )


def profile(payload: str, profiler: str, seconds: float, rate: int = 0) -> Path:
    settings, scratch, sns_key, env = bench.prepare()
    out = OUT_DIR / f"profile-{payload}-{f'open{rate}-' if rate else ''}{profiler}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    port = bench._free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.profile_ingest", "serve", "--port", str(port), "--profiler", profiler,
         "--out", str(out)], cwd=bench.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        bench._wait_http(f"http://127.0.0.1:{port}/readyz", server)
        path = "/webhooks/stripe/bench" if payload == "stripe" else "/webhooks/amazon_pay/bench"
        scenario: dict[str, Any] = {"name": "measured", "mode": "closed", "payload": payload, "path": path,
                                    "seconds": seconds}
        if rate:
            scenario.update(mode="open", rate=rate)
        results: dict[str, Any] = bench._load(server, port, [scenario], sns_key, scratch, env, profile_signals=True)
    finally:
        bench._stop(server)
        asyncio.run(bench._finish_topic(settings))
    measured = results["measured"]
    print(f"{payload}: {measured.get('per_s') or measured.get('achieved_per_s')} req/s"
          f"{' (open loop)' if rate else ''}, p99 {measured.get('p99_ms', '-')} ms, "
          f"{measured['server_cpu_us_per_request']} us server CPU/request ({profiler} overhead included); "
          f"report: {out}")
    return out


class _NullPublisher(InboxPublisher):
    """Serializes like the real publisher but sends nothing: the app's own cost, Kafka excluded."""

    async def start(self) -> None:
        self._set_ready(True)

    async def stop(self) -> None:
        self._set_ready(False)

    record_bytes = 0

    async def publish(self, envelopes: Sequence[InboxEnvelope]) -> None:
        for envelope in envelopes:
            self.record_bytes = len(envelope.to_bytes())
            _ = envelope.key


async def _drive(app: Any, requests: list[tuple[Scope, bytes]], concurrency: int) -> dict[str, float]:
    """Call the ASGI app directly (no HTTP): CPU and wall time per request at a given concurrency."""
    statuses: list[int] = []
    queue = iter(requests)

    async def worker() -> None:
        for scope, body in queue:
            async def receive(body: bytes = body) -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(scope, receive, send)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
    return {"requests": len(statuses), "per_s": round(len(statuses) / wall),
            "cpu_us": round(cpu / len(statuses) * 1e6, 1)}


async def _kafka_round_trips(settings: Any, records: list[tuple[bytes, bytes]], concurrency: int,
                             **overrides: Any) -> dict[str, float]:
    """aiokafka alone, with the ingest producer's settings: send() cost, and CPU per acknowledged record."""
    publisher = InboxPublisher(settings)
    producer = publisher._new_producer(**overrides)
    await producer.start()
    try:
        await (await producer.send(settings.topics.inbox, b"warm-up", key=b"warm-up"))
        in_send = 0.0
        latencies: list[float] = []
        queue = iter(records)

        async def worker() -> None:
            nonlocal in_send
            for value, key in queue:
                started = time.perf_counter()
                future = await producer.send(settings.topics.inbox, value, key=key)
                in_send += time.perf_counter() - started
                await future
                latencies.append(time.perf_counter() - started)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await producer.stop()
    latencies.sort()
    return {"records": len(latencies), "per_s": round(len(latencies) / wall),
            "cpu_us": round(cpu / len(latencies) * 1e6, 1), "send_call_us": round(in_send / len(latencies) * 1e6, 1),
            "p50_ms": round(bench.percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(bench.percentile(latencies, 0.99) * 1000, 2)}


async def _components(settings: Any, count: int) -> dict[str, Any]:
    from aiokafka.partitioner import murmur2

    from ingest.app import IngestApp
    from ingest.publisher import murmur2 as publisher_murmur2

    payloads = bench.stripe_payloads(count)
    path = f"/webhooks/stripe/{bench.ACCOUNT}"
    requests: list[tuple[Scope, bytes]] = []
    for body, headers in payloads:
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        requests.append(({"type": "http", "method": "POST", "path": path, "headers": raw}, body))
    results: dict[str, Any] = {}
    keys = [f"stripe:{bench.ACCOUNT}:evt_{uuid.uuid4().hex[:24]}".encode() for _ in range(count)]
    for name, function in (("aiokafka_murmur2_us", murmur2), ("publisher_murmur2_us", publisher_murmur2)):
        started = time.perf_counter()
        for key in keys:
            function(key)
        results[name] = round((time.perf_counter() - started) / count * 1e6, 2)

    null_app = IngestApp(settings, publisher=_NullPublisher(settings))
    await null_app.startup()
    await _drive(null_app, requests[:200], 1)  # warm caches
    results["app_without_kafka_c1"] = await _drive(null_app, requests, 1)
    results["app_without_kafka_c64"] = await _drive(null_app, requests, 64)
    await null_app.shutdown()

    envelope_bytes = null_app.publisher.record_bytes  # type: ignore[attr-defined]
    records = [(b"x" * envelope_bytes, key) for key in keys]
    results["record_bytes"] = envelope_bytes
    results["kafka_send_ack_c1"] = await _kafka_round_trips(settings, records[: max(200, count // 10)], 1)
    results["kafka_send_ack_c64"] = await _kafka_round_trips(settings, records, 64)

    app = IngestApp(settings)
    await app.startup()
    try:
        deadline = time.monotonic() + 20
        while not app.publisher.ready and time.monotonic() < deadline:  # noqa: ASYNC110 (a dev tool's poll)
            await asyncio.sleep(0.05)
        await _drive(app, requests[:200], 1)
        results["app_with_kafka_c1"] = await _drive(app, requests[: max(200, count // 10)], 1)
        results["app_with_kafka_c64"] = await _drive(app, requests, 64)
    finally:
        await app.shutdown()
    return results


def components(count: int) -> dict[str, Any]:
    """In-process costs, no HTTP: the app with and without Kafka, and aiokafka alone (uvloop, like the server)."""
    import uvloop

    from paystream.config import load_settings
    from paystream.logs import configure

    settings, _scratch, _sns_key, env = bench.prepare()
    os.environ.update(env)
    configure(level=env["PAYSTREAM_LOG_LEVEL"], fmt="json", process="ingest")  # as the benchmarked server
    settings = load_settings().model_copy(update={"topics": settings.topics})
    try:
        return uvloop.run(_components(settings, count))
    finally:
        asyncio.run(bench._finish_topic(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload", choices=("stripe", "sns"), default="stripe")
    parser.add_argument("--profiler", choices=("pyinstrument", "cprofile", "perf"), default="pyinstrument")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=0, help="profile an open loop at this rate (default: closed loop)")
    parser.add_argument("--components", type=int, metavar="N", default=0,
                        help="instead: in-process costs over N requests (app with/without Kafka, aiokafka alone)")
    sub = parser.add_subparsers(dest="command")
    serve_cmd = sub.add_parser("serve", help="(internal) the profiled server")
    serve_cmd.add_argument("--port", type=int, required=True)
    serve_cmd.add_argument("--profiler", choices=("pyinstrument", "cprofile", "perf"), required=True)
    serve_cmd.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.profiler, args.out)
        return 0
    if args.components:
        print(json.dumps(components(args.components), indent=2))
        return 0
    out = profile(args.payload, args.profiler, args.seconds, args.rate)
    print("\n".join(out.read_text().splitlines()[:60]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
