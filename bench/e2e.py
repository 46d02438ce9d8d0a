"""End-to-end benchmark (DESIGN §8): latency from a provider's HTTP push to its event on the status topic.

    .venv/bin/python -m bench.e2e              # needs the local broker (make stack-up); ~1.5 min

How it is measured: ``paystream ingest`` (one uvicorn process, production config) and the processor worker
(:mod:`processors.worker`, RocksDB store) run as subprocesses on a fresh set of topics. A load generator
process posts signed Stripe events over keep-alive connections at a steady offered rate (100, 500 and
1,000 deliveries/s, ``SECONDS`` each); each delivery is a new payment (``payment_intent.created``) or the
next transition of one (requires_action → authorized → captured, ``GAP_S`` apart), so each should yield
exactly one status event. A watcher process consumes the status topic and notes when each event arrives.

Latency = the watcher's receive time - the delivery's *scheduled* send time (epoch clock shared by the
processes; a request the generator sends late is charged its lateness: no coordinated omission). It
covers HTTP + signature check + Kafka ack (acks=all) + the processor's two hops (inbox → observations →
status, each acknowledged, tables written) + the watcher's fetch. The HTTP answer time alone (scheduled
send → 2xx) is reported next to it. After each rate the run waits until every event has arrived (or
``DRAIN_S``), so rates do not leak into each other. Missing events are counted, never silently dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import harness, workload
from bench.memory import peak_rss_mib

RATES = (100, 500, 1000)
SECONDS = 10.0
STEPS = 4  # created (pending), requires_action, amount_capturable_updated (authorized), succeeded (captured)
GAP_S = 1.0  # between two steps of one payment
CONNECTIONS = 128
WARMUP_RATE, WARMUP_S = 50, 2.0
DRAIN_S = 40.0  # longest wait for the last events of a rate (later ones count with a lower-bound latency)
DRAIN_STALL_S = 10.0  # ... and no new event at all for this long ends it too


# --- the load generator (its own process) ----------------------------------------------------------------


def schedule(rate: int, seconds: float, partitions: int) -> list[workload.Delivery]:
    """``rate x seconds`` deliveries in sending order: blocks of ``rate x GAP_S`` payments, each block sending
    step 1 of all its payments, then step 2, … so one payment's steps are exactly ``GAP_S`` apart."""
    per_block = max(1, round(rate * GAP_S))
    total = round(rate * seconds)
    blocks = math.ceil(total / (per_block * STEPS))
    order: list[workload.Delivery] = []
    for _ in range(blocks):
        payments = [workload.stripe_payment(partitions, STEPS) for _ in range(per_block)]
        for step in range(STEPS):
            order.extend(payment[step] for payment in payments)
    return order[:total]


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.ingest import Connection, serialize

    deliveries = schedule(spec["rate"], spec["seconds"], spec["partitions"])
    requests = [serialize(d.path, [(d.body, d.headers)])[0] for d in deliveries]
    # The expected (payment key, sequence) of each delivery: its step within the payment.
    steps: dict[str, int] = {}
    keys: list[tuple[str, int]] = []
    for delivery in deliveries:
        steps[delivery.payment_key] = steps.get(delivery.payment_key, 0) + 1
        keys.append((delivery.payment_key, steps[delivery.payment_key]))
    idle: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        idle.put_nowait(await Connection.open(spec["port"]))
    outcome: list[list[Any]] = [[] for _ in deliveries]
    rate = spec["rate"]
    # Wall-clock epoch of perf_counter()'s zero, so scheduled times compare with the watcher's clock.
    started = time.perf_counter()
    epoch = time.time() - started

    async def fire(index: int, scheduled: float) -> None:
        connection = await idle.get()
        status = await connection.exchange(requests[index])
        answered = time.perf_counter()
        idle.put_nowait(connection)
        outcome[index] = [*keys[index], round(epoch + scheduled, 6), status, round(answered - scheduled, 6)]

    tasks: list[asyncio.Task[None]] = []
    sent = 0
    while sent < len(requests):
        now = time.perf_counter()
        while sent < len(requests) and started + sent / rate <= now:
            tasks.append(asyncio.create_task(fire(sent, started + sent / rate)))
            sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait().close()
    return {"rate": rate, "seconds": round(elapsed, 2), "deliveries": outcome}


def run_generator(spec_file: Path) -> None:
    import uvloop

    spec = json.loads(spec_file.read_text())
    Path(spec["out"]).write_text(json.dumps(uvloop.run(generate(spec))))


# --- the status watcher (its own process) ----------------------------------------------------------------


async def watch(spec: dict[str, Any]) -> None:
    """Append ``payment_key sequence receive_epoch`` per status event to a file until SIGTERM."""
    import orjson
    from aiokafka import TopicPartition

    from paystream.config import Settings
    from paystream.kafka import make_consumer

    settings = Settings.model_validate(spec["settings"])
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = make_consumer(settings, group_id=None, client_suffix="bench-watch")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topics.status, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        with Path(spec["out"]).open("a") as out:  # noqa: ASYNC230 (one open, before the loop)
            while not stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                received = time.time()
                lines = []
                for records in batch.values():
                    for record in records:
                        data = orjson.loads(record.value)["data"]
                        lines.append(f"{data['payment_key']} {data['sequence']} {received:.6f}\n")
                if lines:
                    out.write("".join(lines))
                    out.flush()
    finally:
        await consumer.stop()


class Arrivals:
    """The watcher's file, read incrementally: (payment key, sequence) → first receive time."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.seen: dict[tuple[str, int], float] = {}
        self.duplicates = 0

    def refresh(self) -> dict[tuple[str, int], float]:
        if self.path.exists():
            with self.path.open() as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self.offset += len(complete)
            for line in complete.splitlines():
                key, sequence, received = line.split()
                if (key, int(sequence)) in self.seen:
                    self.duplicates += 1
                else:
                    self.seen[(key, int(sequence))] = float(received)
        return self.seen


# --- orchestration --------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # loopback only
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def _offer(bench: harness.Run, port: int, rate: int, seconds: float, name: str) -> dict[str, Any]:
    spec_file = bench.scratch / f"load-{name}.json"
    out = bench.scratch / f"load-{name}.out.json"
    spec_file.write_text(json.dumps({"port": port, "rate": rate, "seconds": seconds, "out": str(out),
                                     "partitions": bench.settings.topics.partitions}))
    generator = harness.spawn(bench, [sys.executable, "-m", "bench.e2e", "load", str(spec_file)], f"load-{name}")
    if generator.wait(timeout=seconds + 120) != 0 or not out.exists():
        raise RuntimeError(f"load generator failed:\n{harness.log_tail(bench, f'load-{name}')}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _latencies(offered: dict[str, Any], arrivals: Arrivals, processes: list[Any]) -> dict[str, Any]:
    """Wait until every 2xx delivery's event arrived (or DRAIN_S), then the percentiles."""
    accepted = [d for d in offered["deliveries"] if 200 <= d[3] < 300]
    wanted = {(d[0], d[1]) for d in accepted}
    drain_started = time.monotonic()
    progress = [time.monotonic(), -1]

    def drained() -> bool:
        seen = arrivals.refresh()
        if len(seen) != progress[1]:
            progress[:] = [time.monotonic(), len(seen)]
        # Everything arrived, or nothing new for DRAIN_STALL_S: what is missing by then will not come.
        return wanted <= seen.keys() or time.monotonic() - progress[0] > DRAIN_STALL_S

    harness.wait_until(drained, DRAIN_S, every_s=0.25)
    seen = arrivals.refresh()
    given_up = time.time()
    arrived = [seen[(d[0], d[1])] - d[2] for d in accepted if (d[0], d[1]) in seen]
    # An event still missing is at least (now - its send time) late: counted so, the percentiles it
    # reaches become lower bounds ("≥" in the table) instead of silently better figures.
    late = [given_up - d[2] for d in accepted if (d[0], d[1]) not in seen]
    e2e = sorted(arrived + late)
    bound = min(late) if late else math.inf
    http = sorted(d[4] for d in accepted)
    offered_count = len(offered["deliveries"])
    result = {
        "offered_per_s": offered["rate"], "seconds": offered["seconds"], "deliveries": offered_count,
        "accepted_2xx": len(accepted), "http_errors": offered_count - len(accepted),
        "events_received": len(arrived), "events_missing": len(late),
        "achieved_per_s": round(len(accepted) / offered["seconds"], 1),
        "drain_s": round(time.monotonic() - drain_started, 2),
        "alive": all(p.poll() is None for p in processes),
    }
    if e2e:
        for name, fraction in (("p50", 0.50), ("p99", 0.99), ("max", 1.0)):
            value = _percentile(e2e, fraction)
            result[f"e2e_{name}_ms"] = round(value * 1000, 1)
            result[f"e2e_{name}_is_lower_bound"] = value >= bound
    if http:
        result.update({"http_p50_ms": round(_percentile(http, 0.50) * 1000, 2),
                       "http_p99_ms": round(_percentile(http, 0.99) * 1000, 2)})
    return result


def run(rates: tuple[int, ...] = RATES, seconds: float = SECONDS) -> dict[str, Any]:
    bench = harness.prepare("e2e")
    port = _free_port()
    results: dict[str, Any] = {"rates": [], "seconds_per_rate": seconds, "steps_per_payment": STEPS, "gap_s": GAP_S}
    processes: dict[str, Any] = {}
    try:
        processes["ingest"] = harness.spawn(bench, [sys.executable, "-m", "paystream.cli", "ingest", "--port",
                                                    str(port)], "ingest")
        probes = _free_port()  # the worker's /readyz: in its group with its partitions, before any load
        with_probes = harness.Run(bench.tag, bench.settings.model_copy(update={"metrics_port": probes}),
                                  bench.scratch, bench.env)
        processes["processor"] = harness.start_processor(with_probes, bench.processor_settings(), "processor")
        watch_spec = bench.scratch / "watch.json"
        arrivals = Arrivals(bench.scratch / "arrivals.txt")
        watch_spec.write_text(json.dumps({"settings": json.loads(bench.settings.model_dump_json()),
                                          "out": str(arrivals.path)}))
        processes["watcher"] = harness.spawn(bench, [sys.executable, "-m", "bench.e2e", "watch", str(watch_spec)],
                                             "watcher")
        if not harness.wait_until(lambda: _ready(f"http://127.0.0.1:{port}/readyz"), 60, alive=processes["ingest"]):
            raise RuntimeError(f"ingest not ready:\n{harness.log_tail(bench, 'ingest')}")
        if not harness.wait_until(lambda: _ready(f"http://127.0.0.1:{probes}/readyz"), 120,
                                  alive=processes["processor"]):
            raise RuntimeError(f"processor not ready:\n{harness.log_tail(bench, 'processor')}")
        # Warm-up: until its events come through, the worker has joined its group and created its topics.
        warm = _latencies(_offer(bench, port, WARMUP_RATE, WARMUP_S, "warmup"), arrivals, list(processes.values()))
        if warm["events_missing"]:
            raise RuntimeError(f"warm-up events missing: {warm}\n{harness.log_tail(bench, 'processor')}")
        for rate in rates:
            offered = _offer(bench, port, rate, seconds, str(rate))
            results["rates"].append(_latencies(offered, arrivals, list(processes.values())))
        results["duplicate_events"] = arrivals.duplicates
        results["peak_rss_mib"] = {name: peak_rss_mib(process.pid) for name, process in processes.items()
                                   if name != "watcher"}
    finally:
        for name in ("ingest", "processor", "watcher"):
            if name in processes:
                harness.stop(processes[name], signal.SIGINT if name == "ingest" else signal.SIGTERM)
        bench.cleanup()
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"end to end: signed Stripe push → HTTP 2xx → ... → event on the status topic (watcher receive); "
             f"{results['seconds_per_rate']:.0f} s per rate",
             f"{'offered/s':>10}{'2xx/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'http p50':>9}{'http p99':>9}"
             f"{'missing':>8}{'errors':>7}{'drain s':>8}",
             "-" * 86]
    def ms(r: dict[str, Any], name: str) -> str:
        bound = "≥" if r.get(f"e2e_{name}_is_lower_bound") else ""
        return f"{bound}{r.get(f'e2e_{name}_ms', float('nan')):.1f}"

    for r in results["rates"]:
        lines.append(f"{r['offered_per_s']:>10}{r['achieved_per_s']:>8.0f}{ms(r, 'p50'):>9}{ms(r, 'p99'):>9}"
                     f"{ms(r, 'max'):>9}"
                     f"{r.get('http_p50_ms', float('nan')):>9.2f}{r.get('http_p99_ms', float('nan')):>9.2f}"
                     f"{r['events_missing']:>8}{r['http_errors']:>7}{r['drain_s']:>8.1f}")
    lines.append(f"duplicate status events (same payment and sequence twice): {results.get('duplicate_events', '?')}; "
                 "≥ = a lower bound: events still missing when the wait ended count as that late")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("load", help="(internal) run the load generator on a spec file").add_argument("spec", type=Path)
    sub.add_parser("watch", help="(internal) follow the status topic").add_argument("spec", type=Path)
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    if args.command == "load":
        run_generator(args.spec)
        return 0
    if args.command == "watch":
        asyncio.run(watch(json.loads(args.spec.read_text())))
        return 0
    from paystream.logs import configure

    configure("warning", "console")
    harness.quiet_client_logs()
    results = run(tuple(args.rates), args.seconds)
    print(table(results))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
