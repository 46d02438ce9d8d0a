"""The one exception hierarchy of paystream, documented in one place.

``PaystreamError``
    ├── ``ConfigurationError``      bad or missing configuration; the process refuses to start.
    ├── ``InfrastructureError``     Kafka / S3 / a provider API is unavailable; callers retry or answer 503.
    │     └── ``BrokerUnavailable`` the producer could not get acks=all in time.
    ├── ``RejectedDelivery``        an HTTP delivery refused by ingest; carries the HTTP status and a short
    │     │                         machine code that goes into the JSON body, the log line and the metric.
    │     ├── ``SignatureError``    401: missing/bad signature, stale or future timestamp, untrusted cert.
    │     ├── ``MalformedDelivery`` 400: the body or headers cannot be read.
    │     ├── ``UnknownRoute``      404: unknown provider or account.
    │     ├── ``BodyTooLarge``      413: over the configured limit (enforced while reading).
    │     ├── ``RequestTimeout``    408: the body did not arrive within the body timeout.
    │     ├── ``MethodNotAllowed``  405: a method the route does not serve.
    │     ├── ``TooManyHints``      429: unsigned hints (Mollie) over the account's rate; carries Retry-After.
    │     └── ``Unauthorized``      401: missing/bad bearer token on /v1/observations.
    └── ``NormalizationError``      a record the processors cannot turn into an observation; it goes to the
          │                         DLQ unchanged with the error class and message in its headers.
          ├── ``UnknownProviderStatus`` a provider word with no explicit mapping: never guessed. It names the
          │                             provider and the word (a new event type, code or status), so the DLQ
          │                             alert can name it too.
          └── ``PaymentQuarantined``    the payment reached the record size cap: its inputs are copied to the
                                        DLQ for a person instead of being applied.
"""

from __future__ import annotations


class PaystreamError(Exception):
    """Base of every error paystream raises on purpose."""


class ConfigurationError(PaystreamError):
    """The configuration is invalid or incomplete."""


class InfrastructureError(PaystreamError):
    """A dependency (Kafka, S3, a provider API) is unavailable."""


class BrokerUnavailable(InfrastructureError):
    """Kafka did not acknowledge a record with acks=all in time."""


class RejectedDelivery(PaystreamError):
    """A delivery ingest refuses. ``code`` is short and stable: it is a metric label value."""

    status: int = 400
    code: str = "rejected"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class SignatureError(RejectedDelivery):
    status = 401
    code = "bad_signature"


class MalformedDelivery(RejectedDelivery):
    status = 400
    code = "malformed"


class UnknownRoute(RejectedDelivery):
    status = 404
    code = "unknown_route"


class BodyTooLarge(RejectedDelivery):
    status = 413
    code = "body_too_large"


class Unauthorized(RejectedDelivery):
    status = 401
    code = "unauthorized"


class RequestTimeout(RejectedDelivery):
    status = 408
    code = "request_timeout"


class MethodNotAllowed(RejectedDelivery):
    status = 405
    code = "method_not_allowed"


class TooManyHints(RejectedDelivery):
    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class NormalizationError(PaystreamError):
    """A record cannot be normalized; it is sent to the DLQ unchanged."""

    reason: str = "unparseable"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnknownProviderStatus(NormalizationError):
    reason = "unknown_provider_status"

    def __init__(self, message: str, *, provider: str | None = None, word: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.provider = provider
        self.word = word


class PaymentQuarantined(NormalizationError):
    reason = "payment_quarantined"
