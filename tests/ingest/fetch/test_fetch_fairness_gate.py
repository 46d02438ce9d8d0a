"""The provider gate (ingest/fetch/ratelimit.py): a call gets its in-flight slot and its account's token in
the same instant, each account keeps its share of the provider's cap, and nothing leaks when a waiting
call is cancelled. Fake clock where the steps matter; the gate's own clock where a rate is checked."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from provider_double.server import max_in_window

from ingest.fetch.ratelimit import Grant, ProviderGate, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def waiting(gate: ProviderGate, account: str, count: int = 1) -> list[asyncio.Task[Grant]]:
    return [asyncio.create_task(gate.acquire(account)) for _ in range(count)]


# --- token bucket ---------------------------------------------------------------------------------------


def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.now += 10.0
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]


def test_bucket_pause_saves_no_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    bucket.pause(5.0)
    clock.now += 5.0
    assert not bucket.try_take()
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_take()
    assert not bucket.try_take()


# --- slot and token together ----------------------------------------------------------------------------


async def test_no_token_is_spent_while_no_slot_is_free() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 2, clock=clock)
    gate = ProviderGate("mollie", 1, clock=clock)
    gate.register("main", bucket)
    first = await gate.acquire("main")
    assert first == Grant(token_wait_s=0.0, slot_wait_s=0.0)
    second = waiting(gate, "main", 3)
    await settle()
    clock.now += 60.0  # the slot stays busy for a minute: tokens refill, but only up to the burst
    await settle()
    assert not any(task.done() for task in second)
    gate.release("main")
    await settle()
    assert [task.done() for task in second] == [True, False, False]
    assert second[0].result().slot_wait_s == pytest.approx(60.0)
    gate.release("main")
    await settle()
    assert [task.done() for task in second] == [True, True, False]
    gate.release("main")
    await settle()
    # The burst (2) was used up by the two calls that had waited for the slot: the third waits for a token.
    assert not second[2].done()
    gate_wait = bucket.wait_s()
    assert gate_wait == pytest.approx(1.0)
    clock.now += gate_wait
    gate._on_timer()
    await settle()
    assert second[2].done()
    assert second[2].result().token_wait_s == pytest.approx(1.0)


async def test_a_slot_is_not_held_while_its_call_waits_for_a_token() -> None:
    clock = FakeClock()
    gate = ProviderGate("mollie", 1, clock=clock)
    gate.register("limited", TokenBucket(1.0, 1, clock=clock))
    gate.register("other", None)
    await gate.acquire("limited")
    gate.release("limited")
    limited = waiting(gate, "limited")  # no token for a second
    await settle()
    assert gate.in_flight() == 0  # it holds nothing meanwhile
    other = await gate.acquire("other")
    assert other.slot_wait_s == 0.0
    assert not limited[0].done()
    gate.release("other")
    clock.now += 1.0
    gate._on_timer()
    await settle()
    assert limited[0].done()


# --- fair shares ----------------------------------------------------------------------------------------


async def test_two_accounts_each_keep_half_of_the_cap() -> None:
    gate = ProviderGate("amazon_pay", 8)
    gate.register("slow", None)
    gate.register("fast", None)
    slow = waiting(gate, "slow", 8)
    await settle()
    assert sum(task.done() for task in slow) == 4
    fast = waiting(gate, "fast", 4)
    await settle()
    assert all(task.done() for task in fast)  # at once: its share was never lent to the slow account
    assert gate.in_flight() == 8
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)


async def test_the_remainder_of_the_cap_is_lent_and_every_reserve_kept() -> None:
    gate = ProviderGate("stripe", 8)
    for account in ("a", "b", "c"):
        gate.register(account, None)
    assert (gate.reserved, gate.limit()) == (2, 4)
    a = waiting(gate, "a", 6)
    await settle()
    assert sum(task.done() for task in a) == 4  # 2 reserved + the 2 nobody has reserved
    b, c = waiting(gate, "b", 3), waiting(gate, "c", 3)
    await settle()
    assert sum(task.done() for task in b) == 2 and sum(task.done() for task in c) == 2
    for task in a + b + c:
        task.cancel()
    await asyncio.gather(*a, *b, *c, return_exceptions=True)


async def test_more_accounts_than_slots_take_turns_fewest_in_flight_first() -> None:
    gate = ProviderGate("mollie", 2)
    for account in ("a", "b", "c"):
        gate.register(account, None)
    assert gate.limit() == 1
    await gate.acquire("a")
    await gate.acquire("b")
    a_again, c = waiting(gate, "a"), waiting(gate, "c")
    await settle()
    gate.release("a")
    await settle()
    assert c[0].done() and not a_again[0].done()  # c had nothing in flight; a had just had its turn
    gate.release("b")
    await settle()
    assert a_again[0].done()


async def test_an_unknown_account_gets_a_share_too() -> None:
    gate = ProviderGate("mollie", 4)
    gate.register("known", None)
    await gate.acquire("stranger")
    assert gate.in_flight("stranger") == 1
    assert gate.limit() == 2


# --- cancellation, refunds, pauses ----------------------------------------------------------------------


async def test_a_cancelled_waiter_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    gate = ProviderGate("mollie", 1, clock=clock)
    gate.register("main", bucket)
    await gate.acquire("main")
    cancelled = waiting(gate, "main")
    await settle()
    cancelled[0].cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    clock.now += 1.0
    gate.release("main")
    assert gate.in_flight() == 0
    assert bucket.try_take()  # its token is still there


async def test_a_call_cancelled_right_after_its_grant_gives_the_slot_back() -> None:
    gate = ProviderGate("mollie", 1)
    gate.register("main", None)
    await gate.acquire("main")
    granted_then_cancelled = waiting(gate, "main")
    await settle()
    gate.release("main")  # grants the waiter, which has not run yet
    granted_then_cancelled[0].cancel()
    await asyncio.gather(*granted_then_cancelled, return_exceptions=True)
    assert gate.in_flight() == 0


async def test_refund_frees_the_slot_and_returns_the_token() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    gate = ProviderGate("mollie", 1, clock=clock)
    gate.register("main", bucket)
    await gate.acquire("main")
    gate.refund("main")
    assert gate.in_flight() == 0
    assert bucket.try_take()


async def test_a_pause_holds_every_call_of_the_account() -> None:
    clock = FakeClock()
    gate = ProviderGate("mollie", 4, clock=clock)
    gate.register("main", TokenBucket(10.0, 5, clock=clock))
    gate.register("other", TokenBucket(10.0, 5, clock=clock))
    gate.pause("main", 3.0)
    paused = waiting(gate, "main", 2)
    other = waiting(gate, "other", 2)
    await settle()
    assert not any(task.done() for task in paused)
    assert all(task.done() for task in other)  # another account of the provider is not paused
    clock.now += 3.0
    gate._on_timer()
    await settle()
    assert not any(task.done() for task in paused)  # no burst saved up during the pause
    clock.now += 0.1
    gate._on_timer()
    await settle()
    assert [task.done() for task in paused] == [True, False]


# --- the scenario, on the gate's own clock -------------------------------------------------------


async def test_a_limited_account_keeps_its_rate_while_another_holds_its_slots() -> None:
    """Account "slow" holds its slots for 0.4 s per call; "limited" (20/s, burst 2) has 8 callers that
    release at once. Every grant time of "limited" obeys the token-bucket bound in every window."""
    rate, burst = 20.0, 2
    gate = ProviderGate("amazon_pay", 8)
    gate.register("slow", None)
    gate.register("limited", TokenBucket(rate, burst))
    grants: list[float] = []
    deadline = time.monotonic() + 1.5

    async def slow_caller() -> None:
        while time.monotonic() < deadline:
            await gate.acquire("slow")
            await asyncio.sleep(0.4)
            gate.release("slow")

    async def limited_caller() -> None:
        while time.monotonic() < deadline:
            await gate.acquire("limited")
            grants.append(time.monotonic())
            await asyncio.sleep(0)
            gate.release("limited")

    await asyncio.gather(*(slow_caller() for _ in range(8)), *(limited_caller() for _ in range(8)))
    assert len(grants) >= burst + 5
    for window in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        assert max_in_window(grants, window) <= math.floor(burst + rate * window), window
