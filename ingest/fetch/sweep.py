"""Stripe Events sweeps: read the Events list forward from a durable cursor and publish every event as a
fetch result (``object_kind="event"``), so an event whose webhook never arrived still reaches the
processors.

Two sweeps per Stripe account, each with its own cursor:

* ``events`` — every event;
* ``undelivered`` — ``delivery_success=false`` only, restricted to events at least
  ``undelivered_settle_s`` old (younger ones are normally still being delivered).

Paging: Stripe lists newest first; ``ending_before=<cursor>`` returns the page of events right after the
cursor (still newest first) and ``has_more`` says whether newer ones follow. Each page is published oldest
first, the results are acknowledged, and only then the cursor moves to the page's newest event: a crash
can re-publish at most one page (the processors dedupe on the event id), never skip one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.fetch.cursors import CursorStore
from ingest.fetch.lane import ProviderLane
from ingest.fetch.options import FetchOptions
from ingest.providers.stripe.client import StripeClient
from paystream.logs import get_logger
from paystream.metrics import SWEEP_CURSOR_AGE
from schemas.envelopes import FetchResult, to_rfc3339
from schemas.observation import payment_key

log = get_logger(__name__)

PublishMany = Callable[[list[FetchResult]], Awaitable[None]]


def event_object_ref(event: dict[str, Any]) -> tuple[str, str]:
    """The payment an event is about, as ``(object_type, object_id)``: PaymentIntents by their id; charges,
    refunds and disputes by the PaymentIntent they belong to, when they name one."""
    obj = event.get("data", {}).get("object", {}) or {}
    kind = str(obj.get("object", "unknown"))
    if kind == "payment_intent":
        return "payment_intent", str(obj.get("id"))
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    if isinstance(intent, str) and intent:
        return "payment_intent", intent
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
    ) -> None:
        if name not in ("events", "undelivered"):
            raise ValueError(f"unknown Stripe sweep {name!r}")
        self.name = name
        self.account = account
        self.key = f"stripe:{account}:{name}"
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

    async def _page(self, params: dict[str, str]) -> dict[str, Any] | None:
        called = await self._lane.call(lambda: self._client.list_events(params))
        if called.outcome != "ok" or called.reply is None:
            log.warning("sweep_page_failed", sweep=self.key, outcome=called.outcome)
            return None
        page: dict[str, Any] = orjson.loads(called.reply.body)
        return page

    async def run_once(self) -> int:
        """One sweep round; returns the number of events published."""
        state = self._cursors.get(self.key)
        if state is None or not state.get("cursor"):
            return await self._first_round()
        cursor = str(state["cursor"])
        published = 0
        for _ in range(self._options.sweep_max_pages):
            page = await self._page({**self._filters(), "ending_before": cursor})
            if page is None or not page.get("data"):
                break
            events = list(reversed(page["data"]))  # oldest first
            await self._emit(events)
            cursor = str(events[-1]["id"])
            await self._save(cursor, events[-1])
            published += len(events)
            if not page.get("has_more"):
                break
        return published

    async def _first_round(self) -> int:
        """No cursor yet: collect the last ``sweep_lookback_s`` of events (paging backwards), then publish
        them oldest first."""
        since = int(time.time() - self._options.sweep_lookback_s)
        newest_first: list[dict[str, Any]] = []
        params = {**self._filters(), "created[gte]": str(since)}
        for _ in range(self._options.sweep_max_pages):
            page = await self._page(params)
            if page is None:
                return 0  # try again next round; nothing was published
            newest_first.extend(page.get("data", []))
            if not page.get("has_more") or not page.get("data"):
                break
            params = {**params, "starting_after": str(page["data"][-1]["id"])}
        if not newest_first:
            return 0
        events = list(reversed(newest_first))
        await self._emit(events)
        await self._save(str(events[-1]["id"]), events[-1])
        return len(events)

    async def _emit(self, events: list[dict[str, Any]]) -> None:
        fetched_at = to_rfc3339(datetime.now(UTC))
        results = []
        for event in events:
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
        await self._publish(results)

    async def _save(self, cursor: str, newest: dict[str, Any]) -> None:
        created = int(newest.get("created", 0))
        await self._cursors.put(
            self.key, {"cursor": cursor, "created": created, "updated_at": to_rfc3339(datetime.now(UTC))}
        )
        if created:
            SWEEP_CURSOR_AGE.labels("stripe", self.name).set(max(0.0, time.time() - created))
