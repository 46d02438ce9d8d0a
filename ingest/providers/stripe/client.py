"""Stripe API client for the fetcher: PaymentIntent by id and the Events list (for the sweeps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import SecretStr

from ingest.fetch.http import ProviderReply, http_get

DEFAULT_BASE_URL = "https://api.stripe.com"
RESOURCES = {"payment_intent": "payment_intents"}
# "types: an array of up to 20 strings containing specific event names" (Stripe API, List all events).
MAX_EVENT_TYPES = 20


class StripeClient:
    provider = "stripe"

    def __init__(self, session: aiohttp.ClientSession, api_key: SecretStr, *, base_url: str | None = None) -> None:
        self._session = session
        self._api_key = api_key
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}", "Accept": "application/json"}

    def supports(self, object_type: str) -> bool:
        return object_type in RESOURCES

    async def fetch(self, object_type: str, object_id: str) -> ProviderReply:
        url = f"{self._base}/v1/{RESOURCES[object_type]}/{quote(object_id, safe='')}"
        return await http_get(self._session, url, headers=self._headers())

    async def list_events(self, params: Mapping[str, str], types: Sequence[str] = ()) -> ProviderReply:
        """``GET /v1/events`` (newest first; ``ending_before`` pages towards newer events), only the events of
        ``types`` when given (Stripe's ``types[]``: at most ``MAX_EVENT_TYPES`` per request)."""
        if len(types) > MAX_EVENT_TYPES:
            raise ValueError(f"Stripe lists events of at most {MAX_EVENT_TYPES} types per request, not {len(types)}")
        # A repeated key, which a Mapping cannot hold: the query is encoded here.
        query = urlencode([*params.items(), *(("types[]", name) for name in types)])
        return await http_get(self._session, f"{self._base}/v1/events?{query}", headers=self._headers())

    async def close(self) -> None:
        await self._session.close()
