"""The toy fulfillment service (deploy/local/fulfillment_example.py) on a real broker, behind a real processor,
SIGKILLed twice mid-stream: no order released twice, none missed, every decision exactly the expected one.

1. The processor worker (a subprocess, tests/processors/processor_harness.py) turns the deliveries of
   ``EARLY`` Adyen payments per scenario (fulfillment_scenarios.py) into status events and state documents.
2. The example starts (first run: it bootstraps from the state topic, so it meets those payments at their
   final state) while the deliveries of ``LIVE`` payments per scenario trickle into the inbox.
3. It is SIGKILLed once it has decided a little, restarted, SIGKILLed again, restarted, and stopped with
   SIGTERM once the stream is done. Its offsets are committed only every 60 s, so each restart re-reads
   everything since the first run's start offsets: every event applied before is read again and must be
   dropped by the positions the example stores with its decisions.

Then the decisions in its SQLite file are, order by order, exactly the scenario's (``snapshot`` for the early
payments, ``live`` for the others), the early ones came from the snapshot and the live ones from the stream,
no order was released twice (in the file and in the printed lines of all runs), and the last run resumed from
committed offsets, saw no gap, and dropped the events the killed runs had applied.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fulfillment_scenarios import SCENARIOS, Scenario, deliveries, order_of, payment_key
from processor_harness import (
    drop_topics,
    events_of,
    fresh_settings,
    processor_settings,
    read_until,
    send_inbox,
    start_worker,
    trickle,
    wait_member,
)

from paystream.config import Settings

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "local" / "fulfillment_example.py"
EARLY, LIVE = 2, 6  # payments per scenario before the example starts / while it runs
STATS = re.compile(r"\[fulfillment\] stats (.*)$", re.M)


class Example:
    """One run of the example as a subprocess, its stdout in a file."""

    def __init__(self, settings: Settings, db: Path, group: str, log: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PAYSTREAM_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
               "PAYSTREAM_TOPICS__STATUS": settings.topics.status, "PAYSTREAM_TOPICS__STATE": settings.topics.state}
        env.pop("PAYSTREAM_KAFKA_BOOTSTRAP", None)  # the flat alias would win over the nested setting
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--db", str(db), "--group", group, "--commit-interval-s", "60"],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_following(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while "following" not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"the example did not start following:\n{self.output()}"
            await asyncio.sleep(0.2)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> dict[str, str]:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.output()
        found = STATS.search(self.output())
        assert found, self.output()
        return dict(pair.split("=", 1) for pair in found.group(1).split())


def decided(db: Path) -> list[tuple[str, str, str]]:
    """(order, action, origin) of every committed decision, in decision order."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        try:
            return connection.execute("SELECT order_id, action, origin FROM decisions ORDER BY n").fetchall()
        except sqlite3.OperationalError:  # the tables are not created yet
            return []


def applied(db: Path, keys: set[str]) -> int:
    """Events applied so far to the payments ``keys``: their stored sequences (gap-free from 1) summed."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT payment_key, sequence FROM positions").fetchall()
    return sum(sequence for key, sequence in rows if key in keys)


async def wait_decisions(db: Path, at_least: int, example: Example, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while len(decided(db)) < at_least:
        assert example.process.poll() is None, example.output()
        assert time.monotonic() < deadline, f"{len(decided(db))} of {at_least} decisions:\n{example.output()}"
        await asyncio.sleep(0.1)
    return len(decided(db))


async def test_the_example_killed_twice_mid_stream_releases_every_order_once(
    base_settings: Settings, kafka_bootstrap: str, tmp_path: Path,
) -> None:
    settings = await fresh_settings(base_settings, tag="f")
    conf = processor_settings()
    run = uuid.uuid4().hex[:6].upper()
    early = {f"E{run}S{i:02d}N{n}": s for i, s in enumerate(SCENARIOS) for n in range(EARLY)}
    live = {f"L{run}S{i:02d}N{n}": s for i, s in enumerate(SCENARIOS) for n in range(LIVE)}
    partitions = settings.topics.partitions

    def expected(payments: dict[str, Scenario], origin: str) -> dict[str, list[tuple[str, str]]]:
        return {order_of(s, p): [(a, origin) for a in (s.snapshot if origin == "state" else s.live)]
                for p, s in payments.items()}

    want = {**expected(early, "state"), **expected(live, "status")}
    snapshot_decisions = sum(len(s.snapshot) for s in early.values())
    final_events = {payment_key(s, p): len(s.statuses) for p, s in {**early, **live}.items()}

    def settled(payments: dict[str, Scenario]) -> Callable[[list[Any]], bool]:
        def done(records: list[Any]) -> bool:
            have = Counter(event["subject"] for event in events_of(records))
            return all(have[payment_key(s, p)] >= len(s.statuses) for p, s in payments.items())
        return done

    worker = start_worker(settings, conf, tmp_path, "processor")
    db, group = tmp_path / "orders.sqlite3", f"ps-test-fulfillment-{run}"
    runs: list[Example] = []
    try:
        await wait_member(settings, conf.app_id)
        # 1. payments that are over before the example first starts: it meets them in the snapshot.
        await send_inbox(settings, [d for p, s in early.items() for d in deliveries(s, p, partitions)])
        await read_until(settings, settings.topics.status, settled(early), worker=worker)
        # 2. the example starts and bootstraps; live payments flow in, one step of every payment at a time.
        runs.append(Example(settings, db, group, tmp_path / "run-1.log"))
        await runs[-1].wait_following()
        steps = [deliveries(s, p, partitions) for p, s in live.items()]
        flow = [(d.key, d.to_bytes()) for n in range(max(map(len, steps))) for d in (s[n] for s in steps if n < len(s))]
        flowing = asyncio.create_task(trickle(settings, settings.topics.inbox, flow, batch=3, pause_s=0.2))
        # 3. SIGKILL mid-stream, twice; the stream keeps flowing while the example is down.
        kills = []
        for more in (15, 40):
            kills.append(await wait_decisions(db, len(decided(db)) + more if kills else snapshot_decisions + more,
                                              runs[-1]))
            runs[-1].kill()
            assert not flowing.done(), "the stream ended before the kill: not mid-stream"
            applied_live = applied(db, {payment_key(s, p) for p, s in live.items()})
            runs.append(Example(settings, db, group, tmp_path / f"run-{len(runs) + 1}.log"))
            await runs[-1].wait_following()
        await flowing
        assert not flowing.exception()
        records = await read_until(settings, settings.topics.status, settled(live), worker=worker)
        await wait_decisions(db, sum(map(len, want.values())), runs[-1])
        await asyncio.sleep(1.0)  # anything still to come (a double) would land now
        stats = runs[-1].stop()
    finally:
        for example in runs:
            if example.process.poll() is None:
                example.kill()
        worker.stop()
        await drop_topics(settings, conf.app_id)

    have: dict[str, list[tuple[str, str]]] = {}
    for order, action, origin in decided(db):
        have.setdefault(order, []).append((action, origin))
    status_events = events_of(records)
    printed = Counter(line.split()[2] for example in runs for line in example.output().splitlines()
                      if line.startswith("[fulfillment] release "))
    releases = Counter(order for order, action, _ in decided(db) if action == "release")
    print(f"\nstatus events {len(status_events)} for {len(early)} early + {len(live)} live payments; decisions "
          f"{sum(map(len, have.values()))} ({sum(releases.values())} releases); killed at {kills} decisions, "
          f"{applied_live} live events applied before the last kill; last run: {stats}")

    assert Counter(event["subject"] for event in status_events) == final_events
    assert not [order for order, count in releases.items() if count > 1]
    assert not [order for order, count in printed.items() if count > 1]
    missing = {order: actions for order, actions in want.items() if have.get(order) != actions}
    assert not missing, {order: (actions, have.get(order)) for order, actions in list(missing.items())[:5]}
    assert set(have) == set(want)
    assert "bootstrapped from" in runs[0].output()
    assert all("resumed from the committed offsets" in example.output() for example in runs[1:])
    assert stats["bootstrapped"] == "False" and stats["gaps"] == "0" and stats["invalid"] == "0"
    # The last run re-read every live event the killed runs had applied (their offsets were never committed
    # past the first run's start) and dropped each as at or below its payment's stored position.
    assert int(stats["duplicates_dropped"]) >= applied_live > 0
    assert int(stats["events_read"]) == int(stats["duplicates_dropped"]) + int(stats["applied"])
