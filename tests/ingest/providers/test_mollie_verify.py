"""Mollie's unsigned hint: strict validation and the per-account hint limiter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers.mollie.verify import HintLimiter, verify
from ingest.providers.signers import mollie_hint
from paystream.errors import MalformedDelivery

T = 1_700_000_000.75
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("mollie", hint_rate_per_s=2.0, hint_burst=3)


@pytest.fixture(scope="module")
def deliver(make_delivery: Callable[..., IncomingDelivery]) -> Callable[..., IncomingDelivery]:
    def build(body: bytes, content_type: str | None = FORM) -> IncomingDelivery:
        headers = {} if content_type is None else {"Content-Type": content_type}
        return make_delivery("mollie", body, headers, T)

    return build


@pytest.mark.parametrize(
    ("resource_id", "object_type"),
    [
        ("tr_WDqYK6vllg", "payment"),
        ("ord_stTC2WHAuS", "order"),
        ("re_4qqhO89gsT", "refund"),
        ("chb_n9z0tp", "chargeback"),
        ("sub_rVKGtNd6s3", "subscription"),
        ("mdt_pWUnw6pkBN", "mandate"),
    ],
)
async def test_hint_is_accepted_as_unsigned(
    resource_id: str, object_type: str, account: ResolvedAccount, deliver: Any
) -> None:
    (accepted,) = (await verify(deliver(mollie_hint(resource_id)), account)).accepted
    assert accepted.kind == "hint"
    assert accepted.delivery_id == f"hint:{resource_id}:1700000000"
    assert accepted.object_ids == {"object_type": object_type, "object_id": resource_id}
    assert (accepted.verification.verifier, accepted.verification.key_id) == ("unsigned-hint", None)
    assert accepted.body == f"id={resource_id}".encode()


async def test_content_type_with_charset_and_absent_content_type(account: ResolvedAccount, deliver: Any) -> None:
    with_charset = await verify(deliver(b"id=tr_abc", f"{FORM}; charset=utf-8"), account)
    without = await verify(deliver(b"id=tr_abc", None), account)
    assert with_charset.accepted[0].delivery_id == without.accepted[0].delivery_id == "hint:tr_abc:1700000000"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"id=",
        b"id=tr_abc&id=tr_def",
        b"id=tr_abc&testmode=true",
        b"payment=tr_abc",
        b"id=pi_abc",
        b"id=tr_",
        b"id=tr_abc%26x%3D1",
        b"id=tr_abc&",
        b'{"id": "tr_abc"}',
        b"id=tr_" + b"a" * 200,
        "id=tr_ä".encode(),
    ],
    ids=lambda body: body[:24].decode("utf-8", "replace"),
)
async def test_malformed_hint(body: bytes, account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(body), account)
    assert raised.value.code == "malformed_hint"
    assert raised.value.status == 400


async def test_wrong_content_type(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(b"id=tr_abc", "application/json"), account)
    assert raised.value.code == "malformed_hint"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_the_burst_then_refuses(account: ResolvedAccount) -> None:
    limiter = HintLimiter(clock=FakeClock())
    answers = [limiter.admit(account) for _ in range(4)]
    assert [answer.allowed for answer in answers] == [True, True, True, False]
    assert answers[-1].retry_after_s == pytest.approx(0.5)  # one token at 2 per second


def test_limiter_refills_at_the_configured_rate(account: ResolvedAccount) -> None:
    clock = FakeClock()
    limiter = HintLimiter(clock=clock)
    for _ in range(3):
        limiter.admit(account)
    clock.now += 0.5
    assert limiter.admit(account).allowed
    assert not limiter.admit(account).allowed
    clock.now += 60  # refill never exceeds the burst
    assert [limiter.admit(account).allowed for _ in range(4)] == [True, True, True, False]


def test_limiter_keeps_one_bucket_per_account(account: ResolvedAccount, make_account: Any) -> None:
    limiter = HintLimiter(clock=FakeClock())
    for _ in range(3):
        limiter.admit(account)
    other = ResolvedAccount(provider="mollie", name="other", config=account.config)
    assert not limiter.admit(account).allowed
    assert limiter.admit(other).allowed
