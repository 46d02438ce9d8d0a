"""The ingest HTTP service: a small ASGI app (DESIGN §4.1).

Routes: ``POST /webhooks/{provider}/{account}``, ``POST /v1/observations``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``. A delivery is answered 2xx only after Kafka acknowledged every record
it produced (acks=all). Every rejection gets its HTTP status, a short JSON body
``{"error": code, "detail": ...}``, one log line and a metric; nothing unverified is published.

The app is plain ASGI rather than a framework: the webhook path is the hot path of the service, and
reading the body ourselves is what lets the size limit apply *while* reading.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics import Counter, Histogram

from ingest.accounts import AccountBook
from ingest.delivery import IncomingDelivery, VerifiedDelivery
from ingest.observations import ObservationIntake
from ingest.providers import PUSH_PROVIDERS, PushSpec
from ingest.providers.amazon_pay import sns
from ingest.providers.amazon_pay.certs import CertificateStore
from ingest.providers.mollie.verify import HintLimiter
from ingest.providers.routing import delivery_payment_key
from ingest.publisher import InboxPublisher
from ingest.subscriptions import SubscriptionHandler
from paystream import metrics
from paystream.config import AccountConfig, Settings
from paystream.errors import (
    BodyTooLarge,
    BrokerUnavailable,
    InfrastructureError,
    MalformedDelivery,
    MethodNotAllowed,
    RejectedDelivery,
    RequestTimeout,
    TooManyHints,
    UnknownRoute,
)
from paystream.logs import get_logger
from schemas.envelopes import InboxEnvelope, to_rfc3339

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = get_logger("ingest")

JSON = b"application/json"

# Every route the app serves (method, path template); schemas/openapi.yaml must list exactly these.
ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/webhooks/{provider}/{account}"),
    ("POST", "/v1/observations"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
)


class _ProviderMetrics:
    """The labelled metric children of one configured (provider, account), bound on first use.

    ``Metric.labels()`` costs a lock, a tuple and a dict look-up per call; a delivery records six
    samples, so the hot path keeps the children instead. Label values stay the same closed set.
    """

    __slots__ = ("accepted", "body_bytes", "published", "request_seconds", "verify_seconds")

    def __init__(self, provider: str, account: str) -> None:
        self.body_bytes: Histogram = metrics.BODY_BYTES.labels(provider=provider)
        self.verify_seconds: Histogram = metrics.VERIFY_SECONDS.labels(provider=provider)
        self.request_seconds: Histogram = metrics.REQUEST_SECONDS.labels(provider=provider)
        self.accepted: Counter = metrics.INGEST_REQUESTS.labels(provider, account, "accepted")
        self.published: dict[str, Counter] = {}  # by envelope kind, filled on first use

    def published_kind(self, provider: str, kind: str) -> Counter:
        child = self.published.get(kind)
        if child is None:
            child = self.published[kind] = metrics.INGEST_PUBLISHED.labels(provider=provider, kind=kind)
        return child


class IngestApp:
    def __init__(
        self,
        settings: Settings,
        *,
        publisher: InboxPublisher | None = None,
        certificates: CertificateStore | None = None,
        accounts: AccountBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.accounts = accounts or AccountBook.from_settings(settings)
        self.publisher = publisher or InboxPublisher(settings)
        self.certificates = certificates or CertificateStore(
            preseed_dir=settings.sns.cert_dir,
            timeout_s=settings.sns.fetch_timeout_s,
            max_bytes=settings.sns.max_cert_bytes,
        )
        self._verifiers = {name: spec.verify for name, spec in PUSH_PROVIDERS.items()}
        # SNS verification needs this app's certificate store (pre-seeded, cached per process).
        self._verifiers["amazon_pay"] = functools.partial(sns.verify, store=self.certificates)
        self._check_secrets()
        self.hints = HintLimiter()
        self.subscriptions = SubscriptionHandler(settings.sns.fetch_timeout_s)
        self.observations = ObservationIntake(settings, self.accounts)
        self._clock = clock
        self._limit = settings.http.max_body_bytes
        self._body_timeout_s = settings.http.body_timeout_s
        self._retry_after = str(settings.http.retry_after_s).encode()
        # Bound on an account's first delivery (not here): /metrics shows the same series as before.
        self._metrics: dict[tuple[str, str], _ProviderMetrics] = {}

    def _check_secrets(self) -> None:
        for (provider, _name), account in self.accounts.accounts.items():
            spec = PUSH_PROVIDERS.get(provider)
            if spec is not None and spec.check_secret is not None:
                for secret in account.secrets:
                    spec.check_secret(secret.get_secret_value())

    # --- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await self.publisher.start()
        # Everything allocated so far (modules, settings, certificates) lives as long as the process:
        # moved out of the collector's sight, full collections stop re-scanning it (~5% of request CPU).
        gc.freeze()
        log.info("ingest_started", accounts=self.accounts.describe(), max_body_bytes=self._limit)

    async def shutdown(self) -> None:
        # uvicorn has stopped accepting and drained in-flight requests before lifespan shutdown.
        await self.publisher.stop()
        await self.certificates.close()
        await self.subscriptions.close()
        log.info("ingest_stopped")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "GET":
            await self._get(path, send)
            return
        if method != "POST":
            await self._reject(send, MethodNotAllowed(f"{method} is not served here; use POST"), "none", "none")
            return
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "webhooks":
            await self._webhook(parts[1], parts[2], scope, receive, send)
        elif path == "/v1/observations":
            await self._observation(scope, receive, send)
        else:
            await self._reject(send, UnknownRoute("no such route", code="not_found"), "none", "none")

    async def _get(self, path: str, send: Send) -> None:
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"alive"}')
        elif path == "/readyz":
            ready = self.publisher.ready
            await _respond(send, 200 if ready else 503, b'{"status":"ready"}' if ready else _error(
                "not_ready", "Kafka producer is not connected"))
        elif path == "/metrics":
            body = metrics.exposition(self.settings.metrics_multiproc_dir)
            await _respond(send, 200, body, CONTENT_TYPE_LATEST.encode())
        else:
            await _respond(send, 404, _error("not_found", "no such route"))

    # --- webhooks -----------------------------------------------------------------------------------

    async def _webhook(self, provider: str, account_name: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        spec = PUSH_PROVIDERS.get(provider)
        account = self.accounts.get(provider, account_name) if spec is not None else None
        if spec is None or account is None:
            # Unknown names never become metric labels (unbounded cardinality).
            label_provider = provider if spec is not None else "unknown"
            error = UnknownRoute(f"no configured account {account_name!r} for provider {provider!r}")
            await self._reject(send, error, label_provider, "unknown")
            metrics.REQUEST_SECONDS.labels(provider=label_provider).observe(time.perf_counter() - started)
            return
        bound = self._metrics.get((provider, account_name))
        if bound is None:
            bound = self._metrics[(provider, account_name)] = _ProviderMetrics(provider, account_name)
        try:
            headers = _headers(scope)
            body = await self._read_body(headers, receive)
            bound.body_bytes.observe(len(body))
            delivery = IncomingDelivery(provider, account_name, body, headers, self._clock())
            verify_started = time.perf_counter()
            result = await self._verifiers[provider](delivery, account)
            bound.verify_seconds.observe(time.perf_counter() - verify_started)
            for item in result.rejected:
                self._count_rejection(provider, account_name, item.reason, item.detail, item_of_batch=True)
            await self._deliver(spec, delivery, result.accepted, bound, send)
            bound.accepted.inc()
        except RejectedDelivery as exc:
            await self._reject(send, exc, provider, account_name)
        except InfrastructureError as exc:
            await self._unavailable(send, exc, provider, account_name)
        finally:
            bound.request_seconds.observe(time.perf_counter() - started)

    async def _deliver(
        self,
        spec: PushSpec,
        delivery: IncomingDelivery,
        accepted: list[VerifiedDelivery],
        bound: _ProviderMetrics,
        send: Send,
    ) -> None:
        publishable = []
        received_at = to_rfc3339(datetime.fromtimestamp(delivery.received_at, UTC))
        kept_headers = {name: delivery.headers[name] for name in spec.kept_headers if name in delivery.headers}
        for verified in accepted:
            if verified.kind == "control":
                # Rare (SNS subscription handling): its log lines carry the route as context.
                with structlog.contextvars.bound_contextvars(provider=delivery.provider, account=delivery.account):
                    await self.subscriptions.handle(delivery, verified)
                continue
            if verified.kind == "hint":
                admission = self.hints.admit(self.accounts.require(delivery.provider, delivery.account))
                if not admission.allowed:
                    metrics.HINTS_RATE_LIMITED.labels(delivery.provider, delivery.account).inc()
                    raise TooManyHints("too many hints for this account", admission.retry_after_s)
            config = self.accounts.require(delivery.provider, delivery.account).config
            publishable.append(self._envelope(delivery, verified, received_at, kept_headers, config))
        if publishable:
            await self.publisher.publish(publishable)
            for envelope in publishable:
                bound.published_kind(delivery.provider, envelope.kind).inc()
            if log.is_enabled_for(logging.DEBUG):
                log.debug("delivery_published", provider=delivery.provider, account=delivery.account,
                          delivery_ids=[e.delivery_id for e in publishable])
        await _respond(send, 200, spec.success_body, spec.success_content_type)

    @staticmethod
    def _envelope(
        delivery: IncomingDelivery, verified: VerifiedDelivery, received_at: str, kept_headers: dict[str, str],
        config: AccountConfig,
    ) -> InboxEnvelope:
        assert verified.kind != "control"
        return InboxEnvelope(
            provider=delivery.provider,
            account=delivery.account,
            delivery_id=verified.delivery_id,
            kind=verified.kind,
            received_at=received_at,
            body=verified.body,
            headers=dict(kept_headers),
            verification={
                "verifier": verified.verification.verifier,
                "key_id": verified.verification.key_id,
                "ok": verified.verification.ok,
            },
            object_ids=dict(verified.object_ids),
            # Keyed by its payment: everything about one payment lands in one partition as it is published.
            payment_key=delivery_payment_key(delivery.provider, delivery.account, verified.kind, verified.body,
                                             config),
        )

    # --- POST /v1/observations ----------------------------------------------------------------------

    async def _observation(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            headers = _headers(scope)
            key_id = self.observations.authenticate(headers.get("authorization"))
            body = await self._read_body(headers, receive)
            envelope = self.observations.envelope(body, received_at=self._clock(), key_id=key_id)
            await self.publisher.publish([envelope])
            metrics.INGEST_PUBLISHED.labels(provider=envelope.provider, kind="sync").inc()
            metrics.INGEST_REQUESTS.labels("sync", "all", "accepted").inc()
            await _respond(send, 202, orjson.dumps({"status": "accepted", "delivery_id": envelope.delivery_id}))
        except RejectedDelivery as exc:
            await self._reject(send, exc, "sync", "all")
        except InfrastructureError as exc:
            await self._unavailable(send, exc, "sync", "all")
        finally:
            metrics.REQUEST_SECONDS.labels(provider="sync").observe(time.perf_counter() - started)

    # --- shared -------------------------------------------------------------------------------------

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        """Read the body, refusing as soon as it exceeds the limit (a 50 MB body is never buffered)."""
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise MalformedDelivery("invalid Content-Length", code="bad_content_length")
            if int(declared) > self._limit:
                raise BodyTooLarge(f"body of {declared} bytes is over the limit of {self._limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise MalformedDelivery("client disconnected", code="client_disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self._limit:
                        raise BodyTooLarge(f"body is over the limit of {self._limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError as exc:
            raise RequestTimeout(f"body not received within {self._body_timeout_s}s") from exc
        return b"".join(chunks)

    def _count_rejection(
        self, provider: str, account: str, reason: str, detail: str, *, item_of_batch: bool = False
    ) -> None:
        metrics.INGEST_REJECTIONS.labels(provider=provider, reason=reason).inc()
        log.warning("delivery_rejected", provider=provider, account=account, reason=reason, detail=detail,
                    batch_item=item_of_batch)

    async def _reject(self, send: Send, exc: RejectedDelivery, provider: str, account: str) -> None:
        self._count_rejection(provider, account, exc.code, exc.detail)
        metrics.INGEST_REQUESTS.labels(provider, account, exc.code).inc()
        if exc.status == 401 and provider != "sync":
            metrics.SIGNATURE_FAILURES.labels(provider=provider, reason=exc.code).inc()
        extra: list[tuple[bytes, bytes]] = []
        if exc.status in (408, 413):
            extra.append((b"connection", b"close"))  # do not read (and discard) the rest of the body
        if isinstance(exc, TooManyHints):
            extra.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
        await _respond(send, exc.status, _error(exc.code, exc.detail), extra_headers=extra)

    async def _unavailable(self, send: Send, exc: InfrastructureError, provider: str, account: str) -> None:
        if isinstance(exc, BrokerUnavailable):
            code = "kafka_unavailable"
        else:  # e.g. an SNS certificate that could not be fetched: SNS retries only on 5xx
            code = getattr(exc, "code", "dependency_unavailable")
        metrics.INGEST_REQUESTS.labels(provider, account, code).inc()
        metrics.INGEST_REJECTIONS.labels(provider=provider, reason=code).inc()
        log.warning("delivery_deferred", provider=provider, account=account, reason=code, detail=str(exc)[:300])
        await _respond(send, 503, _error(code, "temporarily unavailable; retry later"),
                       extra_headers=[(b"retry-after", self._retry_after)])


def _headers(scope: Scope) -> dict[str, str]:
    # ASGI servers lower-case header names; latin-1 is HTTP's own encoding for header bytes.
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _error(code: str, detail: str) -> bytes:
    return orjson.dumps({"error": code, "detail": detail})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> IngestApp:
    """uvicorn factory (``ingest.app:create_app``)."""
    from paystream.config import get_settings

    return IngestApp(settings or get_settings())
