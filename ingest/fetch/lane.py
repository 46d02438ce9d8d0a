"""One provider account as the fetcher sees it: its client, token bucket, circuit breaker and in-flight
cap, and what each kind of answer means (publish a result, or try again later)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from ingest.fetch.backoff import full_jitter_delay
from ingest.fetch.circuit import CircuitBreaker, CircuitState
from ingest.fetch.http import ObjectClient, ProviderReply, ProviderUnreachable
from ingest.fetch.options import FetchOptions
from ingest.fetch.ratelimit import TokenBucket
from paystream.logs import get_logger
from paystream.metrics import (
    CIRCUIT_STATE,
    FETCH_SECONDS,
    FETCHES,
    FETCHES_IN_FLIGHT,
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMITED_RESPONSES,
)
from schemas.envelopes import FetchOutcome, FetchRequest, FetchResult, to_rfc3339

log = get_logger(__name__)

# Outcomes worth another attempt; everything else is final and published as it is.
RETRYABLE: frozenset[FetchOutcome] = frozenset({"server_error", "timeout", "rate_limited"})


@dataclass(frozen=True, slots=True)
class CallOutcome:
    outcome: FetchOutcome
    reply: ProviderReply | None = None
    # For circuit_open / rate_limited: how long the provider wants us to stay away (None: use backoff).
    wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a request once its call is over: exactly one of the two is set."""

    result: FetchResult | None = None
    retry: FetchRequest | None = None


def classify(status: int) -> FetchOutcome:
    if 200 <= status < 300:
        return "ok"
    if status in (404, 410):
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"


def fetch_id_for(request: FetchRequest, outcome: FetchOutcome, body: bytes) -> str:
    """Deterministic: the same object state fetched twice gets the same id (the processors dedupe on it),
    a changed state a new one."""
    if outcome == "ok":
        digest = hashlib.sha256(request.payment_key.encode() + b"\n" + body).hexdigest()[:32]
        return f"fetch_{digest}"
    return f"{request.request_id}:{request.attempt}:{outcome}"


class ProviderLane:
    def __init__(
        self,
        provider: str,
        account: str,
        client: ObjectClient | None,
        *,
        options: FetchOptions,
        bucket: TokenBucket | None,
        in_flight: asyncio.Semaphore,
        circuit: CircuitBreaker | None = None,
        uniform: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.account = account
        self.client = client
        self.options = options
        self.bucket = bucket
        self.in_flight = in_flight
        self.circuit = circuit or CircuitBreaker(options.circuit_failure_threshold, options.circuit_reset_s)
        self._uniform = uniform or random.random

    # --- the guarded call, shared by object fetches and sweeps ---------------------------------------
    async def call(self, send: Callable[[], Awaitable[ProviderReply]]) -> CallOutcome:
        if not self.circuit.try_acquire():
            FETCHES.labels(self.provider, "circuit_open").inc()
            return CallOutcome("circuit_open", wait_s=self.circuit.seconds_until_probe())
        try:
            if self.bucket is not None:
                RATE_LIMIT_WAIT_SECONDS.labels(self.provider).observe(await self.bucket.acquire())
            async with self.in_flight:
                FETCHES_IN_FLIGHT.labels(self.provider).inc()
                started = time.perf_counter()
                try:
                    reply = await send()
                finally:
                    FETCH_SECONDS.labels(self.provider).observe(time.perf_counter() - started)
                    FETCHES_IN_FLIGHT.labels(self.provider).dec()
        except ProviderUnreachable as exc:
            log.warning("fetch_unreachable", provider=self.provider, account=self.account, error=str(exc))
            self._record(failure=True)
            FETCHES.labels(self.provider, "timeout").inc()
            return CallOutcome("timeout")
        except BaseException:
            self.circuit.record_neutral()  # cancelled while waiting: the probe slot is free again
            raise
        outcome = classify(reply.status)
        FETCHES.labels(self.provider, outcome).inc()
        if outcome == "rate_limited":
            RATE_LIMITED_RESPONSES.labels(self.provider).inc()
            self.circuit.record_neutral()
            wait_s = reply.retry_after_s
            if self.bucket is not None:
                self.bucket.pause(wait_s if wait_s is not None else self.options.backoff_base_s)
            return CallOutcome(outcome, reply, wait_s=wait_s)
        self._record(failure=outcome == "server_error")
        if outcome == "client_error":
            log.error("fetch_client_error", provider=self.provider, account=self.account, status=reply.status)
        return CallOutcome(outcome, reply)

    def _record(self, *, failure: bool) -> None:
        before = self.circuit.state
        if failure:
            self.circuit.record_failure()
        else:
            self.circuit.record_success()
        if self.circuit.state is not before:
            log.warning("circuit_state", provider=self.provider, account=self.account, state=self.circuit.state.name)
        CIRCUIT_STATE.labels(self.provider, self.account).set(int(self.circuit.state))

    # --- object fetches ----------------------------------------------------------------------------
    async def execute(self, request: FetchRequest) -> Decision:
        if self.client is None or not self.client.supports(request.object_type):
            FETCHES.labels(self.provider, "unsupported").inc()
            return Decision(result=self._result(request, "unsupported", None))
        client = self.client
        called = await self.call(lambda: client.fetch(request.object_type, request.object_id))
        now = datetime.now(UTC)
        if called.outcome == "circuit_open":
            # Not an attempt: the request waits (durably, re-published) until the circuit lets a probe out.
            return Decision(retry=self._later(request, now, (called.wait_s or 0.0) + self._jitter(1.0), 0))
        if called.outcome in RETRYABLE and request.attempt < self.options.max_attempts:
            delay = called.wait_s
            if delay is None:
                delay = full_jitter_delay(
                    request.attempt,
                    base_s=self.options.backoff_base_s,
                    cap_s=self.options.backoff_cap_s,
                    uniform=self._uniform,
                )
            return Decision(retry=self._later(request, now, delay, 1))
        return Decision(result=self._result(request, called.outcome, called.reply, fetched_at=now))

    def _jitter(self, spread_s: float) -> float:
        return self._uniform() * spread_s

    @staticmethod
    def _later(request: FetchRequest, now: datetime, delay_s: float, extra_attempts: int) -> FetchRequest:
        return replace(
            request,
            attempt=request.attempt + extra_attempts,
            not_before=to_rfc3339(now + timedelta(seconds=delay_s)),
        )

    def _result(
        self,
        request: FetchRequest,
        outcome: FetchOutcome,
        reply: ProviderReply | None,
        *,
        fetched_at: datetime | None = None,
    ) -> FetchResult:
        body = reply.body if reply is not None else b""
        return FetchResult(
            payment_key=request.payment_key,
            provider=request.provider,
            account=request.account,
            object_type=request.object_type,
            object_id=request.object_id,
            fetch_id=fetch_id_for(request, outcome, body),
            request_id=request.request_id,
            reason=request.reason,
            fetched_at=to_rfc3339(fetched_at or datetime.now(UTC)),
            outcome=outcome,
            http_status=reply.status if reply is not None else None,
            body=body,
            object_kind="object",
            attempt=request.attempt,
        )


__all__ = ["CallOutcome", "CircuitState", "Decision", "ProviderLane", "classify"]
