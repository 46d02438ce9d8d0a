"""The Stripe part of the provider double: ``GET /v1/payment_intents/{id}`` and ``GET /v1/events``.

The Events list follows Stripe's paging (newest first; ``limit``, ``starting_after``, ``ending_before``) and
filters (``delivery_success``, ``created[gte|lte]``, ``types[]``: at most 20 types, as Stripe allows).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

MAX_TYPES = 20  # Stripe: "types: an array of up to 20 strings containing specific event names"
MISSING = {"error": {"type": "invalid_request_error", "code": "resource_missing"}}


def _invalid(message: str, param: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "message": message, "param": param}},
                             status=400)


def _wanted(event: dict[str, Any], query: Any, types: set[str]) -> bool:
    if query.get("delivery_success") == "false" and event["_delivered"]:
        return False
    if query.get("delivery_success") == "true" and not event["_delivered"]:
        return False
    if types and event["type"] not in types:
        return False
    if "created[gte]" in query and event["created"] < int(query["created[gte]"]):
        return False
    return not ("created[lte]" in query and event["created"] > int(query["created[lte]"]))


def routes(objects: dict[tuple[str, str, str], dict[str, Any]], events: list[dict[str, Any]]) -> list[web.RouteDef]:
    """``events``: oldest first, each with ``_delivered`` (whether its webhook reached us)."""

    async def intent(request: web.Request) -> web.Response:
        body = objects.get(("stripe", "payment_intent", request.match_info["id"]))
        return web.json_response(MISSING, status=404) if body is None else web.json_response(body)

    async def list_events(request: web.Request) -> web.Response:
        q = request.query
        types = q.getall("types[]", [])
        if len(types) > MAX_TYPES:
            return _invalid(f"types: at most {MAX_TYPES} event types, got {len(types)}", "types")
        limit = int(q.get("limit", "10"))
        position = {e["id"]: i for i, e in enumerate(events)}
        listed = [(i, e) for i, e in enumerate(events) if _wanted(e, q, set(types))]
        if "ending_before" in q:
            cursor = position.get(q["ending_before"])
            if cursor is None:
                return web.json_response(MISSING, status=400)
            newer = [e for i, e in listed if i > cursor][::-1]  # newest first
            page, has_more = newer[-limit:], len(newer) > limit
        elif "starting_after" in q:
            cursor = position.get(q["starting_after"])
            if cursor is None:
                return web.json_response(MISSING, status=400)
            older = [e for i, e in listed if i < cursor][::-1]
            page, has_more = older[:limit], len(older) > limit
        else:
            everything = [e for _, e in listed][::-1]
            page, has_more = everything[:limit], len(everything) > limit
        data = [{k: v for k, v in e.items() if k != "_delivered"} for e in page]
        return web.json_response({"object": "list", "url": "/v1/events", "has_more": has_more, "data": data})

    return [web.get("/stripe/v1/payment_intents/{id}", intent), web.get("/stripe/v1/events", list_events)]
