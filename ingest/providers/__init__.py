"""The explicit registry of providers (no import-time discovery).

Each provider is a package with one module per concern — ``verify`` (raw bytes + headers → verified
deliveries), ``parse`` (provider payload → observations, with the explicit status-word mapping, used
for pushes and fetch results alike) and ``client`` (fetches) — and one :class:`PushSpec` here saying
how ingest treats its pushes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ingest.delivery import IncomingDelivery, ResolvedAccount, VerificationResult
from ingest.providers.adyen import verify as adyen
from ingest.providers.amazon_pay import sns as amazon_pay
from ingest.providers.mollie import verify as mollie
from ingest.providers.standard import verify as standard
from ingest.providers.stripe import verify as stripe

Verifier = Callable[[IncomingDelivery, ResolvedAccount], Awaitable[VerificationResult]]


@dataclass(frozen=True, slots=True)
class PushSpec:
    verify: Verifier
    # Headers kept in the inbox envelope: what a later `replay --reverify` needs, and nothing else.
    kept_headers: tuple[str, ...]
    # The body of the 2xx answer; some providers insist on theirs.
    success_body: bytes = b'{"status":"accepted"}'
    success_content_type: bytes = b"application/json"
    # Decodes one configured secret, raising ConfigurationError when it cannot be used, so a bad key
    # stops the process at start-up instead of turning every delivery into a 401.
    check_secret: Callable[[str], object] | None = None


PUSH_PROVIDERS: dict[str, PushSpec] = {
    "amazon_pay": PushSpec(
        verify=amazon_pay.verify,
        kept_headers=("content-type", "x-amz-sns-message-type", "x-amz-sns-message-id", "x-amz-sns-topic-arn"),
    ),
    "stripe": PushSpec(verify=stripe.verify, kept_headers=("content-type", "stripe-signature")),
    "adyen": PushSpec(
        verify=adyen.verify,
        # A standard item carries its HMAC inside; a {type, data} webhook (tokens) in its HmacSignature header.
        kept_headers=("content-type", "hmacsignature"),
        success_body=b"[accepted]",
        success_content_type=b"text/plain",
        check_secret=adyen.decode_key,
    ),
    "mollie": PushSpec(verify=mollie.verify, kept_headers=("content-type",)),
    "standard": PushSpec(
        verify=standard.verify,
        kept_headers=("content-type", "webhook-id", "webhook-timestamp", "webhook-signature"),
        check_secret=standard.decode_secret,
    ),
}
