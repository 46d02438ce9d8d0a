"""A hint flood through the real broker and the real fetcher (issue 18 #4): no hint lost, each object fetched
once, the account's rate kept, bounded memory, and the other accounts' fetches not held up.

The processors no longer rate-limit hints where they read them: every hint reaches the fetch requests topic,
and the fetcher coalesces them per object, holds at most ``hints_per_account`` hint fetches per account and
leaves the rest waiting in the topic (ingest/fetch/hints.py).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from fetch_helpers import ResultReader, eventually, fetch_request
from provider_double.server import ProviderDouble, max_in_window
from test_fetch_delayed_kafka import RunningFetcher
from test_fetch_service_kafka import committed_offsets, publish

from paystream.config import AccountConfig, Settings
from paystream.metrics import registry
from schemas.envelopes import FetchRequest, FetchResult, to_rfc3339

pytestmark = pytest.mark.kafka

RATE, BURST, IN_FLIGHT = 10.0, 5, 4
BOUND = 20  # hints_per_account
KNOWN, MADE_UP = 40, 110  # distinct objects the flood names: real ones, and ids nobody ever created
REPEATS = 2  # hints per object


def hint(account: str, object_id: str, n: int, requested_at: str) -> FetchRequest:
    request = fetch_request("mollie", account, "payment", object_id, reason="hint", request_id=f"dlv_{n}:fetch")
    return replace(request, requested_at=requested_at, evidence_id=f"dlv_{n}")


def hints_counted(outcome: str) -> float:
    return registry.get_sample_value("paystream_fetch_hints_total", {"provider": "mollie", "outcome": outcome}) or 0.0


async def test_a_hint_flood_is_fetched_once_per_object_within_the_rate_and_memory_bound(
    double: ProviderDouble, kafka_settings: Settings,
    provider_accounts: Callable[..., dict[str, dict[str, AccountConfig]]],
) -> None:
    accounts = provider_accounts()
    limited = accounts["mollie"]["main"].model_copy(update={"fetch_rate_per_s": RATE, "fetch_burst": BURST})
    accounts["mollie"] = {"main": limited, "other": accounts["mollie"]["main"]}
    settings = kafka_settings.model_copy(update={"accounts": accounts})

    tag = uuid.uuid4().hex[:6]
    known = [f"tr_{tag}_k{n}" for n in range(KNOWN)]
    made_up = [f"tr_{tag}_x{n}" for n in range(MADE_UP)]
    for object_id in known:
        double.set_object("mollie", "payment", object_id, {"id": object_id, "status": "paid"})
    stamp = to_rfc3339(datetime.now(UTC))  # every hint of the flood was requested before any fetch
    flood = [hint("main", object_id, n, stamp) for n, object_id in enumerate((known + made_up) * REPEATS)]
    random.Random(7).shuffle(flood)
    deferred_before, coalesced_before = hints_counted("deferred"), hints_counted("coalesced")

    fetcher = RunningFetcher(settings, f"fetch-hints-{uuid.uuid4().hex[:8]}", hints_per_account=BOUND,
                             in_flight_per_provider=IN_FLIGHT)
    peaks = Counter[str]()

    async def watch() -> None:  # the fetcher's memory: hint fetches held for the account, everything held
        while True:
            engine = fetcher.fetcher.engine
            if engine is not None:
                peaks["hints"] = max(peaks["hints"], engine.hints_held("mollie", "main"))
                peaks["backlog"] = max(peaks["backlog"], int(gauge("paystream_fetch_hint_backlog_offsets") or 0))
                peaks["pending"] = max(peaks["pending"], engine.pending)
            await asyncio.sleep(0.005)

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name, {"provider": "mollie", "account": "main"})

    watching = asyncio.create_task(watch())
    try:
        await fetcher.consuming(settings.topics.partitions)
        async with ResultReader(settings) as reader:
            await publish(settings, *flood)
            # The flood is being worked off at the account's rate (15 s and more): other accounts' fetches now.
            await eventually(lambda: double.count("mollie") >= 2 * BOUND, within_s=60)
            others = [fetch_request("stripe", "main", "payment_intent", f"pi_{tag}_{n}", request_id=f"evt_{n}:fetch")
                      for n in range(5)]
            others += [hint("other", f"tr_{tag}_o{n}", 10_000 + n, to_rfc3339(datetime.now(UTC))) for n in range(5)]
            for request in others:
                double.set_object(request.provider, request.object_type, request.object_id, {"id": request.object_id})
            published_at = time.monotonic()
            await publish(settings, *others)
            other_ids = {r.object_id for r in others}
            await eventually(lambda: other_ids <= {r.object_id for r in reader.results}, within_s=30)
            others_done_s = time.monotonic() - published_at
            flood_left = len(set(known + made_up) - {r.object_id for r in reader.results})

            await eventually(lambda: {r.object_id for r in reader.results} >= set(known + made_up), within_s=120)
            await eventually(lambda: not fetcher.fetcher.hints or not fetcher.fetcher.hints.backlogs(), within_s=30)
            await eventually(lambda: gauge("paystream_fetch_hints_held") == 0
                             and gauge("paystream_fetch_hint_backlog_offsets") == 0, within_s=5)
            await asyncio.sleep(1.0)  # room for a wrong second fetch
            for _ in range(100):
                if await committed_offsets(settings, fetcher.fetcher.options.group_id) == len(flood) + len(others):
                    break
                await asyncio.sleep(0.2)
    finally:
        watching.cancel()
        await fetcher.shutdown()

    print(f"\nflood of {len(flood)} hints ({KNOWN + MADE_UP} objects) at {RATE}/s: peak hint fetches held "
          f"{peaks['hints']} (bound {BOUND}), peak requests held {peaks['pending']}, peak backlog "
          f"{peaks['backlog']} offsets; the other accounts' "
          f"{len(others)} fetches done {others_done_s:.2f} s after publishing, while {flood_left} flood objects "
          f"were still waiting")
    main_results: list[FetchResult] = [r for r in reader.results if r.account == "main" and r.provider == "mollie"]
    # None lost, each object fetched once (every repeat, and every hint read again later, coalesced).
    assert Counter(r.object_id for r in main_results) == Counter({i: 1 for i in known + made_up})
    assert {r.outcome for r in main_results if r.object_id in known} == {"ok"}
    assert {r.outcome for r in main_results if r.object_id in made_up} == {"not_found"}
    calls = Counter(record.path.rsplit("/", 1)[-1] for record in double.requests if record.provider == "mollie")
    assert all(calls[i] == 1 for i in known + made_up), calls
    # The account's rate held (calls timed on arrival: in-flight calls may bunch up by their number).
    flood_ids = set(known + made_up)
    arrivals = [r.at for r in double.requests if r.path.rsplit("/", 1)[-1] in flood_ids]
    assert max_in_window(arrivals, 1.0) <= RATE + BURST + IN_FLIGHT
    # Bounded memory: the flood went through the topic, not the fetcher's memory.
    assert peaks["hints"] <= BOUND
    assert peaks["pending"] <= BOUND + len(others)
    assert hints_counted("deferred") - deferred_before > 0 and peaks["backlog"] > 0  # hints waited in the topic
    assert hints_counted("coalesced") - coalesced_before >= len(flood) - (KNOWN + MADE_UP)
    # The other accounts were not held up by the flood (it still had seconds of work left).
    assert flood_left > RATE * 2
    assert others_done_s < 3.0, others_done_s
    # Everything was committed: no hint is left behind the commit.
    assert await committed_offsets(settings, fetcher.fetcher.options.group_id) == len(flood) + len(others)
