"""Store keys, due times and the slot ordering of the delayed store (ingest/fetch/delayed_slots.py), and the
same ordering when a partition is loaded; without a broker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.fetch.delayed_slots import Loaded, due_at, fold, replaces, store_key
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


def test_a_retry_has_its_own_key() -> None:
    thin = replace(STALE, reason="thin_push", request_id="dlv_9:fetch")
    keys = {store_key(thin), store_key(replace(thin, retry=1)), store_key(replace(thin, retry=2))}
    assert keys == {"mollie:main:payment:tr_1|dlv_9:fetch|1", "mollie:main:payment:tr_1|dlv_9:fetch|1|1",
                    "mollie:main:payment:tr_1|dlv_9:fetch|1|2"}
    # A stale retry stays in its payment's slot: the slot's ordering decides between the links.
    assert store_key(replace(STALE, retry=3)) == store_key(STALE)


# --- which request holds a stale slot (issue 18 #3a) --------------------------------------------------------
LINK_5 = replace(STALE, request_id="tr_1:stale:5", attempt=5, chain_version=5)
LINK_6 = replace(STALE, request_id="tr_1:stale:1", attempt=1, chain_version=6, not_before="2030-01-01T07:00:00.000Z")


def test_a_newer_link_replaces_an_older_one() -> None:
    assert replaces(LINK_6, LINK_5)


def test_a_retry_of_an_older_link_never_replaces_the_newer_link() -> None:
    for retry in (1, 2, 5):  # however often it was retried, and however late it arrives
        late_retry = replace(LINK_5, retry=retry, not_before="2030-01-03T00:00:00.000Z")
        assert not replaces(late_retry, LINK_6)
        assert replaces(LINK_6, late_retry)


def test_within_one_link_the_later_retry_wins_and_a_copy_of_an_earlier_try_does_not() -> None:
    first_retry, second_retry = replace(LINK_5, retry=1), replace(LINK_5, retry=2)
    assert replaces(first_retry, LINK_5)
    assert replaces(second_retry, first_retry)
    assert not replaces(LINK_5, first_retry)  # the original, read again after a crash
    # Re-published while the circuit was open (no try spent, a later not-before): the later arrival.
    assert replaces(replace(first_retry, not_before="2030-01-01T06:00:30.000Z"), first_retry)


def test_requests_without_a_version_keep_arrival_order() -> None:
    old_format = replace(LINK_5, chain_version=None)
    assert replaces(old_format, LINK_6)
    assert replaces(LINK_5, old_format)
    assert replaces(replace(old_format, request_id="tr_1:stale:4"), old_format)


# --- the same rule when a partition is loaded ------------------------------------------------------------------
KEY = store_key(LINK_5)


def loaded(*records: FetchRequest | None) -> dict[str, Loaded]:
    """Fold records of one key, in log order (None: a tombstone), as the load does."""
    latest: dict[str, Loaded] = {}
    for offset, record in enumerate(records):
        fold(latest, KEY, None if record is None else record.to_bytes(), offset)
    return latest


def test_at_load_an_older_link_written_after_a_newer_one_loses_and_the_winner_is_written_again() -> None:
    found = loaded(LINK_6, replace(LINK_5, retry=1))
    assert FetchRequest.from_bytes(found[KEY].raw) == LINK_6
    assert found[KEY].source_offset == 0
    # Compaction keeps only a key's last record: written again, the winner is that last record.
    assert found[KEY].rewrite


def test_at_load_log_order_stands_when_it_agrees_with_the_versions() -> None:
    found = loaded(LINK_5, LINK_6)
    assert FetchRequest.from_bytes(found[KEY].raw) == LINK_6 and not found[KEY].rewrite
    assert loaded(LINK_6, None) == {}  # a tombstone deletes whatever the key held
    found = loaded(LINK_6, None, LINK_5)  # after a tombstone, the slot is free for any link
    assert FetchRequest.from_bytes(found[KEY].raw) == LINK_5 and not found[KEY].rewrite


def test_at_load_records_without_versions_keep_log_order() -> None:
    found = loaded(LINK_6, replace(LINK_5, chain_version=None))
    assert FetchRequest.from_bytes(found[KEY].raw).chain_version is None and not found[KEY].rewrite
