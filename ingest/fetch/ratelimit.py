"""Who may call a provider, and when: a token bucket per provider account, and one gate per provider that
hands out (in-flight slot, token) pairs.

Why one gate and not a semaphore plus a bucket: a call needs both a free in-flight slot and a token. Taken
one after the other, whichever is taken first is held while waiting for the other. A token taken first
and held while every slot is busy (another account of the provider is slow) is spent long before the call
goes out; the calls then leave together when slots free up, several tokens' worth at once, and the
account's observed rate breaks its limit. A slot taken first and held while waiting for a token keeps it
from an account that could use it now. The gate takes both in the same instant, only when both exist, so
every call leaves at most as often as its account's bucket allows (burst included), whatever the other
accounts of the provider do.

Fairness: each account of a provider has a guaranteed share of the provider's in-flight cap
(``cap // accounts``) that no other account can occupy, so a slow account never starves the others; the
remainder of the cap goes to whoever needs it, the account with the fewest calls in flight first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` saved up.

    Non-blocking (:meth:`wait_s`, :meth:`try_take`): the :class:`ProviderGate` decides when a token is
    taken, and sleeps on a timer until the next one exists; nobody spins.
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now

    def wait_s(self, now: float | None = None) -> float:
        """Seconds until a token can be taken (0.0: one can be taken now)."""
        now = self._clock() if now is None else now
        if now < self._paused_until:
            return self._paused_until - now + 1.0 / self.rate_per_s
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def try_take(self, now: float | None = None) -> bool:
        """Take a token if one exists now."""
        now = self._clock() if now is None else now
        if self.wait_s(now) > 0.0:
            return False
        self._tokens -= 1.0
        return True

    def refund(self) -> None:
        """Give back a token taken for a call that did not go out after all."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    def pause(self, seconds: float) -> None:
        """The provider said 429: nobody calls it for ``seconds``, and no burst is saved up meanwhile
        (the first token after the pause comes one token interval after it ends)."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._updated = max(self._updated, self._paused_until)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a call waited for before the gate let it out (seconds)."""

    token_wait_s: float  # only the token was missing (the account's rate limit, or a 429 pause)
    slot_wait_s: float  # no in-flight slot was free for the account (its share, or the provider's cap)


@dataclass(eq=False, slots=True)
class _Waiter:
    future: asyncio.Future[Grant]
    asked_at: float


@dataclass(eq=False, slots=True)
class _Account:
    bucket: TokenBucket | None
    in_flight: int = 0
    last_granted: float = float("-inf")
    waiters: deque[_Waiter] = field(default_factory=deque)
    # Since when the account has been waiting for nothing but a token (None: it is not).
    token_short_since: float | None = None

    def head(self) -> _Waiter | None:
        while self.waiters and self.waiters[0].future.done():  # its caller gave up (cancelled)
            self.waiters.popleft()
        return self.waiters[0] if self.waiters else None


class ProviderGate:
    """Grants (in-flight slot, token) pairs to the calls of one provider's accounts.

    With ``n`` accounts and a cap of ``c`` calls in flight, every account has ``c // n`` slots reserved for
    it (at least 1 while ``n <= c``) and may borrow the ``c % n`` unreserved ones; with more accounts than
    slots, each account gets at most one slot. A waiting call is let out as soon as its account has a free
    slot it may take *and* a token: the token is taken at that moment, never earlier. When several accounts
    could go, the one with the fewest calls in flight goes first (ties: the one served least recently, so
    accounts take turns).

    Event driven: a pass runs when a call asks, when a call ends, and on a timer set for the earliest
    moment a token-starved account gets its next token; nobody polls.
    """

    def __init__(self, provider: str, cap: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if cap < 1:
            raise ValueError("an in-flight cap must be >= 1")
        self.provider = provider
        self.cap = cap
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    # --- configuration -------------------------------------------------------------------------------
    def register(self, account: str, bucket: TokenBucket | None) -> None:
        """Add an account (its share of the cap is recomputed for all accounts)."""
        self._accounts[account] = _Account(bucket)

    def bucket(self, account: str) -> TokenBucket | None:
        entry = self._accounts.get(account)
        return entry.bucket if entry is not None else None

    @property
    def reserved(self) -> int:
        """Slots reserved for each account."""
        return self.cap // max(1, len(self._accounts))

    def limit(self) -> int:
        """The most slots one account may hold: its reserve plus the unreserved remainder."""
        reserved = self.reserved
        if reserved == 0:
            return 1
        return self.cap - (len(self._accounts) - 1) * reserved

    def in_flight(self, account: str | None = None) -> int:
        if account is None:
            return self._in_flight
        entry = self._accounts.get(account)
        return entry.in_flight if entry is not None else 0

    # --- the calls' side -----------------------------------------------------------------------------
    async def acquire(self, account: str) -> Grant:
        """Wait until ``account`` may call: a slot is held and a token spent when this returns; give the
        slot back with :meth:`release` (or :meth:`refund`) once the call is over."""
        entry = self._accounts.get(account)
        if entry is None:  # an account nobody registered (not built from the settings): it gets a share too
            self.register(account, None)
            entry = self._accounts[account]
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        entry.waiters.append(_Waiter(future, self._clock()))
        self._pass()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(account)  # granted, then cancelled before the call went out
            raise

    def release(self, account: str) -> None:
        """The call is over: its slot is free again."""
        entry = self._accounts[account]
        entry.in_flight -= 1
        self._in_flight -= 1
        self._pass()

    def refund(self, account: str) -> None:
        """The granted call did not go out after all: free its slot and give its token back."""
        bucket = self._accounts[account].bucket
        if bucket is not None:
            bucket.refund()
        self.release(account)

    def pause(self, account: str, seconds: float) -> None:
        """The provider said 429 to this account: no call of it goes out for ``seconds``."""
        bucket = self.bucket(account)
        if bucket is not None:
            bucket.pause(seconds)
        self._pass()

    # --- the scheduler -------------------------------------------------------------------------------
    def _may_take_slot(self, entry: _Account) -> bool:
        if self._in_flight >= self.cap or entry.in_flight >= self.limit():
            return False
        # Taking a slot must leave every other account its reserve (what it holds counts towards it).
        reserved = self.reserved
        owed = sum(max(0, reserved - other.in_flight) for other in self._accounts.values() if other is not entry)
        return self.cap - self._in_flight - 1 >= owed

    def _pass(self) -> None:
        now = self._clock()
        while True:
            ready: list[tuple[int, float, float, _Account, _Waiter]] = []
            next_token_in: float | None = None
            for entry in self._accounts.values():
                head = entry.head()
                if head is None:
                    entry.token_short_since = None
                    continue
                if not self._may_take_slot(entry):
                    entry.token_short_since = None
                    continue
                wait = entry.bucket.wait_s(now) if entry.bucket is not None else 0.0
                if wait > 0.0:
                    if entry.token_short_since is None:
                        entry.token_short_since = now
                    next_token_in = wait if next_token_in is None else min(next_token_in, wait)
                    continue
                ready.append((entry.in_flight, entry.last_granted, head.asked_at, entry, head))
            if not ready:
                break
            _, _, _, entry, head = min(ready, key=lambda item: item[:3])
            if entry.bucket is not None:
                entry.bucket.try_take(now)
            entry.waiters.popleft()
            entry.in_flight += 1
            entry.last_granted = now
            self._in_flight += 1
            token_wait = 0.0
            if entry.token_short_since is not None:
                token_wait = now - max(head.asked_at, entry.token_short_since)
            entry.token_short_since = None
            head.future.set_result(Grant(token_wait_s=token_wait, slot_wait_s=now - head.asked_at - token_wait))
        if next_token_in is not None:
            self._wake_in(next_token_in, now)

    def _wake_in(self, delay_s: float, now: float) -> None:
        due = now + delay_s
        if self._timer is not None and not self._timer.cancelled() and self._timer_due <= due:
            return  # an earlier (or the same) pass is already due; it sets the next timer itself
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pass()


__all__ = ["Grant", "ProviderGate", "TokenBucket"]
