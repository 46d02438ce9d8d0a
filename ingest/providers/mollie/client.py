"""Mollie API client for the fetcher: Get Payment."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from ingest.fetch.http import ProviderReply, http_get

DEFAULT_BASE_URL = "https://api.mollie.com"
RESOURCES = {"payment": "payments"}


class MollieClient:
    provider = "mollie"

    def __init__(self, session: aiohttp.ClientSession, api_key: SecretStr, *, base_url: str | None = None) -> None:
        self._session = session
        self._api_key = api_key
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")

    def supports(self, object_type: str) -> bool:
        return object_type in RESOURCES

    async def fetch(self, object_type: str, object_id: str) -> ProviderReply:
        url = f"{self._base}/v2/{RESOURCES[object_type]}/{quote(object_id, safe='')}"
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}", "Accept": "application/hal+json"}
        return await http_get(self._session, url, headers=headers)

    async def close(self) -> None:
        await self._session.close()
