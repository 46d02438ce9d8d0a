"""Build one :class:`ProviderLane` per configured provider account (client, circuit), and one
:class:`ProviderGate` per provider that every account of it is registered with (token bucket, share of the
in-flight cap)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import aiohttp

from ingest.fetch.http import ObjectClient, new_session
from ingest.fetch.lane import ProviderLane
from ingest.fetch.options import FetchOptions
from ingest.fetch.ratelimit import ProviderGate, TokenBucket
from ingest.providers.amazon_pay.client import AmazonPayClient
from ingest.providers.amazon_pay.signing import AmazonPaySigner, load_private_key
from ingest.providers.mollie.client import MollieClient
from ingest.providers.stripe.client import StripeClient
from paystream.config import AccountConfig, Settings, resolve_secret
from paystream.logs import get_logger

log = get_logger(__name__)

PULL_PROVIDERS = ("amazon_pay", "stripe", "mollie")


@dataclass
class Lanes:
    by_account: dict[tuple[str, str], ProviderLane] = field(default_factory=dict)
    stripe: dict[str, StripeClient] = field(default_factory=dict)  # account -> client, for the sweeps
    gates: dict[str, ProviderGate] = field(default_factory=dict)
    options: FetchOptions = field(default_factory=FetchOptions)

    def gate(self, provider: str) -> ProviderGate:
        gate = self.gates.get(provider)
        if gate is None:
            gate = self.gates[provider] = ProviderGate(provider, self.options.in_flight_per_provider)
        return gate

    def unsupported(self, provider: str, account: str) -> ProviderLane:
        """For requests naming an account (or provider) the fetcher cannot call: answered "unsupported"
        without a call (so it takes no share of the provider's gate)."""
        return ProviderLane(provider, account, None, options=self.options, gate=self.gate(provider))

    async def close(self) -> None:
        for lane in self.by_account.values():
            if lane.client is not None:
                await lane.client.close()


def _session(options: FetchOptions) -> aiohttp.ClientSession:
    # One more connection than workers: the Stripe sweeps share the account's session.
    return new_session(max_connections=options.in_flight_per_provider + 1, timeout_s=options.request_timeout_s)


def _client(provider: str, config: AccountConfig, options: FetchOptions) -> ObjectClient | None:
    if provider in ("stripe", "mollie"):
        if not config.api_key:
            return None
        key = resolve_secret(config.api_key)
        if provider == "stripe":
            return StripeClient(_session(options), key, base_url=config.api_base_url)
        return MollieClient(_session(options), key, base_url=config.api_base_url)
    if provider == "amazon_pay":
        if not (config.public_key_id and config.private_key):
            return None
        signer = AmazonPaySigner(
            public_key_id=config.public_key_id,
            private_key=load_private_key(resolve_secret(config.private_key).get_secret_value()),
            region=config.api_region,
        )
        return AmazonPayClient(
            _session(options),
            signer,
            sandbox=config.api_sandbox,
            base_url=config.api_base_url,
        )
    return None


def build_lanes(settings: Settings, options: FetchOptions) -> Lanes:
    lanes = Lanes(options=options)
    for provider in PULL_PROVIDERS:
        for account, config in settings.accounts.get(provider, {}).items():  # type: ignore[call-overload]
            client = _client(provider, config, options)
            if client is None:
                log.warning("fetch_account_without_credentials", provider=provider, account=account)
            bucket = None
            if options.rate_limit:
                replicas = max(1, options.replicas)
                bucket = TokenBucket(
                    config.fetch_rate_per_s / replicas, max(1, math.ceil(config.fetch_burst / replicas))
                )
            gate = lanes.gate(provider)
            if client is not None:  # an account that makes no calls takes no share of the in-flight cap
                gate.register(account, bucket)
            lanes.by_account[(provider, account)] = ProviderLane(provider, account, client, options=options, gate=gate)
            if isinstance(client, StripeClient):
                lanes.stripe[account] = client
    return lanes
