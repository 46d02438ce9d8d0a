"""Where the processor's own per-record Python time goes, without Kafka or RocksDB.

    .venv/bin/python -m bench.stage_costs [--payments 1000] [--repeat 3]      # no broker needed; ~1 min

The processor benchmark (:mod:`bench.processors`) compares whole processes; this one runs the work of the
stage in this process on the same workload (:mod:`bench.workload`: signed Stripe and Adyen deliveries through
the real verifiers, ten per payment, interleaved, keyed by payment as ingest publishes them), with the payment
records kept in a dict instead of the state store. It prints the time per inbox record of each part and its
share of the whole: envelope decode, normalize (the provider parsers), record decode, the pure join
(:func:`schemas.join.advance`), the reconcile around it (the stale-poll chain, metrics, the event's
serialization), record encode, and the current-state document.

The join is pure, so it is timed by its own call on the same arguments just before the reconcile that
includes it, and subtracted from that reconcile. As a check, the same workload also goes through
:meth:`processors.topology.Stages.process` itself (what the engine calls per record); the sum of the parts
should come close to it. Each figure is the fastest of ``--repeat`` passes (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import workload

PARTS = ("envelope decode", "normalize", "record decode", "join (advance)", "reconcile around the join",
         "record encode", "state document")


class DictState:
    """The two calls of the engine's per-key state that the reconcile stage makes, over a dict."""

    def __init__(self) -> None:
        self.values: dict[tuple[bytes, str], bytes] = {}
        self.key = b""

    def at(self, key: bytes) -> DictState:
        self.key = key
        return self

    def get_bytes(self, name: str) -> bytes | None:
        return self.values.get((self.key, name))

    def set_bytes(self, name: str, value: bytes) -> None:
        self.values[(self.key, name)] = value


def _parts_pass(stages: Any, inbox: list[tuple[bytes, bytes]]) -> dict[str, float]:
    from processors.payment_inputs import ObservationInput
    from processors.state_doc import document, signature
    from schemas.envelopes import InboxEnvelope
    from schemas.join import advance

    spent: dict[str, float] = defaultdict(float)
    records: dict[bytes, bytes] = {}
    clock = time.perf_counter
    for key, value in inbox:
        now = datetime.now(UTC)
        t0 = clock()
        envelope = InboxEnvelope.from_bytes(value)
        t1 = clock()
        inputs = stages.normalizer.inbox(envelope, now)
        t2 = clock()
        spent["envelope decode"] += t1 - t0
        spent["normalize"] += t2 - t1
        t0 = clock()
        stored = record = stages.codec.decode(key, records.get(key))
        t1 = clock()
        spent["record decode"] += t1 - t0
        for item in inputs:  # the workload's deliveries are all about their record's payment
            t2 = clock()
            join_s = 0.0
            if isinstance(item, ObservationInput):  # no delivery repeats in this workload: each one is joined
                advance(None if record is None else record.state, item.observation, now)
                join_s = clock() - t2
            t3 = clock()
            result = stages.reconciler(record, item, now)
            t4 = clock()
            record = result.record
            spent["join (advance)"] += join_s
            spent["reconcile around the join"] += (t4 - t3) - join_s
        t0 = clock()
        records[key] = stages.codec.encode(key, record)
        t1 = clock()
        if signature(stored) != signature(record):
            document(key.decode(), record, stages.schedule, now)
        t2 = clock()
        spent["record encode"] += t1 - t0
        spent["state document"] += t2 - t1
    return spent


def _stages_pass(stages: Any, inbox: list[tuple[bytes, bytes]]) -> float:
    from types import SimpleNamespace
    from unittest import mock

    state = DictState()
    where = SimpleNamespace(topic=stages.topics.inbox, partition=0, offset=0)
    with mock.patch("processors.topology.message_context", lambda: where):
        started = time.perf_counter()
        for key, value in inbox:
            stages.process(value, key, 0, None, state.at(key))
        return time.perf_counter() - started


def measure(payments: int, repeat: int) -> dict[str, Any]:
    from paystream.config import load_settings
    from processors.settings import ProcessorSettings
    from processors.topology import Stages, TopicNames

    os.environ.update(workload.secret_env())
    scratch = Path(tempfile.mkdtemp(prefix="paystream-stage-costs-"))
    settings = load_settings(accounts=workload.accounts(), log_level="warning", state_dir=scratch)
    partitions = settings.topics.partitions
    envelopes = workload.envelopes(list(workload.interleave(workload.mixed_payments(payments, partitions))),
                                   settings)
    inbox = [(envelope.key, envelope.to_bytes()) for envelope in envelopes]
    names = TopicNames(*(f"bench.{name}" for name in ("inbox", "fetch_results", "inputs", "status", "state",
                                                       "fetch_requests", "dlq")))

    def fresh_stages() -> Any:  # a new codec cache and no records: every pass starts from nothing
        return Stages(settings, ProcessorSettings(app_id="bench-stage-costs"), names)

    passes = [_parts_pass(fresh_stages(), inbox) for _ in range(repeat)]
    parts = {name: min(run[name] for run in passes) for name in PARTS}
    whole = min(_stages_pass(fresh_stages(), inbox) for _ in range(repeat))
    count = len(inbox)
    return {
        "inbox_records": count,
        "us_per_record": {name: round(seconds * 1e6 / count, 1) for name, seconds in parts.items()},
        "sum_of_parts_us": round(sum(parts.values()) * 1e6 / count, 1),
        "stages_us": round(whole * 1e6 / count, 1),
    }


def table(results: dict[str, Any]) -> str:
    total = results["sum_of_parts_us"]
    lines = [f"per inbox record ({results['inbox_records']:,} records, fastest pass)",
             f"{'part':<28}{'µs':>8}{'share':>8}"]
    for name, micros in results["us_per_record"].items():
        lines.append(f"{name:<28}{micros:>8.1f}{micros / total:>8.0%}")
    lines.append(f"{'sum of the parts':<28}{total:>8.1f}")
    lines.append(f"{'Stages (the engine calls)':<28}{results['stages_us']:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage_costs",
                                     description="The processor's own per-record Python time, by part, without "
                                                 "Kafka (bench/stage_costs.py explains how it is measured).")
    parser.add_argument("--payments", type=int, default=1000, help="payments of ten deliveries each (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the workload; the fastest counts")
    args = parser.parse_args(argv)
    print(table(measure(args.payments, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
