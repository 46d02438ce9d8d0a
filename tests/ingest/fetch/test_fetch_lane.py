"""What the fetcher does with each kind of provider answer (one provider account, real HTTP double)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from provider_double.server import Answer, ProviderDouble

from ingest.fetch.circuit import CircuitState
from ingest.fetch.clients import Lanes, build_lanes
from ingest.fetch.lane import ProviderLane, classify
from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from paystream.metrics import registry
from schemas.envelopes import FetchReason, FetchRequest, from_rfc3339, to_rfc3339

OPTIONS = FetchOptions(
    max_attempts=3, backoff_base_s=2.0, circuit_failure_threshold=2, circuit_reset_s=0.3, request_timeout_s=0.5
)


def request(provider: str = "mollie", object_type: str = "payment", object_id: str = "tr_1", retry: int | None = None,
            *, reason: FetchReason = "thin_push", attempt: int = 1):
    account = "eu-main" if provider == "amazon_pay" else "main"
    now = to_rfc3339(datetime.now(UTC))
    return FetchRequest(
        payment_key=f"{provider}:{account}:{object_type}:{object_id}",
        provider=provider,
        account=account,
        object_type=object_type,
        object_id=object_id,
        reason=reason,
        not_before=now,
        requested_at=now,
        request_id=f"evt_{object_id}:fetch",
        attempt=attempt,
        retry=retry,
    )


@pytest.fixture
async def lanes(settings_with: Callable[..., Settings]) -> AsyncIterator[Lanes]:
    built = build_lanes(settings_with(), OPTIONS.model_copy())
    yield built
    await built.close()


def mollie(lanes: Lanes) -> ProviderLane:
    lane = lanes.by_account[("mollie", "main")]
    lane._uniform = lambda: 0.5  # deterministic jitter
    return lane


def fetches(provider: str, outcome: str) -> float:
    return registry.get_sample_value("paystream_fetches_total", {"provider": provider, "outcome": outcome}) or 0.0


async def test_ok_answer_is_published_with_the_body_as_fetched(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1", "status": "paid"})
    before = fetches("mollie", "ok")
    decision = await mollie(lanes).execute(request())
    assert decision.result is not None
    assert decision.result.outcome == "ok"
    assert decision.result.http_status == 200
    assert orjson.loads(decision.result.body) == {"id": "tr_1", "status": "paid"}
    assert fetches("mollie", "ok") == before + 1


async def test_same_state_fetched_twice_has_the_same_fetch_id(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1", "status": "open"})
    first = (await mollie(lanes).execute(request())).result
    second = (await mollie(lanes).execute(request())).result
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1", "status": "paid"})
    third = (await mollie(lanes).execute(request())).result
    assert first is not None and second is not None and third is not None
    assert first.fetch_id == second.fetch_id
    assert third.fetch_id != first.fetch_id


async def test_not_found_is_final(lanes: Lanes) -> None:
    decision = await mollie(lanes).execute(request(object_id="tr_missing"))
    assert decision.result is not None
    assert decision.result.outcome == "not_found"
    assert decision.result.http_status == 404


async def test_unsupported_object_type_makes_no_call(double: ProviderDouble, lanes: Lanes) -> None:
    # Settlements are no object the fetcher reads (Mollie refunds, chargebacks and subscriptions are).
    decision = await mollie(lanes).execute(request(object_type="settlement"))
    assert decision.result is not None
    assert decision.result.outcome == "unsupported"
    assert double.count("mollie") == 0


async def test_429_retry_after_sets_the_next_not_before(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=429, retry_after="7"))
    started = datetime.now(UTC)
    decision = await mollie(lanes).execute(request())
    assert decision.retry is not None
    assert (decision.retry.retry, decision.retry.attempt) == (1, 1)  # one re-send; `attempt` is not the fetcher's
    assert from_rfc3339(decision.retry.not_before) >= started + timedelta(seconds=7) - timedelta(milliseconds=1)


async def test_429_pauses_the_account_for_retry_after(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1"})
    double.script("mollie", Answer(status=429, retry_after="1"))
    await mollie(lanes).execute(request())
    await mollie(lanes).execute(request())
    first, second = double.requests
    assert second.at - first.at >= 1.0


async def test_server_error_is_retried_later_with_backoff(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=503))
    started = datetime.now(UTC)
    decision = await mollie(lanes).execute(request(retry=1))
    assert decision.retry is not None
    assert decision.retry.retry == 2
    # second call: ceiling base*2 = 4 s, jitter fixed at 0.5 -> 2 s
    delay = (from_rfc3339(decision.retry.not_before) - started).total_seconds()
    assert 1.99 <= delay <= 2.5


async def test_server_error_on_the_last_attempt_is_published(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=500))
    decision = await mollie(lanes).execute(request(retry=OPTIONS.max_attempts - 1))
    assert decision.result is not None
    assert decision.result.outcome == "server_error"
    assert decision.result.http_status == 500


async def test_timeout_is_retried(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(delay_s=2.0))
    decision = await mollie(lanes).execute(request())
    assert decision.retry is not None
    assert decision.retry.retry == 1


async def test_circuit_opens_and_recovers(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1", "status": "paid"})
    double.script("mollie", Answer(status=500), Answer(status=500))
    lane = mollie(lanes)
    await lane.execute(request())
    await lane.execute(request())
    calls_when_opened = double.count("mollie")
    rejected = await lane.execute(request())
    assert double.count("mollie") == calls_when_opened  # open: no call went out
    assert rejected.retry is not None
    assert rejected.retry.retry is None  # waiting for the circuit is not a try
    assert registry.get_sample_value("paystream_fetch_circuit_state", {"provider": "mollie", "account": "main"}) == 2
    lane.circuit._opened_at -= OPTIONS.circuit_reset_s  # the reset period has passed
    probe = await lane.execute(request())
    assert probe.result is not None and probe.result.outcome == "ok"
    assert registry.get_sample_value("paystream_fetch_circuit_state", {"provider": "mollie", "account": "main"}) == 0


async def test_amazon_pay_lane_fetches_a_signed_charge(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("amazon_pay", "charge", "S02-1", {"chargeId": "S02-1", "statusDetails": {"state": "Captured"}})
    decision = await lanes.by_account[("amazon_pay", "eu-main")].execute(request("amazon_pay", "charge", "S02-1"))
    assert decision.result is not None and decision.result.outcome == "ok"
    assert double.requests[-1].signature == "ok"


async def test_stripe_lane_fetches_a_payment_intent(double: ProviderDouble, lanes: Lanes) -> None:
    double.set_object("stripe", "payment_intent", "pi_1", {"id": "pi_1", "status": "succeeded"})
    decision = await lanes.by_account[("stripe", "main")].execute(request("stripe", "payment_intent", "pi_1"))
    assert decision.result is not None and decision.result.outcome == "ok"
    assert orjson.loads(decision.result.body)["status"] == "succeeded"


def test_408_is_a_timeout_not_a_client_error() -> None:
    assert classify(408) == "timeout"
    assert classify(400) == "client_error"
    assert classify(504) == "server_error"


async def test_408_is_retried_later_with_backoff_like_a_server_error(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=408))
    started = datetime.now(UTC)
    decision = await mollie(lanes).execute(request(retry=1))
    assert decision.retry is not None
    assert decision.retry.retry == 2
    delay = (from_rfc3339(decision.retry.not_before) - started).total_seconds()
    assert 1.99 <= delay <= 2.5  # the same full-jitter backoff as a 5xx (second call, jitter 0.5)
    assert fetches("mollie", "timeout") >= 1


async def test_408_on_the_last_attempt_is_published_as_a_timeout(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=408))
    decision = await mollie(lanes).execute(request(retry=OPTIONS.max_attempts - 1))
    assert decision.result is not None
    assert decision.result.outcome == "timeout"
    assert decision.result.http_status == 408


async def test_repeated_408s_open_the_circuit(double: ProviderDouble, lanes: Lanes) -> None:
    double.script("mollie", Answer(status=408), Answer(status=408))
    lane = mollie(lanes)
    await lane.execute(request())
    await lane.execute(request())
    assert lane.circuit.state is CircuitState.OPEN


async def test_a_call_that_waited_while_the_circuit_opened_does_not_go_out(
    double: ProviderDouble, lanes: Lanes
) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1"})
    lane = mollie(lanes)
    gate = lane.gate
    held = [await gate.acquire("main") for _ in range(gate.limit())]  # every slot of the account is busy
    waiting = asyncio.create_task(lane.execute(request()))
    await asyncio.sleep(0.05)
    for _ in range(OPTIONS.circuit_failure_threshold):  # meanwhile the calls under way fail
        lane.circuit.record_failure()
    for _ in held:
        gate.release("main")
    decision = await waiting
    assert decision.retry is not None and decision.retry.retry is None  # waits for the circuit
    assert double.count("mollie") == 0
    assert gate.in_flight() == 0


async def test_a_call_that_waited_while_another_became_the_probe_does_not_go_out(
    double: ProviderDouble, lanes: Lanes
) -> None:
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1"})
    lane = mollie(lanes)
    gate = lane.gate
    held = [await gate.acquire("main") for _ in range(gate.limit())]
    waiting = asyncio.create_task(lane.execute(request()))
    await asyncio.sleep(0.05)
    for _ in range(OPTIONS.circuit_failure_threshold):
        lane.circuit.record_failure()
    lane.circuit._opened_at -= OPTIONS.circuit_reset_s
    assert lane.circuit.try_acquire()  # another call is the probe now
    for _ in held:
        gate.release("main")
    decision = await waiting
    assert decision.retry is not None and decision.retry.retry is None
    assert double.count("mollie") == 0
    assert not lane.circuit.try_acquire()  # the probe is still the only one out


async def test_a_late_stale_poll_gets_the_full_retry_budget_after_a_429(double: ProviderDouble, lanes: Lanes) -> None:
    # Poll 7 of a payment's chain: its `attempt` (7) is past max_attempts (3), which used to leave it no retry
    # at all, so one 429 cost a day (issue 18 #8). Its budget counts its own tries, like poll 1's.
    double.set_object("mollie", "payment", "tr_1", {"id": "tr_1", "status": "open"})
    lane = mollie(lanes)
    poll = request(reason="stale", attempt=7)
    for retry in range(1, OPTIONS.max_attempts):
        double.script("mollie", Answer(status=429, retry_after="0"))
        decision = await lane.execute(poll)
        assert decision.retry is not None, f"try {retry} of poll 7 was not retried"
        assert (decision.retry.attempt, decision.retry.retry) == (7, retry)
        poll = decision.retry
    double.script("mollie", Answer(status=429, retry_after="0"))
    last = await lane.execute(poll)  # the budget's last call: its answer is published as it is
    assert last.result is not None and last.result.outcome == "rate_limited" and last.result.attempt == 7
    assert double.count("mollie", status=429) == OPTIONS.max_attempts


async def test_the_backoff_of_a_late_poll_follows_its_tries_not_its_poll_number(
    double: ProviderDouble, lanes: Lanes
) -> None:
    double.script("mollie", Answer(status=503))
    started = datetime.now(UTC)
    decision = await mollie(lanes).execute(request(reason="stale", attempt=40))
    assert decision.retry is not None and decision.retry.retry == 1
    # first call: ceiling base*1 = 2 s, jitter fixed at 0.5 -> 1 s (poll 40's number would cap it at 300 s)
    delay = (from_rfc3339(decision.retry.not_before) - started).total_seconds()
    assert 0.99 <= delay <= 1.5
