"""Mollie API client for the fetcher: one GET per hinted resource, with what it should embed.

A refund, chargeback or subscription cannot be got by its id alone (Mollie's Get endpoints need the payment or
customer id, which a hint does not carry): the list of all of them, starting from the id (``from``, one item),
gives it — with its payment embedded for refunds and chargebacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from ingest.fetch.http import ProviderReply, http_get

DEFAULT_BASE_URL = "https://api.mollie.com"


@dataclass(frozen=True, slots=True)
class Resource:
    collection: str
    embed: str | None = None
    listed: bool = False  # fetched as the first item of the list starting from its id

    def request(self, object_id: str) -> tuple[str, Mapping[str, str]]:
        """(path, query) of the GET that finds ``object_id``."""
        query = {"embed": self.embed} if self.embed else {}
        if self.listed:
            return f"/v2/{self.collection}", {"from": object_id, "limit": "1", **query}
        return f"/v2/{self.collection}/{quote(object_id, safe='')}", query


# object_type (as in the fetch request) -> how to get it
RESOURCES: Mapping[str, Resource] = {
    "payment": Resource("payments", embed="refunds,chargebacks"),
    "order": Resource("orders", embed="payments,refunds"),
    "refund": Resource("refunds", embed="payment", listed=True),
    "chargeback": Resource("chargebacks", embed="payment", listed=True),
    "subscription": Resource("subscriptions", listed=True),
}


class MollieClient:
    provider = "mollie"

    def __init__(self, session: aiohttp.ClientSession, api_key: SecretStr, *, base_url: str | None = None) -> None:
        self._session = session
        self._api_key = api_key
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")

    def supports(self, object_type: str) -> bool:
        return object_type in RESOURCES

    async def fetch(self, object_type: str, object_id: str) -> ProviderReply:
        path, query = RESOURCES[object_type].request(object_id)
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}", "Accept": "application/hal+json"}
        return await http_get(self._session, self._base + path, headers=headers, params=query or None)

    async def close(self) -> None:
        await self._session.close()
