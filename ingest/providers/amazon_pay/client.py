"""Amazon Pay API v2 client for the fetcher: Get Charge, Refund, Dispute and Charge Permission (signed GETs)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import aiohttp

from ingest.fetch.http import ProviderReply, http_get
from ingest.providers.amazon_pay.signing import AmazonPaySigner, mode_path_prefix, region_host

# object_type (as in the fetch request) -> API v2 resource collection. A CHARGEBACK IPN names a dispute id:
# Get Dispute (GET /v2/disputes/:disputeId).
RESOURCES = {"charge": "charges", "refund": "refunds", "dispute": "disputes", "charge_permission": "chargePermissions"}


class AmazonPayClient:
    provider = "amazon_pay"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        signer: AmazonPaySigner,
        *,
        sandbox: bool,
        base_url: str | None = None,
    ) -> None:
        self._session = session
        self._signer = signer
        base = (base_url or f"https://{region_host(signer.region)}").rstrip("/")
        parts = urlsplit(base)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        # x-amz-pay-host is the host name without a port, as the SDKs send it.
        self._host = parts.hostname or ""
        self._path_prefix = parts.path + mode_path_prefix(signer.public_key_id, sandbox)

    def supports(self, object_type: str) -> bool:
        return object_type in RESOURCES

    def path_for(self, object_type: str, object_id: str) -> str:
        return f"{self._path_prefix}/v2/{RESOURCES[object_type]}/{quote(object_id, safe='')}"

    async def fetch(self, object_type: str, object_id: str) -> ProviderReply:
        path = self.path_for(object_type, object_id)
        headers = self._signer.sign("GET", self._host, path)
        return await http_get(self._session, self._origin + path, headers=headers)

    async def close(self) -> None:
        await self._session.close()
