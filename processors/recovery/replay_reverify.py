"""``paystream replay --reverify``: check an archived delivery's signature again, against current secrets.

The provider's own verifier (``ingest/providers/<p>/verify.py``, ``async verify(IncomingDelivery,
ResolvedAccount) -> VerificationResult``) is called exactly as ingest calls it, with two differences that
switch the timestamp tolerance off — an old delivery is old, that is the point of a replay:

* ``received_at`` is the ORIGINAL receipt time from the envelope, so a verifier that compares the signed
  timestamp with the receipt time sees the same distance it saw when the delivery first arrived;
* the account's ``tolerance_s`` is widened to a century, so no delivery is refused as stale or future.

What is still checked is what matters: the signature over the exact bytes, with the secrets configured
now (after a rotation, the old key must still be listed for old deliveries to pass).

Adyen publishes each verified item on its own (see adyen.verify), so the item is wrapped back into a
one-item batch before it is verified again. An Adyen webhook signed in its ``HmacSignature`` header (a
Tokenization webhook) was published as received and is verified again as it is, with the kept header.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from ingest.delivery import IncomingDelivery, ResolvedAccount, VerificationResult
from ingest.providers.adyen.tokens import is_type_webhook
from paystream.config import Settings, resolve_secret
from paystream.errors import ConfigurationError, RejectedDelivery
from schemas.envelopes import InboxEnvelope, from_rfc3339

NO_TOLERANCE_S = 100 * 365 * 24 * 3600

Verify = Callable[[IncomingDelivery, ResolvedAccount], Awaitable[VerificationResult]]


class ReverifyFailed(Exception):
    """The delivery did not verify again; ``reason`` is a short code for the summary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Reverifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._verifiers: dict[str, Verify] = {}
        self._accounts: dict[tuple[str, str], ResolvedAccount] = {}

    def _verifier(self, provider: str) -> Verify:
        if provider not in self._verifiers:
            try:
                module = importlib.import_module(f"ingest.providers.{provider}.verify")
            except ModuleNotFoundError as exc:
                raise ReverifyFailed("no_verifier", f"no verifier module for {provider}") from exc
            self._verifiers[provider] = module.verify
        return self._verifiers[provider]

    def _account(self, provider: str, name: str) -> ResolvedAccount:
        if (provider, name) not in self._accounts:
            config = self.settings.account(provider, name)
            if config is None:
                raise ReverifyFailed("unknown_account", f"{provider}/{name} is not configured")
            try:
                secrets = tuple(resolve_secret(ref) for ref in config.secrets)
            except ConfigurationError as exc:
                raise ReverifyFailed("secret_unavailable", str(exc)) from exc
            wide = config.model_copy(update={"tolerance_s": NO_TOLERANCE_S})
            self._accounts[provider, name] = ResolvedAccount(provider, name, wide, secrets)
        return self._accounts[provider, name]

    async def reverify(self, envelope: InboxEnvelope) -> Mapping[str, Any]:
        """The new verification result (``{"verifier", "key_id", "ok"}``), or :class:`ReverifyFailed`."""
        verify = self._verifier(envelope.provider)
        account = self._account(envelope.provider, envelope.account)
        delivery = IncomingDelivery(
            provider=envelope.provider,
            account=envelope.account,
            body=_as_received(envelope),
            headers=dict(envelope.headers),
            received_at=from_rfc3339(envelope.received_at).timestamp(),
        )
        try:
            result = await verify(delivery, account)
        except RejectedDelivery as exc:
            raise ReverifyFailed(exc.code, exc.detail) from exc
        except ConfigurationError as exc:
            raise ReverifyFailed("configuration", str(exc)) from exc
        for accepted in result.accepted:
            if accepted.delivery_id == envelope.delivery_id:
                v = accepted.verification
                return {"verifier": v.verifier, "key_id": v.key_id, "ok": v.ok}
        reasons = sorted({item.reason for item in result.rejected}) or ["delivery_id_mismatch"]
        raise ReverifyFailed(reasons[0], f"delivery {envelope.delivery_id} did not verify again")


def _as_received(envelope: InboxEnvelope) -> bytes:
    if envelope.provider != "adyen":
        return envelope.body
    item = orjson.loads(envelope.body)
    if is_type_webhook(item):
        return envelope.body  # signed over these exact bytes: a batch around it would break the signature
    batch: dict[str, Any] = {"notificationItems": [{"NotificationRequestItem": item}]}
    live = envelope.object_ids.get("live")
    if live is not None:
        batch["live"] = live
    return orjson.dumps(batch)
