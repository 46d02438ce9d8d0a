"""The seam between the fetcher and the provider clients: one HTTP answer, one protocol, one GET helper.

Provider clients (``ingest/providers/*/client.py``) only turn "fetch object X" into an HTTP request;
deciding what an answer means (retry, back off, give up) is the fetcher's job (:mod:`ingest.fetch.lane`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiohttp

from paystream.errors import InfrastructureError


class ProviderUnreachable(InfrastructureError):
    """The call timed out or the connection failed: no HTTP answer at all."""


@dataclass(frozen=True, slots=True)
class ProviderReply:
    status: int
    body: bytes
    retry_after_s: float | None = None


class ObjectClient(Protocol):
    """Fetches one provider object by type and id (one instance per provider account)."""

    provider: str

    def supports(self, object_type: str) -> bool: ...

    async def fetch(self, object_type: str, object_id: str) -> ProviderReply: ...

    async def close(self) -> None: ...


def new_session(*, max_connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """A pooled session per provider account: the pool size is the account's in-flight cap."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0)),
        raise_for_status=False,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


async def http_get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> ProviderReply:
    try:
        async with session.get(url, headers=dict(headers), params=params, allow_redirects=False) as response:
            body = await response.read()
            return ProviderReply(
                status=response.status,
                body=body,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
            )
    except TimeoutError as exc:
        raise ProviderUnreachable(f"GET {url}: timed out") from exc
    except aiohttp.ClientError as exc:
        raise ProviderUnreachable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
