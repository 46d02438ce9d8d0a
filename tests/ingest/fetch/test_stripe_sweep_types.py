"""The Stripe Events sweep asks only for the event types the catalog maps, 20 types per request at most (Stripe's
``types[]`` limit), each chunk of types with its own cursor. Unit level: a fake Events list (filtering like
Stripe), fake cursors and an inline lane; the client's query encoding against a real local HTTP server."""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from ingest.fetch.http import ProviderReply
from ingest.fetch.lane import CallOutcome
from ingest.fetch.options import FetchOptions
from ingest.fetch.sweep import StripeEventSweep, event_object_ref, mapped_event_types, type_chunks
from ingest.providers.catalog import load_catalog
from ingest.providers.stripe import parse as stripe
from ingest.providers.stripe.client import MAX_EVENT_TYPES, StripeClient
from schemas.envelopes import FetchResult
from schemas.status import Source

CATALOG = load_catalog("stripe")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"


class FakeEvents:
    """Stripe's Events list over an in-memory log (oldest first), with Stripe's filters and cursors."""

    def __init__(self, *, filters_types: bool = True) -> None:
        self.log: list[dict[str, Any]] = []
        self.calls: list[tuple[dict[str, str], tuple[str, ...]]] = []
        self.filters_types = filters_types
        self._ids = itertools.count(1)

    def add(self, event_type: str, created: int | None = None) -> str:
        event_id = f"evt_{next(self._ids):05d}"
        self.log.append({"id": event_id, "object": "event", "type": event_type,
                         "created": int(time.time()) if created is None else created,
                         "data": {"object": {"id": f"pi_{event_id}", "object": "payment_intent"}}})
        return event_id

    async def list_events(self, params: dict[str, str], types: Sequence[str] = ()) -> ProviderReply:
        self.calls.append((dict(params), tuple(types)))
        assert len(types) <= MAX_EVENT_TYPES
        listed = [(i, e) for i, e in enumerate(self.log)
                  if (not types or not self.filters_types or e["type"] in types)
                  and ("created[gte]" not in params or e["created"] >= int(params["created[gte]"]))]
        position = {e["id"]: i for i, e in enumerate(self.log)}
        limit = int(params["limit"])
        if "ending_before" in params:
            newer = [e for i, e in listed if i > position[params["ending_before"]]][::-1]
            page, more = newer[-limit:], len(newer) > limit
        elif "starting_after" in params:
            older = [e for i, e in listed if i < position[params["starting_after"]]][::-1]
            page, more = older[:limit], len(older) > limit
        else:
            everything = [e for _, e in listed][::-1]
            page, more = everything[:limit], len(everything) > limit
        return ProviderReply(200, orjson.dumps({"object": "list", "has_more": more, "data": page}))


class InlineLane:
    """The lane's contract without its rate limits: call once, report the reply."""

    async def call(self, send: Callable[[], Awaitable[ProviderReply]]) -> CallOutcome:
        return CallOutcome("ok", await send())


class MemoryCursors:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.values.get(key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self.values[key] = value


class Published:
    def __init__(self) -> None:
        self.results: list[FetchResult] = []

    async def __call__(self, results: list[FetchResult]) -> None:
        self.results.extend(results)

    def ids(self) -> list[str]:
        return [r.fetch_id for r in self.results]


def sweep(events: FakeEvents, cursors: MemoryCursors, published: Published, name: str = "events",
          **options: Any) -> StripeEventSweep:
    settings = FetchOptions(**{"sweep_page_limit": 3, "sweep_lookback_s": 3600.0, **options})
    return StripeEventSweep(name, "main", events, InlineLane(), cursors, published, settings)  # type: ignore[arg-type]


def test_the_sweep_asks_for_exactly_the_mapped_types_in_chunks_of_twenty() -> None:
    chunks = sweep(FakeEvents(), MemoryCursors(), Published()).chunks
    mapped = set(CATALOG.names()) - set(CATALOG.names("ignore"))
    asked = [name for chunk in chunks for name in chunk.types]
    assert sorted(asked) == sorted(mapped) == mapped_event_types()  # each once, no ignored type
    assert all(0 < len(chunk.types) <= MAX_EVENT_TYPES for chunk in chunks)
    assert len(chunks) == -(-len(mapped) // MAX_EVENT_TYPES)
    assert len({chunk.key for chunk in chunks}) == len(chunks)
    assert all(chunk.key.startswith("stripe:main:events:types-") for chunk in chunks)


def test_a_chunk_key_depends_only_on_the_chunk_s_types() -> None:
    names = [f"type.{n:02d}" for n in range(45)]
    first = type_chunks("stripe:main:events", names)
    assert [len(c.types) for c in first] == [20, 20, 5]
    assert type_chunks("stripe:main:events", list(reversed(names)) + names[:3]) == first  # order, duplicates
    changed = type_chunks("stripe:main:events", [*names, "type.99"])  # the last chunk gains a type
    assert [c.key for c in changed[:2]] == [c.key for c in first[:2]] and changed[2].key != first[2].key
    assert type_chunks("stripe:main:undelivered", names)[0].key != first[0].key
    with pytest.raises(ValueError, match="at least one"):
        type_chunks("stripe:main:events", [])


async def test_each_chunk_publishes_its_types_once_and_resumes_from_its_own_cursor() -> None:
    events, cursors, published = FakeEvents(), MemoryCursors(), Published()
    under_test = sweep(events, cursors, published)
    first_chunk, second_chunk = under_test.chunks[0].types, under_test.chunks[1].types
    now = int(time.time())
    wanted = [events.add(first_chunk[0], now - 50), events.add("customer.created", now - 49),
              events.add(second_chunk[0], now - 48), events.add(first_chunk[1], now - 47),
              events.add("invoice.paid", now - 46), events.add(second_chunk[-1], now - 45)]
    assert await under_test.run_once() == 4
    assert sorted(published.ids()) == sorted(wanted[i] for i in (0, 2, 3, 5))  # no ignored type, none twice
    assert {types for _, types in events.calls} == {chunk.types for chunk in under_test.chunks}
    assert set(cursors.values) == {chunk.key for chunk in under_test.chunks}
    assert cursors.values[under_test.chunks[0].key]["cursor"] == wanted[3]  # each chunk's own newest event
    assert cursors.values[under_test.chunks[1].key]["cursor"] == wanted[5]

    later = [events.add(second_chunk[1], now - 10), events.add(first_chunk[2], now - 9)]
    events.calls.clear()
    assert await under_test.run_once() == 2
    assert sorted(published.ids()[4:]) == sorted(later)
    assert {params.get("ending_before") for params, _ in events.calls} == {wanted[3], wanted[5]}


async def test_a_server_that_ignores_the_filter_still_gives_each_event_once() -> None:
    events, cursors, published = FakeEvents(filters_types=False), MemoryCursors(), Published()
    under_test = sweep(events, cursors, published)
    now = int(time.time())
    mapped = [events.add(name, now - 30 + n) for n, name in enumerate(mapped_event_types()[::7])]
    events.add("customer.updated", now - 1)
    assert await under_test.run_once() == len(mapped)
    assert sorted(published.ids()) == sorted(mapped)
    assert await under_test.run_once() == 0  # every chunk's cursor moved past everything it saw


async def test_a_chunk_without_a_cursor_starts_where_the_sweep_stood_before_it_read_in_chunks() -> None:
    events, cursors, published = FakeEvents(), MemoryCursors(), Published()
    now = int(time.time())
    cursors.values["stripe:main:events"] = {"cursor": "evt_old", "created": now - 7200}  # older than the lookback
    under_test = sweep(events, cursors, published)
    missed = events.add(under_test.chunks[0].types[0], now - 5000)
    assert await under_test.run_once() == 1
    assert published.ids() == [missed]
    assert {params["created[gte]"] for params, _ in events.calls} == {str(now - 7200)}


async def test_without_any_cursor_a_chunk_looks_back_the_configured_window() -> None:
    events, cursors, published = FakeEvents(), MemoryCursors(), Published()
    under_test = sweep(events, cursors, published, name="undelivered", undelivered_settle_s=0.0)
    now = int(time.time())
    events.add(under_test.chunks[-1].types[0], now - 7200)  # before the lookback window
    recent = events.add(under_test.chunks[-1].types[0], now - 60)
    assert await under_test.run_once() == 1
    assert published.ids() == [recent]
    assert all(params["delivery_success"] == "false" for params, _ in events.calls)


def test_a_swept_event_is_filed_under_the_key_its_observations_have() -> None:
    """The fetch result of a swept event carries the payment key the parser files the event under (the
    events built from Stripe's example objects, as in tests/ingest/providers/test_stripe_catalog.py)."""
    resources = json.loads((FIXTURES / "stripe_fixtures3.json").read_text())["resources"]
    objects = json.loads((FIXTURES / "stripe_event_objects.json").read_text())["types"]
    for event_type in mapped_event_types():
        obj = {**copy.deepcopy(resources[objects[event_type]["resource"]]), **objects[event_type].get("set", {})}
        event = {"id": "evt_1", "object": "event", "type": event_type, "created": 1714560000, "data": {"object": obj}}
        observations = stripe.parse(orjson.dumps(event), account="main", source=Source.POLL, evidence_id="evt_1",
                                    observed_at=datetime.now(UTC), object_kind="event")
        assert {(obs.object_type, obs.object_id) for obs in observations} == {event_object_ref(event)}, event_type


@pytest.fixture
async def recording_server() -> AsyncIterator[tuple[str, list[list[tuple[str, str]]]]]:
    seen: list[list[tuple[str, str]]] = []

    async def events(request: web.Request) -> web.Response:
        seen.append(list(request.query.items()))
        return web.json_response({"object": "list", "has_more": False, "data": []})

    app = web.Application()
    app.router.add_get("/v1/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_the_client_sends_each_type_as_a_repeated_types_parameter(
    recording_server: tuple[str, list[list[tuple[str, str]]]],
) -> None:
    url, seen = recording_server
    client = StripeClient(aiohttp.ClientSession(), SecretStr("sk_test_x"), base_url=url)
    try:
        reply = await client.list_events({"limit": "100", "created[gte]": "10"}, ("charge.refunded", "refund.failed"))
        assert reply.status == 200
        assert seen == [[("limit", "100"), ("created[gte]", "10"), ("types[]", "charge.refunded"),
                         ("types[]", "refund.failed")]]
        with pytest.raises(ValueError, match="at most 20"):
            await client.list_events({}, tuple(f"t.{n}" for n in range(21)))
    finally:
        await client.close()
