"""One provider account as the fetcher sees it: its client, circuit breaker and place at its provider's
gate (token bucket, share of the in-flight cap), and what each kind of answer means (publish a result, or
try again later)."""

from __future__ import annotations

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
from ingest.fetch.ratelimit import ProviderGate
from paystream.logs import get_logger
from paystream.metrics import (
    CIRCUIT_STATE,
    FETCH_SECONDS,
    FETCH_SLOT_WAIT_SECONDS,
    FETCHES,
    FETCHES_IN_FLIGHT,
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMITED_RESPONSES,
)
from schemas.envelopes import FetchOutcome, FetchRequest, FetchResult, to_rfc3339

log = get_logger(__name__)

# Outcomes worth another attempt; everything else is final and published as it is.
RETRYABLE: frozenset[FetchOutcome] = frozenset({"server_error", "timeout", "rate_limited"})
# Outcomes that say the provider is unwell (they count towards opening the circuit).
CIRCUIT_FAILURES: frozenset[FetchOutcome] = frozenset({"server_error", "timeout"})


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
    if status == 408:
        # Request Timeout: the provider gave up waiting (overloaded, or a slow network on the way), which
        # says nothing against the request itself: retried with backoff like a 5xx, not a final client error.
        return "timeout"
    if status >= 500:
        return "server_error"
    return "client_error"


def tries_of(request: FetchRequest) -> int:
    """How many calls this request has had, the current one included (its retry count plus one)."""
    return 1 + (request.retry or 0)


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
        gate: ProviderGate,
        circuit: CircuitBreaker | None = None,
        uniform: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.account = account
        self.client = client
        self.options = options
        self.gate = gate
        self.circuit = circuit or CircuitBreaker(
            options.circuit_failure_threshold, options.circuit_reset_s, first_reset_s=options.circuit_first_reset_s
        )
        self._uniform = uniform or random.random

    # --- the guarded call, shared by object fetches and sweeps ---------------------------------------
    async def call(self, send: Callable[[], Awaitable[ProviderReply]]) -> CallOutcome:
        if not self.circuit.try_acquire():
            return self._circuit_open()
        probe = self.circuit.state is CircuitState.HALF_OPEN  # this call is the one probe of an open circuit
        try:
            grant = await self.gate.acquire(self.account)
        except BaseException:
            if probe:
                self.circuit.record_neutral()  # cancelled while waiting: the probe slot is free again
            raise
        RATE_LIMIT_WAIT_SECONDS.labels(self.provider).observe(grant.token_wait_s)
        FETCH_SLOT_WAIT_SECONDS.labels(self.provider).observe(grant.slot_wait_s)
        state = self.circuit.state
        if state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and not probe):
            # The circuit opened while this call waited at the gate (and another call may be its probe):
            # the call does not go out after all, and its token is given back.
            self.gate.refund(self.account)
            return self._circuit_open()
        try:
            reply = await self._send(send)
        except ProviderUnreachable as exc:
            log.warning("fetch_unreachable", provider=self.provider, account=self.account, error=str(exc))
            self.gate.release(self.account)
            self._record(failure=True)
            FETCHES.labels(self.provider, "timeout").inc()
            return CallOutcome("timeout")
        except BaseException:
            self.gate.release(self.account)
            if probe:
                self.circuit.record_neutral()
            raise
        outcome = classify(reply.status)
        FETCHES.labels(self.provider, outcome).inc()
        if outcome == "rate_limited":
            # Paused before the slot is given back, so no other call of the account slips out meanwhile.
            RATE_LIMITED_RESPONSES.labels(self.provider).inc()
            wait_s = reply.retry_after_s
            self.gate.pause(self.account, wait_s if wait_s is not None else self.options.backoff_base_s)
            self.gate.release(self.account)
            if probe:
                self.circuit.record_neutral()  # says nothing about the provider's health: probe again
            return CallOutcome(outcome, reply, wait_s=wait_s)
        self.gate.release(self.account)
        self._record(failure=outcome in CIRCUIT_FAILURES)
        if outcome == "client_error":
            log.error("fetch_client_error", provider=self.provider, account=self.account, status=reply.status)
        return CallOutcome(outcome, reply)

    async def _send(self, send: Callable[[], Awaitable[ProviderReply]]) -> ProviderReply:
        FETCHES_IN_FLIGHT.labels(self.provider).inc()
        started = time.perf_counter()
        try:
            return await send()
        finally:
            FETCH_SECONDS.labels(self.provider).observe(time.perf_counter() - started)
            FETCHES_IN_FLIGHT.labels(self.provider).dec()

    def _circuit_open(self) -> CallOutcome:
        FETCHES.labels(self.provider, "circuit_open").inc()
        return CallOutcome("circuit_open", wait_s=self.circuit.seconds_until_probe())

    def _record(self, *, failure: bool) -> None:
        before = self.circuit.state
        if failure:
            self.circuit.record_failure()
        else:
            self.circuit.record_success()
        after = self.circuit.state
        if after is not before and after is CircuitState.CLOSED and self.circuit.last_outage is not None:
            outage = self.circuit.last_outage
            log.warning(
                "circuit_closed",
                provider=self.provider,
                account=self.account,
                recovered_after_s=round(outage.open_s, 3),
                failed_probes=outage.failed_probes,
            )
        elif after is not before and after is CircuitState.OPEN:
            log.warning(
                "circuit_open",
                provider=self.provider,
                account=self.account,
                probe_in_s=round(self.circuit.seconds_until_probe(), 3),
            )
        CIRCUIT_STATE.labels(self.provider, self.account).set(int(self.circuit.state))

    # --- object fetches ----------------------------------------------------------------------------
    async def execute(self, request: FetchRequest, on_sent: Callable[[], None] | None = None) -> Decision:
        """Fetch the request's object; ``on_sent`` runs when the call leaves (past the gate and the circuit)."""
        if self.client is None or not self.client.supports(request.object_type):
            FETCHES.labels(self.provider, "unsupported").inc()
            return Decision(result=self._result(request, "unsupported", None))
        client = self.client

        def send() -> Awaitable[ProviderReply]:
            if on_sent is not None:
                on_sent()
            return client.fetch(request.object_type, request.object_id)

        called = await self.call(send)
        now = datetime.now(UTC)
        if called.outcome == "circuit_open":
            # Not an attempt: the request waits (durably, re-published) until the circuit lets a probe out.
            return Decision(retry=self._later(request, now, (called.wait_s or 0.0) + self._jitter(1.0), 0))
        # The budget counts this request's tries, not its `attempt`: that is a stale poll's number in its chain,
        # and counting it gave poll 6 on no retry at all (one 429 then cost a day).
        tries = tries_of(request)
        if called.outcome in RETRYABLE and tries < self.options.max_attempts:
            delay = called.wait_s
            if delay is None:
                delay = full_jitter_delay(
                    tries,
                    base_s=self.options.backoff_base_s,
                    cap_s=self.options.backoff_cap_s,
                    uniform=self._uniform,
                )
            return Decision(retry=self._later(request, now, delay, 1))
        return Decision(result=self._result(request, called.outcome, called.reply, fetched_at=now))

    def _jitter(self, spread_s: float) -> float:
        return self._uniform() * spread_s

    @staticmethod
    def _later(request: FetchRequest, now: datetime, delay_s: float, extra_tries: int) -> FetchRequest:
        retry = (request.retry or 0) + extra_tries
        return replace(
            request,
            retry=retry or None,
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


__all__ = ["CallOutcome", "CircuitState", "Decision", "ProviderLane", "classify", "tries_of"]
