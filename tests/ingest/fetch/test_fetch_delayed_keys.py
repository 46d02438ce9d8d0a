"""Store keys and due times of the delayed store (ingest/fetch/delayed.py), without a broker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.fetch.delayed import due_at, store_key
from paystream.errors import NormalizationError
from schemas.envelopes import FetchRequest

STALE = FetchRequest(
    payment_key="mollie:main:payment:tr_1",
    provider="mollie",
    account="main",
    object_type="payment",
    object_id="tr_1",
    reason="stale",
    not_before="2030-01-01T06:00:00.000Z",
    requested_at="2030-01-01T00:00:00.000Z",
    request_id="tr_1:stale:3",
)


def test_stale_polls_of_one_payment_share_one_slot() -> None:
    newer = replace(STALE, request_id="tr_1:stale:4", not_before="2030-01-02T00:00:00.000Z")
    assert store_key(STALE) == store_key(newer) == "mollie:main:payment:tr_1|stale"


def test_other_requests_are_keyed_by_request_and_attempt() -> None:
    retry = replace(STALE, reason="thin_push", request_id="dlv_9:fetch", attempt=3)
    assert store_key(retry) == "mollie:main:payment:tr_1|dlv_9:fetch|3"
    assert store_key(replace(retry, attempt=4)) != store_key(retry)
    assert store_key(replace(retry, payment_key="mollie:main:payment:tr_2")) != store_key(retry)


def test_due_at_is_the_not_before_time() -> None:
    assert due_at(STALE) == 1893477600.0


def test_a_not_before_that_is_no_time_is_malformed() -> None:
    with pytest.raises(NormalizationError):
        due_at(replace(STALE, not_before="soon"))
