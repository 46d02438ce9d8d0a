"""Two workers sharing the partitions produce the same output as one (real broker, 4 partitions).

The same inbox is read by two consumer groups: app A with one worker, app B with two workers started
together; each app writes its own status topic. The input (100 payments, 300 deliveries plus duplicates,
some payments out of order) is produced once both B workers hold partitions of the inbox and of the internal
topic reconcile reads, as the group's description shows (each worker has its own Kafka client id), and they
must still hold them when the input is drained.

What makes "the same output" exact rather than "the same final state": the sequence of events of a
payment depends on the order its observations are reconciled in. Inbox records are keyed by delivery
id, so this test picks delivery ids that put all of a payment's deliveries in one inbox partition; each
payment's observations then reach reconcile in the order they were produced, whichever worker
normalizes them.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from processor_harness import (
    Worker,
    drop_topics,
    envelope,
    events_of,
    group_assignment,
    inbox_partition,
    processor_settings,
    read_all,
    send_inbox,
    start_worker,
    wait_drained,
)
from processor_harness import delivery_id_in as harness_delivery_id_in

from paystream.config import Settings, TopicSettings
from paystream.kafka import ensure_topics
from processors.settings import ProcessorSettings
from schemas.envelopes import InboxEnvelope

DEMO_FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "local"
if str(DEMO_FOLDER) not in sys.path:
    sys.path.append(str(DEMO_FOLDER))  # the demo's payload builders (not the whole e2e pipeline's imports)

import demo_traffic as demo  # noqa: E402

pytestmark = pytest.mark.kafka
NO_STALE_POLLS = [3600]  # stale polls start after an hour: the events under test are the pushes'

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


async def held(settings: Settings, conf: ProcessorSettings, clients: list[str], topics: list[str]
               ) -> dict[str, list[set[int]]]:
    """Per topic: the partitions each worker (by client id prefix) holds in the group now."""
    members = await asyncio.to_thread(group_assignment, settings, conf.app_id)

    def of(client: str, topic: str) -> set[int]:
        return set().union(*(parts.get(topic, set()) for member, parts in members.items()
                             if member.startswith(client)))

    return {topic: [of(client, topic) for client in clients] for topic in topics}


def shared(parts: list[set[int]]) -> bool:
    """Every worker holds some partitions, no partition twice, and all of them are held."""
    return all(parts) and sum(map(len, parts)) == PARTITIONS and set().union(*parts) == set(range(PARTITIONS))


async def wait_sharing(settings: Settings, conf: ProcessorSettings, workers: list[Worker], clients: list[str],
                       topics: list[str], *, timeout_s: float = 90.0) -> str:
    """Until the workers share the partitions of every topic. Returns "" then, else what the group showed."""
    deadline = time.monotonic() + timeout_s
    seen = "no assignment"
    while time.monotonic() < deadline:
        assignment = await held(settings, conf, clients, topics)
        seen = repr(assignment)
        if all(shared(parts) for parts in assignment.values()):
            return ""
        if any(worker.process.poll() is not None for worker in workers):
            break
        await asyncio.sleep(0.5)
    return seen


async def drained(settings: Settings, conf: ProcessorSettings) -> str:
    return await wait_drained(settings, conf, [settings.topics.inbox, conf.inputs_topic()])


async def status_events(settings: Settings) -> list[dict[str, Any]]:
    return events_of(await read_all(settings, settings.topics.status))


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
    clients = ["paystream-shared-1", "paystream-shared-2"]
    pair = [start_worker(two, conf_two, folders[name], name, client_id=client)
            for name, client in zip(("shared-1", "shared-2"), clients, strict=True)]
    workers = [single, *pair]
    try:
        shared_topics = [two.topics.inbox, conf_two.inputs_topic()]
        not_shared = await wait_sharing(two, conf_two, pair, clients, shared_topics)
        assert not not_shared, f"the two workers never shared the partitions: {not_shared}\n{logs(pair)}"

        records, providers = build_input(seed=5)
        assert len(records) > 350
        # Every partition gets input: a worker holding partitions has work, both workers take part.
        assert {inbox_partition(r.provider, r.account, r.delivery_id, PARTITIONS) for r in records} == set(
            range(PARTITIONS))
        await send_inbox(one, records)
        lags = await asyncio.gather(drained(one, conf_one), drained(two, conf_two))
        assert not any(lags), f"{lags}\n{logs(workers)}"
        by_one, by_two = await asyncio.gather(status_events(one), status_events(two))
        still = await held(two, conf_two, clients, shared_topics)
    finally:
        codes = [worker.stop() for worker in workers]
        await drop_topics(one, conf_one.app_id)
        await drop_topics(two, conf_two.app_id)
    assert codes == [0, 0, 0], f"exit codes {codes}\n{logs(workers)}"
    assert all(shared(parts) for parts in still.values()), f"assignment after the run: {still}\n{logs(pair)}"

    # Exactly once (read_committed): no event twice, in either app.
    assert len(by_one) == len(rows(by_one)) and len(by_two) == len(rows(by_two)), (len(by_one), len(by_two))
    assert not gaps_or_conflicts(by_one), gaps_or_conflicts(by_one)[:10]
    assert not gaps_or_conflicts(by_two), gaps_or_conflicts(by_two)[:10]
    assert finals(by_one) == {key: FINAL[provider] for key, provider in providers.items()}
    assert finals(by_two) == finals(by_one)
    only_one, only_two = rows(by_one) - rows(by_two), rows(by_two) - rows(by_one)
    assert not only_one and not only_two, (sorted(only_one)[:5], sorted(only_two)[:5])
