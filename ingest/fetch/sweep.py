"""Stripe Events sweeps: read the Events list forward from durable cursors and publish every event of a type the
catalog maps as a fetch result (``object_kind="event"``), so an event whose webhook never arrived still
reaches the processors.

Two sweeps per Stripe account:

* ``events`` — every event of a mapped type;
* ``undelivered`` — ``delivery_success=false`` only, restricted to events at least
  ``undelivered_settle_s`` old (younger ones are normally still being delivered).

Only mapped types are asked for: an event type the catalog ignores would only be counted and dropped again
(ingest/providers/stripe/catalog.json). Stripe's ``types[]`` takes at most 20 types per request, so each sweep
reads the mapped types in chunks of 20, and each chunk keeps its own cursor under a key derived from the
chunk's types (``stripe:{account}:{sweep}:types-{digest}``): a catalog change that changes a chunk starts that
chunk afresh (from the sweep's cursor of before the chunks, when one is stored, else ``sweep_lookback_s``
back), and never resumes from a position that meant other types. An event whose type is not in the chunk
(a server that ignored the filter) moves the cursor on but is not published, so no event goes out once per
chunk.

Paging: Stripe lists newest first; ``ending_before=<cursor>`` returns the page of events right after the
cursor (still newest first) and ``has_more`` says whether newer ones follow. Each page is published oldest
first, the results are acknowledged, and only then the cursor moves to the page's newest event: a crash
can re-publish at most one page (the processors dedupe on the event id), never skip one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.fetch.cursors import CursorStore
from ingest.fetch.lane import ProviderLane
from ingest.fetch.options import FetchOptions
from ingest.providers.catalog import load_catalog
from ingest.providers.stripe.client import MAX_EVENT_TYPES, StripeClient
from ingest.providers.stripe.fields import id_of
from paystream.logs import get_logger
from paystream.metrics import SWEEP_CURSOR_AGE
from schemas.envelopes import FetchResult, to_rfc3339
from schemas.observation import payment_key

log = get_logger(__name__)

PublishMany = Callable[[list[FetchResult]], Awaitable[None]]


def mapped_event_types() -> list[str]:
    """The event types the Stripe catalog maps (every outcome but ``ignore``), sorted."""
    catalog = load_catalog("stripe")
    return sorted(set(catalog.names()) - set(catalog.names("ignore")))


@dataclass(frozen=True, slots=True)
class TypeChunk:
    """At most ``MAX_EVENT_TYPES`` event types read together, with the cursor key that belongs to exactly them."""

    types: tuple[str, ...]
    key: str


def type_chunks(sweep_key: str, types: Sequence[str], size: int = MAX_EVENT_TYPES) -> list[TypeChunk]:
    """``types`` (sorted, without duplicates) in chunks of ``size``, each keyed by a digest of its types: the
    key stays the same as long as the chunk holds the same types."""
    if not types:
        raise ValueError("a Stripe sweep needs at least one event type")
    ordered = sorted(set(types))
    chunks = []
    for start in range(0, len(ordered), size):
        names = tuple(ordered[start:start + size])
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        chunks.append(TypeChunk(names, f"{sweep_key}:types-{digest}"))
    return chunks


def event_object_ref(event: dict[str, Any]) -> tuple[str, str]:
    """The payment (or agreement) an event is about, as ``(object_type, object_id)``, as the parser keys it:
    PaymentIntents by their id; charges, refunds, disputes, risk signals and Checkout Sessions by the
    PaymentIntent they belong to, else by their charge; a SetupIntent by its payment method (the one that
    failed, for ``setup_intent.setup_failed``)."""
    obj = event.get("data", {}).get("object", {}) or {}
    kind = str(obj.get("object", "unknown"))
    if kind == "payment_intent":
        return "payment_intent", str(obj.get("id"))
    intent = id_of(obj.get("payment_intent"))
    if intent:
        return "payment_intent", intent
    charge = id_of(obj.get("charge"))
    if kind != "charge" and charge:
        return "charge", charge
    method = id_of(obj.get("payment_method"))
    error = obj.get("last_setup_error")
    if event.get("type") == "setup_intent.setup_failed" and isinstance(error, dict):
        method = id_of(error.get("payment_method")) or method  # the method that failed (agreements.py)
    if kind == "setup_intent" and method:
        return "payment_method", method
    return kind, str(obj.get("id", event.get("id")))


class StripeEventSweep:
    def __init__(
        self,
        name: str,
        account: str,
        client: StripeClient,
        lane: ProviderLane,
        cursors: CursorStore,
        publish: PublishMany,
        options: FetchOptions,
        types: Sequence[str] | None = None,
    ) -> None:
        if name not in ("events", "undelivered"):
            raise ValueError(f"unknown Stripe sweep {name!r}")
        self.name = name
        self.account = account
        self.key = f"stripe:{account}:{name}"  # the sweep's name in logs (and its cursor before the chunks)
        self.chunks = type_chunks(self.key, mapped_event_types() if types is None else types)
        self._client = client
        self._lane = lane
        self._cursors = cursors
        self._publish = publish
        self._options = options

    def _filters(self) -> dict[str, str]:
        params = {"limit": str(self._options.sweep_page_limit)}
        if self.name == "undelivered":
            params["delivery_success"] = "false"
            params["created[lte]"] = str(int(time.time() - self._options.undelivered_settle_s))
        return params

    async def _page(self, params: dict[str, str], chunk: TypeChunk) -> dict[str, Any] | None:
        called = await self._lane.call(lambda: self._client.list_events(params, chunk.types))
        if called.outcome != "ok" or called.reply is None:
            log.warning("sweep_page_failed", sweep=chunk.key, outcome=called.outcome)
            return None
        page: dict[str, Any] = orjson.loads(called.reply.body)
        return page

    async def run_once(self) -> int:
        """One sweep round over every chunk; returns the number of events published."""
        published = 0
        for chunk in self.chunks:
            published += await self._run_chunk(chunk)
        self._report_age()
        return published

    async def _run_chunk(self, chunk: TypeChunk) -> int:
        state = self._cursors.get(chunk.key)
        if state is None or not state.get("cursor"):
            return await self._first_round(chunk)
        cursor = str(state["cursor"])
        published = 0
        for _ in range(self._options.sweep_max_pages):
            page = await self._page({**self._filters(), "ending_before": cursor}, chunk)
            if page is None or not page.get("data"):
                break
            events = list(reversed(page["data"]))  # oldest first
            published += await self._emit(events, chunk)
            cursor = str(events[-1]["id"])
            await self._save(chunk, cursor, events[-1])
            if not page.get("has_more"):
                break
        return published

    def _since(self) -> int:
        """Where a chunk without a cursor starts: where the sweep stood before it read in chunks (its cursor
        then covered every type), else ``sweep_lookback_s`` ago."""
        before = self._cursors.get(self.key)
        if before is not None and isinstance(before.get("created"), int) and before["created"] > 0:
            return int(before["created"])
        return int(time.time() - self._options.sweep_lookback_s)

    async def _first_round(self, chunk: TypeChunk) -> int:
        """No cursor yet: collect the chunk's events since :meth:`_since` (paging backwards), then publish them
        oldest first."""
        newest_first: list[dict[str, Any]] = []
        params = {**self._filters(), "created[gte]": str(self._since())}
        for _ in range(self._options.sweep_max_pages):
            page = await self._page(params, chunk)
            if page is None:
                return 0  # try again next round; nothing was published
            newest_first.extend(page.get("data", []))
            if not page.get("has_more") or not page.get("data"):
                break
            params = {**params, "starting_after": str(page["data"][-1]["id"])}
        if not newest_first:
            return 0
        events = list(reversed(newest_first))
        published = await self._emit(events, chunk)
        await self._save(chunk, str(events[-1]["id"]), events[-1])
        return published

    async def _emit(self, events: list[dict[str, Any]], chunk: TypeChunk) -> int:
        fetched_at = to_rfc3339(datetime.now(UTC))
        results = []
        for event in events:
            if event.get("type") not in chunk.types:
                continue  # the server did not filter: another chunk (or nobody) publishes it
            object_type, object_id = event_object_ref(event)
            event_id = str(event["id"])
            results.append(
                FetchResult(
                    payment_key=payment_key("stripe", self.account, object_type, object_id),
                    provider="stripe",
                    account=self.account,
                    object_type=object_type,
                    object_id=object_id,
                    fetch_id=event_id,
                    request_id=f"sweep:{self.key}",
                    reason="sweep",
                    fetched_at=fetched_at,
                    outcome="ok",
                    http_status=200,
                    body=orjson.dumps(event),
                    object_kind="event",
                )
            )
        if results:
            await self._publish(results)
        return len(results)

    async def _save(self, chunk: TypeChunk, cursor: str, newest: dict[str, Any]) -> None:
        created = int(newest.get("created", 0))
        await self._cursors.put(
            chunk.key, {"cursor": cursor, "created": created, "updated_at": to_rfc3339(datetime.now(UTC))}
        )

    def _report_age(self) -> None:
        """The age of the newest event any chunk has read: a chunk of rare types (disputes, fraud warnings)
        may rightly sit on an old cursor, so the sweep is as far behind as its most recent chunk."""
        newest = [int(state["created"]) for chunk in self.chunks
                  if (state := self._cursors.get(chunk.key)) is not None and state.get("created")]
        if newest:
            SWEEP_CURSOR_AGE.labels("stripe", self.name).set(max(0.0, time.time() - max(newest)))
