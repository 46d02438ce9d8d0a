"""Two workers sharing the partitions produce the same output as one (real broker, 4 partitions).

The same inbox is read by two consumer groups: app A with one worker, app B with two workers started
together; each app writes its own status topic. The input (100 payments, 300 deliveries plus duplicates,
some payments out of order) is produced once both B workers hold inbox partitions, as their logs show.

What makes "the same output" exact rather than "the same final state": the sequence of events of a
payment depends on the order its observations are reconciled in. Inbox records are keyed by delivery
id, so this test picks delivery ids that put all of a payment's deliveries in one inbox partition; each
payment's observations then reach reconcile in the order they were produced, whichever worker
normalizes them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_pipeline import NO_STALE_POLLS, assert_no_agent_crash, current_partitions
from e2e_pipeline import demo_traffic as demo
from processor_harness import (
    Worker,
    envelope,
    events_of,
    processor_settings,
    read_until,
    send_inbox,
    start_worker,
    wait_drained,
)
from processor_harness import delivery_id_in as harness_delivery_id_in

from paystream.config import Settings, TopicSettings
from paystream.kafka import ensure_topics
from processors.settings import ProcessorSettings
from schemas.envelopes import InboxEnvelope

pytestmark = pytest.mark.kafka

PARTITIONS = 4
ADYEN_PAYMENTS, STRIPE_PAYMENTS = 60, 40
FINAL = {"adyen": ("partially_refunded", 1000, 1000, 300), "stripe": ("captured", 2000, 2000, 0)}
Row = tuple[str, int, str, int | None, int | None, int | None, str]


def delivery_id_in(partition: int, provider: str, account: str, stem: str) -> str:
    return harness_delivery_id_in(partition, PARTITIONS, provider, account, stem)


def adyen_bodies(psp: str, start: float) -> list[tuple[str, dict[str, Any]]]:
    """Authorise 1000, capture it, refund 300 (demo_traffic's items; the processors do not verify)."""
    return [(f"{psp}:AUTH", demo.adyen_item(psp, "AUTHORISATION", True, 1000, start + 1)),
            (f"{psp}:CAP", demo.adyen_item(f"{psp}C", "CAPTURE", True, 1000, start + 2, originalReference=psp)),
            (f"{psp}:REF", demo.adyen_item(f"{psp}R", "REFUND", True, 300, start + 3, originalReference=psp))]


def stripe_bodies(pi: str, start: float) -> list[tuple[str, dict[str, Any]]]:
    intent = demo.stripe_intent(pi, "requires_payment_method", 2000, int(start))
    authorized = {**intent, "status": "requires_capture", "latest_charge": f"ch_{pi}"}
    captured = {**authorized, "status": "succeeded", "amount_received": 2000}
    events = [demo.stripe_event("payment_intent.created", intent, int(start) + 1),
              demo.stripe_event("payment_intent.amount_capturable_updated", authorized, int(start) + 2),
              demo.stripe_event("payment_intent.succeeded", captured, int(start) + 3)]
    return [(event["id"], event) for event in events]


def payment_deliveries(rng: random.Random, provider: str, account: str, object_id: str,
                       bodies: list[tuple[str, dict[str, Any]]]) -> list[InboxEnvelope]:
    """One payment's deliveries, all in one inbox partition: in order, reversed or shuffled, and each
    delivery sent again (a provider retry) with probability 1/3, twice with 1/9."""
    partition = rng.randrange(PARTITIONS)
    deliveries = [envelope(provider, account, delivery_id_in(partition, provider, account, stem), orjson.dumps(body))
                  for stem, body in bodies]
    order = rng.choice(("in_order", "reversed", "shuffled"))
    if order == "reversed":
        deliveries.reverse()
    elif order == "shuffled":
        rng.shuffle(deliveries)
    sent: list[InboxEnvelope] = []
    for delivery in deliveries:
        copies = 1 + (rng.random() < 1 / 3) + (rng.random() < 1 / 9)
        sent += [delivery] * copies
    return sent


def build_input(seed: int) -> tuple[list[InboxEnvelope], dict[str, str]]:
    """The inbox records (payments interleaved, each payment's own order kept) and payment key -> provider."""
    rng = random.Random(seed)
    start = time.time() - 3600
    tag = f"{seed:06d}{int(start) % 10**6:06d}"
    queues: list[list[InboxEnvelope]] = []
    providers: dict[str, str] = {}
    for n in range(ADYEN_PAYMENTS):
        psp = f"TW{tag}{n:03d}"
        queues.append(payment_deliveries(rng, "adyen", "main", psp, adyen_bodies(psp, start + n)))
        providers[f"adyen:main:payment:{psp}"] = "adyen"
    for n in range(STRIPE_PAYMENTS):
        pi = f"pi_tw{tag}{n:03d}"
        queues.append(payment_deliveries(rng, "stripe", "main", pi, stripe_bodies(pi, start + n)))
        providers[f"stripe:main:payment_intent:{pi}"] = "stripe"
    records: list[InboxEnvelope] = []
    while queues:
        queue = rng.choice(queues)
        records.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return records, providers


def rows(events: list[dict[str, Any]]) -> set[Row]:
    return {(e["subject"], e["data"]["sequence"], e["data"]["status"], e["data"]["amount"],
             e["data"]["captured_amount"], e["data"]["refunded_amount"], e["id"]) for e in events}


def finals(events: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["data"]["sequence"] >= latest.get(event["subject"], event)["data"]["sequence"]:
            latest[event["subject"]] = event
    return {key: (e["data"]["status"], e["data"]["amount"], e["data"]["captured_amount"],
                  e["data"]["refunded_amount"]) for key, e in latest.items()}


def gaps_or_conflicts(events: list[dict[str, Any]]) -> list[str]:
    """Per payment: sequences 1..n, and one content per sequence number (a re-emission repeats it)."""
    by_key: dict[str, dict[int, set[Row]]] = {}
    for row in rows(events):
        by_key.setdefault(row[0], {}).setdefault(row[1], set()).add(row)
    problems = [f"{key}: sequences {sorted(seqs)}" for key, seqs in by_key.items()
                if sorted(seqs) != list(range(1, len(seqs) + 1))]
    problems += [f"{key} #{seq}: {contents}" for key, seqs in by_key.items() for seq, contents in seqs.items()
                 if len(contents) > 1]
    return problems


async def topics_for(base: Settings, fresh_topics: Callable[..., TopicSettings], **same: str) -> Settings:
    topics = fresh_topics(base.topics, partitions=PARTITIONS).model_copy(update=same)
    settings = base.model_copy(update={"topics": topics})
    await ensure_topics(settings)
    return settings


async def wait_sharing(workers: list[Worker], topics: list[str], *, timeout_s: float = 90.0) -> str:
    """Until each worker's latest logged assignment holds partitions of every topic, disjoint between the
    workers and covering all of them. Returns "" then, else what the logs showed."""
    deadline = time.monotonic() + timeout_s
    seen = "no assignment logged"
    while time.monotonic() < deadline:
        held = {topic: [current_partitions(worker, topic) for worker in workers] for topic in topics}
        seen = repr(held)
        if all(shared(parts) for parts in held.values()):
            return ""
        if any(worker.process.poll() is not None for worker in workers):
            break
        await asyncio.sleep(0.5)
    return seen


def shared(parts: list[set[int] | None]) -> bool:
    if any(not held for held in parts):
        return False
    owned = [held for held in parts if held]
    return sum(map(len, owned)) == PARTITIONS and set().union(*owned) == set(range(PARTITIONS))


async def drained(settings: Settings, conf: ProcessorSettings) -> str:
    return await wait_drained(settings, conf, [settings.topics.inbox, conf.observations_topic()])


async def status_events(settings: Settings) -> list[dict[str, Any]]:
    records = await read_until(settings, settings.topics.status, lambda found: False, timeout_s=3)
    return events_of(records)


def logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- {worker.log_path.name}\n{worker.log_tail()}" for worker in workers)


async def test_two_workers_sharing_the_partitions_produce_what_one_worker_produces(
    base_settings: Settings, kafka_bootstrap: str, fresh_topics: Callable[..., TopicSettings], tmp_path: Path,
) -> None:
    one = await topics_for(base_settings, fresh_topics)
    two = await topics_for(base_settings, fresh_topics, inbox=one.topics.inbox)
    conf_one, conf_two = processor_settings(poll_schedule_s=NO_STALE_POLLS), processor_settings(
        poll_schedule_s=NO_STALE_POLLS)
    folders = {name: tmp_path / name for name in ("single", "shared-1", "shared-2")}
    for folder in folders.values():
        folder.mkdir()
    single = start_worker(one, conf_one, folders["single"], "single")
    pair = [start_worker(two, conf_two, folders[name], name) for name in ("shared-1", "shared-2")]
    workers = [single, *pair]
    try:
        shared_topics = [two.topics.inbox, conf_two.observations_topic()]
        not_shared = await wait_sharing(pair, shared_topics)
        assert not not_shared, f"the two workers never shared the partitions: {not_shared}\n{logs(pair)}"

        records, providers = build_input(seed=5)
        assert len(records) > 350
        await send_inbox(one, records)
        lags = await asyncio.gather(drained(one, conf_one), drained(two, conf_two))
        for worker in workers:
            assert_no_agent_crash(worker)
        assert not any(lags), f"{lags}\n{logs(workers)}"
        by_one, by_two = await asyncio.gather(status_events(one), status_events(two))
        still = {topic: [current_partitions(worker, topic) for worker in pair] for topic in shared_topics}
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0, 0], f"exit codes {codes}\n{logs(workers)}"
    assert all(shared(parts) for parts in still.values()), f"assignment after the run: {still}\n{logs(pair)}"

    assert not gaps_or_conflicts(by_one), gaps_or_conflicts(by_one)[:10]
    assert not gaps_or_conflicts(by_two), gaps_or_conflicts(by_two)[:10]
    assert finals(by_one) == {key: FINAL[provider] for key, provider in providers.items()}
    assert finals(by_two) == finals(by_one)
    only_one, only_two = rows(by_one) - rows(by_two), rows(by_two) - rows(by_one)
    assert not only_one and not only_two, (sorted(only_one)[:5], sorted(only_two)[:5])
