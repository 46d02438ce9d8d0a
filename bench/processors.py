"""Processor benchmark (DESIGN §8): reconciled observations per second for ONE Quix Streams worker, as a
ratio to a bare aiokafka consume→produce loop on the same topics in the same run (goal ≥ 0.3), in the default
exactly-once mode and, beside it, at-least-once.

    .venv/bin/python -m bench.processors            # needs the local broker (make stack-up); ~2 min

How it is measured:

1. The inbox topic (6 partitions, a fresh name per run) is pre-filled with ``PAYMENTS`` x 10 signed Stripe
   and Adyen deliveries (:mod:`bench.workload`), turned into inbox envelopes by the real ingest verifiers.
   Every delivery is a real change, so the expected output is exactly one status event per delivery.
2. Baseline: a bare aiokafka loop in its own process consumes the inbox (its own group), sends each record
   unchanged to an output topic with ingest's producer settings (acks=all, idempotent), awaits the
   acknowledgements and commits, in batches of up to 500.
3. The processor: ``processors.worker.run_processor`` in its own process (RocksDB state, a fresh app id,
   the production settings: exactly-once, 0.1 s commit interval, freshness gauges on) starts on the full
   inbox (keyed by payment, as ingest publishes it): one stateful stage (state + changelog) → status and state
   topics, every checkpoint one Kafka transaction. Then once more at-least-once (another app id, its own output
   topics) on the same inbox.
4. Each rate is inputs / (last - first output record timestamp): producer timestamps written by the
   measured process itself, so start-up (group join, topic creation, table recovery) is excluded and the
   watcher's polling granularity does not matter. The processor's output is then read back and checked:
   per payment, sequences 1..10 exactly once and the final status the pure join predicts.
5. CPU per record (/proc user+system of the measured process from its first output to its last) gives a
   second ratio that does not depend on what else the shared cores were doing.

If the ratio is under the goal, the worker is run once more under pyinstrument on the same inbox (a new
app id) and the profile is written to bench/results/processor-profile.txt, with the share of time by
library in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness, workload
from bench.memory import cpu_seconds, peak_rss_mib, thread_cpu_seconds

PAYMENTS = 2000
KEY_SPACE_PAYMENTS = 100_000  # a worker's realistic key space, far past the decoded-record cache (10,000)
KEY_SPACE_STEPS = 2
BATCH_MAX = 500  # processors.app.BATCH_MAX: the baseline batches like the worker
GOAL = 0.3
SAMPLE_PAYMENTS = 40  # payments whose expected events are recomputed by the pure join before the run
TIMEOUT_S = 180.0
STALL_S = 15.0  # no new output record for this long: the worker is idle or stuck, stop waiting
SETTLE_S = 3.0  # as long once there are as many output records as inputs (some may be repeats)
PROFILE_RECORDS = 1500  # status events sampled by the profiler
PROFILE_INTERVAL_S = 0.005  # 5 ms sampling: thousands of samples over the window, little slow-down
PROFILE_START = signal.SIGRTMIN + 1
PROFILE_STOP = signal.SIGRTMIN + 2
PROFILE_TXT = harness.ROOT / "bench" / "results" / "processor-profile.txt"


# --- the measured processes ---------------------------------------------------------------------------


def serve_worker(spec_file: Path) -> None:
    """The processor worker (optionally under pyinstrument), run until SIGTERM."""
    from paystream.config import Settings
    from paystream.logs import configure
    from processors.settings import ProcessorSettings
    from processors.worker import run_processor

    spec = json.loads(spec_file.read_text())
    settings = Settings.model_validate(spec["settings"])
    conf = ProcessorSettings.model_validate(spec["processor"])
    configure(settings.log_level, "json", process="bench-processor")
    if spec.get("floor"):
        _engine_floor_stages()
    if spec.get("profile"):
        _profile_on_signals(Path(spec["profile"]))
    run_processor(settings, conf)


def _engine_floor_stages() -> None:
    """Replace the stage's function with one that only moves bytes, keeping every engine operation of the real
    one per delivery: one state read and write and two outputs (status, state). What is left is the engine's
    own cost for this topology (bench only)."""
    from processors import topology

    def process(self: Any, value: bytes, key: bytes, _ts: int, _headers: Any, state: Any) -> list[Any]:
        state.get_bytes(topology.RECORD)
        state.set_bytes(topology.RECORD, value)
        return [topology.Output(self.topics.status, key, value, [("content-type", b"application/json")]),
                topology.Output(self.topics.state, key, value, [("content-type", b"application/json")])]

    topology.Stages.process = process  # type: ignore[method-assign]


def _profile_on_signals(out: Path) -> None:
    """pyinstrument between PROFILE_START and PROFILE_STOP (real-time signals nothing else uses), so only
    the processing window is sampled, not start-up."""
    import signal

    from pyinstrument import Profiler

    profiler = Profiler(interval=PROFILE_INTERVAL_S, async_mode="disabled")

    def stop(*_: object) -> None:
        session = profiler.stop()
        root = session.root_frame()
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False)
                       + "\nSelf time by function (a [self] sample is charged to its function), top 40:\n"
                       + "\n".join(f"{seconds:8.3f} s  {where}" for where, seconds in top_functions(root, 40))
                       + f"\n\n{_debug_loggers()}\n")
        out.with_suffix(".json").write_text(json.dumps(time_by_library(root)))

    signal.signal(PROFILE_START, lambda *_: profiler.start())
    signal.signal(PROFILE_STOP, stop)


def _debug_loggers() -> str:
    """Loggers whose debug() calls build a record (formatting costs even when no handler prints it)."""
    import logging

    enabled = sorted(name for name, logger in logging.root.manager.loggerDict.items()
                     if isinstance(logger, logging.Logger) and logger.isEnabledFor(logging.DEBUG))
    return (f"Loggers with DEBUG enabled at the end of the window ({len(enabled)}; root level "
            f"{logging.getLevelName(logging.root.level)}): {', '.join(enabled[:60]) or 'none'}")


def time_by_library(root: Any) -> dict[str, float]:
    """Seconds of samples by the library of the code that was running (self time, counted once).

    pyinstrument keeps a frame's own time in a synthetic ``[self]`` child and built-in calls have no file:
    both are charged to the nearest ancestor with a source file (``json.loads`` called by our code counts
    as ours; ``epoll.poll`` under selectors.py counts as idle)."""
    shares: dict[str, float] = {}
    stack: list[tuple[Any, str]] = [(root, "")] if root is not None else []
    while stack:
        frame, owner = stack.pop()
        path = frame.file_path or ""
        if path and not path.startswith("<"):
            owner = path
        if not frame.children:
            shares[_library(owner)] = shares.get(_library(owner), 0.0) + frame.time
        stack.extend((child, owner) for child in frame.children)
    return {name: round(seconds, 3) for name, seconds in sorted(shares.items(), key=lambda item: -item[1])}


def top_functions(root: Any, count: int) -> list[tuple[str, float]]:
    """The functions with the most self time (pyinstrument's tree hides library frames; this does not)."""
    shares: dict[str, float] = {}
    stack: list[tuple[Any, Any]] = [(root, None)] if root is not None else []
    while stack:
        frame, parent = stack.pop()
        if not frame.children:
            owner = parent if frame.is_synthetic and parent is not None else frame
            where = f"{owner.function}  {owner.file_path_short or '?'}:{owner.line_no or ''}"
            shares[where] = shares.get(where, 0.0) + frame.time
        stack.extend((child, frame) for child in frame.children)
    return sorted(shares.items(), key=lambda item: -item[1])[:count]


def _library(path: str) -> str:
    for marker, name in (("selectors.py", "idle (waiting for the network)"), ("/quixstreams/", "quixstreams"),
                         ("/confluent_kafka/", "confluent-kafka (librdkafka)"), ("/aiokafka/", "aiokafka"),
                         ("/rocksdict/", "rocksdict"), ("/structlog/", "structlog"),
                         ("/prometheus_client/", "prometheus_client"), ("/processors/", "paystream processors"),
                         ("/schemas/", "paystream schemas (join)"), ("/ingest/", "paystream parsers"),
                         ("/paystream/", "paystream shared"), ("/asyncio/", "asyncio"), ("/logging/", "logging")):
        if marker in path:
            return name
    return "other" if path else "unattributed"


async def baseline_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """Consume → produce one record per input (acks=all) → commit, until ``expected`` inputs are done."""
    from paystream.config import Settings
    from paystream.kafka import make_consumer, make_producer

    settings = Settings.model_validate(spec["settings"])
    consumer = make_consumer(settings, spec["source"], group_id=spec["group"], client_suffix="bench-baseline")
    producer = make_producer(settings, client_suffix="bench-baseline")
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while done < spec["expected"]:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_MAX)
            futures = [await producer.send(spec["target"], record.value, key=record.key)
                       for records in batches.values() for record in records]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
                done += len(futures)
        # Stay up until told to stop, so the orchestrator can read this process's peak RSS (VmHWM).
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
    finally:
        await producer.stop()
        await consumer.stop()
    return {"consumed": done}


# --- orchestration ------------------------------------------------------------------------------------


async def _create_topic(settings: Any, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from paystream.kafka import connection_options

    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.topics.partitions, settings.topics.replication_factor)])
        for _ in range(50):  # until every partition has a leader (else the first reads log NotLeader errors)
            described = await admin.describe_topics([name])
            partitions = described[0].get("partitions", []) if described else []
            if len(partitions) == settings.topics.partitions and all(p["leader"] >= 0 for p in partitions):
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _status_identity(record: Any) -> tuple[str, int]:
    import orjson

    data = orjson.loads(record.value)["data"]
    return str(data["payment_key"]), int(data["sequence"])


def _key_identity(record: Any) -> bytes:
    return bytes(record.key)


def _measure(run: harness.Run, process: Any, name: str, topic: str, expected: int, identify: Any, *,
             profiled: bool = False) -> tuple[dict[str, Any], harness.Tail]:
    """Follow ``topic`` until it holds ``expected`` distinct records; CPU of ``process`` from its first output
    to the last, its peak RSS, and the rate from the records' own timestamps. ``profiled``: signal the
    worker's profiler at the first output and at the end."""
    started = time.monotonic()
    cpu_first: tuple[float, int] | None = None
    threads_first: dict[str, float] = {}
    last_change = [time.monotonic(), 0.0]
    stalled = settled = False
    with harness.Tail(run.settings, topic, identify) as tail:
        def progress() -> bool:
            nonlocal cpu_first, stalled, settled
            distinct = tail.poll()
            if cpu_first is None and distinct > 0:
                cpu_first = (cpu_seconds(process.pid), tail.records)
                threads_first.update(thread_cpu_seconds(process.pid))
                if profiled:
                    os.kill(process.pid, PROFILE_START)
            if tail.records != last_change[1]:
                last_change[:] = [time.monotonic(), tail.records]
            elif distinct and time.monotonic() - last_change[0] > STALL_S:
                stalled = True  # nothing new for a while: report what arrived rather than wait forever
            if tail.records >= expected and time.monotonic() - last_change[0] > SETTLE_S:
                settled = True  # one output per input arrived and nothing more comes: no need to wait longer
            return distinct >= expected or stalled or settled

        finished = harness.wait_until(progress, TIMEOUT_S, every_s=0.2, alive=process)
        done = len(tail.first)
        cpu_end = cpu_seconds(process.pid)
        threads_end = thread_cpu_seconds(process.pid)
        if profiled:
            os.kill(process.pid, PROFILE_STOP)
        outcome: dict[str, Any] = {"wall_s_incl_startup": round(time.monotonic() - started, 2),
                                   "peak_rss_mib": peak_rss_mib(process.pid), "distinct_outputs": done,
                                   "complete": done >= expected}
        if not done:
            harness.stop(process)
            raise RuntimeError(f"{name}: no output on {topic} (finished={finished})\n{harness.log_tail(run, name)}")
        if not outcome["complete"]:
            outcome["stopped_because"] = (
                f"as many output records as inputs, then nothing new for {SETTLE_S:.0f}s" if settled
                else f"no new output for {STALL_S:.0f}s" if stalled
                else f"timeout {TIMEOUT_S:.0f}s" if process.poll() is None else "process exited")
        if cpu_first is not None and tail.records > cpu_first[1]:
            records = tail.records - cpu_first[1]
            outcome["cpu_us_per_record"] = round((cpu_end - cpu_first[0]) / records * 1e6, 1)
            # Where the CPU goes: the Python main thread (the engine's loop and our code) vs librdkafka's threads.
            outcome["cpu_us_per_record_by_thread"] = {
                kind: round((threads_end[kind] - threads_first.get(kind, 0.0)) / records * 1e6, 1)
                for kind in threads_end}
        stamps = [record.timestamp for record in [*tail.first.values(), *tail.repeated]]
        span_s = max((max(stamps) - min(stamps)) / 1000, 1e-3)
        # Over every output record: a worker that re-emits (see the check) still did that work.
        outcome.update({"span_s": round(span_s, 2), "per_s": round(min(tail.records, expected) / span_s, 1),
                        "output_records": tail.records, "repeated_records": tail.repeats})
    return outcome, tail


def _check_events(tail: harness.Tail, plan: dict[str, int], final: str) -> dict[str, Any]:
    """Per payment: sequences 1..n all present, the last one ``final`` (what the pure join says); and
    events repeated under the same (payment, sequence) — at-least-once re-sends, which should be rare."""
    import orjson

    sequences: dict[str, set[int]] = {}
    for key, sequence in tail.first:
        sequences.setdefault(key, set()).add(sequence)
    wrong = [key for key, steps in plan.items() if sequences.get(key) != set(range(1, steps + 1))]
    not_final = [key for key, steps in plan.items()
                 if (key, steps) not in tail.first
                 or orjson.loads(tail.first[(key, steps)].value)["data"]["status"] != final]
    check: dict[str, Any] = {"payments": len(plan), "payments_with_wrong_sequences": len(wrong),
                             f"payments_not_{final}": len(not_final), "repeated_events": tail.repeats,
                             "ok": not wrong and not not_final}
    if tail.repeated:  # what a repeat looks like: a re-send (same id) or a different event (state lost)?
        again = tail.repeated[0]
        first = tail.first[_status_identity(again)]
        check["first_repeat"] = [_summary(first), _summary(again)]
        check["repeats_with_a_different_id"] = sum(
            orjson.loads(r.value)["id"] != orjson.loads(tail.first[_status_identity(r)].value)["id"]
            for r in tail.repeated)
    return check


def _summary(record: Any) -> dict[str, Any]:
    import orjson

    event = orjson.loads(record.value)
    data = event["data"]
    return {"id": event["id"], "partition": record.partition, "offset": record.offset, "key": data["payment_key"],
            "sequence": data["sequence"], "status": data["status"], "previous": data["previous_status"],
            "refunded": data["refunded_amount"], "evidence": data["evidence"]}


GUARANTEES = ("exactly-once", "at-least-once")


def _own_outputs(bench: harness.Run, label: str) -> harness.Run:
    """``bench`` with its own status and state topics (created), for a second worker on the same inbox."""
    names = {name: f"{bench.tag}.{label}.{name}" for name in ("status", "state")}
    for name in names.values():
        asyncio.run(_create_topic(bench.settings, name))
    topics = bench.settings.topics.model_copy(update=names)
    return harness.Run(bench.tag, bench.settings.model_copy(update={"topics": topics}), bench.scratch, bench.env)


def _floor_run(bench: harness.Run, expected: int) -> dict[str, Any]:
    """The engine alone: the same topology and settings (exactly-once), stage functions that only move bytes."""
    conf = bench.processor_settings(app_id=f"{bench.tag}-floor")
    worker = harness.start_processor(bench, conf, "processor-floor", floor=True)
    outcome, _ = _measure(bench, worker, "processor-floor", bench.settings.topics.status, expected, _key_identity)
    outcome["exit_code"] = harness.stop(worker)
    return outcome


def _processor_run(bench: harness.Run, guarantee: str, expected: int, steps: dict[str, int],
                   final: str) -> dict[str, Any]:
    label = guarantee.replace("-", "")
    conf = bench.processor_settings(app_id=f"{bench.tag}-{label}", processing_guarantee=guarantee)
    worker = harness.start_processor(bench, conf, f"processor-{label}")
    outcome, tail = _measure(bench, worker, f"processor-{label}", bench.settings.topics.status, expected,
                             _status_identity)
    outcome["exit_code"] = harness.stop(worker)
    outcome["check"] = _check_events(tail, steps, final)
    outcome["guarantee"] = guarantee
    return outcome


def run(payments: int = PAYMENTS, *, profile_if_short: bool = True) -> dict[str, Any]:
    """The standard workload: ``payments`` Stripe and Adyen payments of ten deliveries each, ending refunded;
    the bare loop, both guarantees and the engine floor, and a profile when the goal is not met."""
    return _run(lambda partitions: workload.mixed_payments(payments, partitions), payments, "refunded",
                full=True, profile_if_short=profile_if_short)


def run_key_space(payments: int = KEY_SPACE_PAYMENTS) -> dict[str, Any]:
    """A realistic key space: ``payments`` distinct Stripe payments of two deliveries each (created, then
    requires_action: both awaiting news, so each arms its stale poll); the bare loop and exactly-once. Past the
    decoded-record cache's capacity, most inputs read their payment's record from the store."""
    return _run(lambda partitions: [workload.stripe_payment(partitions, KEY_SPACE_STEPS) for _ in range(payments)],
                payments, "requires_action", full=False, profile_if_short=False)


def _run(make_plan: Any, payments: int, final: str, *, full: bool, profile_if_short: bool) -> dict[str, Any]:
    bench = harness.prepare("processors")
    settings, topics = bench.settings, bench.settings.topics
    results: dict[str, Any] = {"payments": payments, "partitions": topics.partitions, "goal": GOAL,
                               "commit_interval_s": bench.processor_settings().commit_interval_s,
                               "final_status": final}
    try:
        made = time.monotonic()
        plan = make_plan(topics.partitions)
        deliveries = list(workload.interleave(plan))
        inbox = workload.envelopes(deliveries, settings)
        # The workload's promise (one event per delivery, ending in `final`), checked by the pure join.
        sample_keys = {p[0].payment_key for p in plan[:SAMPLE_PAYMENTS]}
        sample = workload.expected_events([e for e, d in zip(inbox, deliveries, strict=True)
                                           if d.payment_key in sample_keys], settings)
        steps = {p[0].payment_key: len(p) for p in plan}
        if any(sample[key] != (steps[key], final) for key in sample_keys):
            raise RuntimeError(f"workload does not yield one event per delivery: {sample}")
        expected = len(inbox)
        results["inputs"] = expected
        results["input_bytes_avg"] = round(sum(len(e.to_bytes()) for e in inbox) / expected)
        results["generate_s"] = round(time.monotonic() - made, 2)
        filled = time.monotonic()
        asyncio.run(harness.produce(settings, topics.inbox, [(e.key, e.to_bytes()) for e in inbox]))
        results["prefill_s"] = round(time.monotonic() - filled, 2)

        # 1. the bare loop
        target = f"{bench.tag}.baseline.out"
        asyncio.run(_create_topic(settings, target))
        spec = bench.scratch / "baseline.json"
        spec.write_text(json.dumps({"settings": json.loads(settings.model_dump_json()), "source": topics.inbox,
                                    "target": target, "group": f"{bench.tag}-baseline", "expected": expected}))
        loop = harness.spawn(bench, [sys.executable, "-m", "bench.processors", "baseline", str(spec)], "baseline")
        results["baseline"], _ = _measure(bench, loop, "baseline", target, expected, _key_identity)
        harness.stop(loop)

        # 2. the worker: exactly-once (the default, the headline figure), then at-least-once beside it
        base = results["baseline"]
        guarantees = [("exactly-once", bench)] + ([("at-least-once", _own_outputs(bench, "alo"))] if full else [])
        for guarantee, run_on in guarantees:
            outcome = _processor_run(run_on, guarantee, expected, steps, final)
            outcome["ratio"] = round(outcome["per_s"] / base["per_s"], 3)
            if "cpu_us_per_record" in outcome and "cpu_us_per_record" in base:
                outcome["cpu_ratio"] = round(base["cpu_us_per_record"] / outcome["cpu_us_per_record"], 3)
            results["processor" if guarantee == "exactly-once" else "processor_at_least_once"] = outcome
        # 3. the engine's own floor on this topology, for where the time goes
        if full:
            floor = _floor_run(_own_outputs(bench, "floor"), expected)
            floor["ratio"] = round(floor["per_s"] / base["per_s"], 3)
            if "cpu_us_per_record" in floor and "cpu_us_per_record" in base:
                floor["cpu_ratio"] = round(base["cpu_us_per_record"] / floor["cpu_us_per_record"], 3)
            results["engine_floor"] = floor
        results["ratio"] = results["processor"]["ratio"]
        if "cpu_ratio" in results["processor"]:
            results["cpu_ratio"] = results["processor"]["cpu_ratio"]
        if profile_if_short and results["ratio"] < GOAL:
            results["profile"] = _profile(bench, expected)
    finally:
        bench.cleanup()
    return results


def _profile(bench: harness.Run, expected: int) -> dict[str, Any]:
    """The same inbox once more with a fresh app id (so from offset 0) and its own output topics, sampled by
    pyinstrument from its first status event to its ``PROFILE_RECORDS``th."""
    conf = bench.processor_settings(app_id=f"{bench.tag}-profiled")
    raw = bench.scratch / "processor-profile.txt"
    profiled = _own_outputs(bench, "profiled")
    status = profiled.settings.topics.status
    worker = harness.start_processor(profiled, conf, "processor-profiled", profile=raw)
    sample = min(expected, PROFILE_RECORDS)
    outcome, _ = _measure(profiled, worker, "processor-profiled", status, sample, _status_identity, profiled=True)
    harness.wait_until(lambda: raw.with_suffix(".json").exists(), 30.0, alive=worker)
    harness.stop(worker, timeout_s=60)
    PROFILE_TXT.parent.mkdir(parents=True, exist_ok=True)
    PROFILE_TXT.write_text(raw.read_text() if raw.exists() else "(no profile written)\n")
    shares_file = raw.with_suffix(".json")
    shares: dict[str, float] = json.loads(shares_file.read_text()) if shares_file.exists() else {}
    total = sum(shares.values()) or 1.0
    return {"tool": f"pyinstrument, {PROFILE_INTERVAL_S * 1000:.0f} ms sampling, from the worker's first status "
                    f"event to its {sample}th",
            "report": str(PROFILE_TXT.relative_to(harness.ROOT)), "per_s_while_profiled": outcome["per_s"],
            "share_by_library": {name: round(seconds / total, 3) for name, seconds in shares.items()}}


def table(results: dict[str, Any]) -> str:
    base = results["baseline"]
    nan = float("nan")
    lines = [f"processor: {results['inputs']:,} signed deliveries ({results['payments']:,} payments, ending "
             f"{results.get('final_status', 'refunded')}) pre-filled on a {results['partitions']}-partition inbox; "
             f"rate = inputs / output time span; commit interval {results['commit_interval_s']} s",
             f"{'target':<40}{'rec/s':>8}{'ratio':>7}{'cpu us/rec':>11}{'cpu ratio':>10}{'peak MiB':>9}",
             "-" * 85,
             f"{'bare aiokafka consume→produce':<40}{base['per_s']:>8.0f}{1.0:>7.2f}"
             f"{base.get('cpu_us_per_record', nan):>11.0f}{1.0:>10.2f}{base['peak_rss_mib'] or 0:>9.0f}"]
    for key in ("processor", "processor_at_least_once"):
        if key not in results:
            continue
        proc = results[key]
        label = f"Quix worker, {proc['guarantee']}"
        lines.append(f"{label:<40}{proc['per_s']:>8.0f}{proc['ratio']:>7.2f}"
                     f"{proc.get('cpu_us_per_record', nan):>11.0f}{proc.get('cpu_ratio', nan):>10.2f}"
                     f"{proc['peak_rss_mib'] or 0:>9.0f}")
        lines.append(f"  output check: {'ok' if proc['check']['ok'] else 'FAILED'}: "
                     + ", ".join(f"{k}={v}" for k, v in proc["check"].items() if k not in ("ok", "first_repeat")))
        if not proc["complete"]:
            lines.append(f"  output INCOMPLETE: {proc['distinct_outputs']}/{results['inputs']} distinct events "
                         f"({proc['stopped_because']}); rate is over what arrived")
    if "engine_floor" in results:
        floor = results["engine_floor"]
        label = "engine floor (the stage moves bytes only)"
        lines.append(f"{label:<40}{floor['per_s']:>8.0f}{floor['ratio']:>7.2f}"
                     f"{floor.get('cpu_us_per_record', nan):>11.0f}{floor.get('cpu_ratio', nan):>10.2f}"
                     f"{floor['peak_rss_mib'] or 0:>9.0f}")
    for key, label in (("processor", "Quix worker, exactly-once"), ("engine_floor", "engine floor"),
                       ("baseline", "bare aiokafka loop")):
        threads = results.get(key, {}).get("cpu_us_per_record_by_thread")
        if threads:
            lines.append(f"  cpu us/record by thread, {label}: "
                         + ", ".join(f"{kind} {micros:.0f}" for kind, micros in threads.items()))
    lines.append(f"goal ratio >= {results['goal']} (exactly-once): "
                 f"{'met' if results['ratio'] >= results['goal'] else 'NOT met'}")
    if "profile" in results:
        shares = list(results["profile"]["share_by_library"].items())[:6]
        lines.append(f"profile ({results['profile']['report']}): "
                     + ", ".join(f"{name} {share:.0%}" for name, share in shares))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processors", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("worker", help="(internal) run the processor worker").add_argument("spec", type=Path)
    sub.add_parser("baseline", help="(internal) run the bare aiokafka loop").add_argument("spec", type=Path)
    parser.add_argument("--payments", type=int, default=PAYMENTS)
    parser.add_argument("--no-profile", action="store_true", help="never run the profiled pass")
    args = parser.parse_args(argv)
    if args.command == "worker":
        serve_worker(args.spec)
        return 0
    if args.command == "baseline":
        print(json.dumps(asyncio.run(baseline_loop(json.loads(args.spec.read_text())))))
        return 0
    from paystream.logs import configure

    configure("warning", "console")
    harness.quiet_client_logs()
    results = run(args.payments, profile_if_short=not args.no_profile)
    print(table(results))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
