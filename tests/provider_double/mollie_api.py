"""The Mollie part of the provider double (API v2, HAL JSON), from the objects the test stored:

* ``GET /v2/payments/{id}`` — ``embed=refunds,chargebacks`` adds the stored refunds / chargebacks whose
  ``paymentId`` is the payment;
* ``GET /v2/orders/{id}`` — ``embed=payments,refunds`` adds the stored payments whose ``orderId`` is the order
  and the refunds of those payments;
* ``GET /v2/refunds``, ``/v2/chargebacks``, ``/v2/subscriptions`` — the lists of all of them, newest first
  (stored order), from the item ``from`` names on (none when ``from`` names no stored item), at most
  ``limit``; ``embed=payment`` adds each item's payment.

An embedded list that would be empty is left out.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

Objects = dict[tuple[str, str, str], dict[str, Any]]
NOT_FOUND = {"status": 404, "title": "Not Found", "detail": "No such resource"}
LISTS = {"refunds": "refund", "chargebacks": "chargeback", "subscriptions": "subscription"}


def _stored(objects: Objects, object_type: str) -> list[dict[str, Any]]:
    return [body for (provider, kind, _), body in objects.items() if provider == "mollie" and kind == object_type]


def _with_embedded(body: dict[str, Any], embedded: dict[str, Any]) -> dict[str, Any]:
    kept = {name: items for name, items in embedded.items() if items}
    if not kept:
        return body
    return {**body, "_embedded": {**body.get("_embedded", {}), **kept}}


def _embeds(request: web.Request) -> set[str]:
    return {name.strip() for name in request.query.get("embed", "").split(",") if name.strip()}


def routes(objects: Objects) -> list[web.RouteDef]:
    def belonging(object_type: str, field: str, owners: set[str]) -> list[dict[str, Any]]:
        return [item for item in _stored(objects, object_type) if item.get(field) in owners]

    async def payment(request: web.Request) -> web.Response:
        payment_id = request.match_info["id"]
        body = objects.get(("mollie", "payment", payment_id))
        if body is None:
            return web.json_response(NOT_FOUND, status=404)
        embeds = _embeds(request)
        return web.json_response(_with_embedded(body, {
            name: belonging(name[:-1], "paymentId", {payment_id}) for name in ("refunds", "chargebacks")
            if name in embeds}))

    async def order(request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        body = objects.get(("mollie", "order", order_id))
        if body is None:
            return web.json_response(NOT_FOUND, status=404)
        embeds = _embeds(request)
        payments = belonging("payment", "orderId", {order_id})
        embedded: dict[str, Any] = {}
        if "payments" in embeds:
            embedded["payments"] = payments
        if "refunds" in embeds:
            embedded["refunds"] = belonging("refund", "paymentId", {p["id"] for p in payments})
        return web.json_response(_with_embedded(body, embedded))

    def payment_of(item: dict[str, Any]) -> dict[str, Any] | None:
        return objects.get(("mollie", "payment", str(item.get("paymentId"))))

    def listing(name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            items = _stored(objects, LISTS[name])[::-1]  # newest first, as Mollie lists by default
            start = request.query.get("from")
            if start is not None:
                ids = [item.get("id") for item in items]
                items = items[ids.index(start):] if start in ids else []
            items = items[: int(request.query.get("limit", "50"))]
            if "payment" in _embeds(request):
                items = [_with_embedded(item, {"payment": payment_of(item)}) for item in items]
            return web.json_response({"count": len(items), "_embedded": {name: items},
                                      "_links": {"self": {"href": str(request.url), "type": "application/hal+json"},
                                                 "previous": None, "next": None}})
        return handler

    return [
        web.get("/mollie/v2/payments/{id}", payment),
        web.get("/mollie/v2/orders/{id}", order),
        *(web.get(f"/mollie/v2/{name}", listing(name)) for name in LISTS),
    ]
