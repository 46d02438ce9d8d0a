"""The transition table as data: its rows, its ranks, and the checks made when it is loaded."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from paystream.errors import ConfigurationError
from schemas.status import AgreementStatus as A
from schemas.status import PaymentStatus as P
from schemas.status import Source
from schemas.transitions import TABLE, TABLE_PATH, is_allowed, progress_rank, table_from_document


def _document() -> dict[str, Any]:
    return json.loads(TABLE_PATH.read_text(encoding="utf-8"))


def test_every_status_has_a_rank() -> None:
    assert set(TABLE.ranks) == set(P) | set(A)


def test_ranks_follow_the_main_lifecycle() -> None:
    chain = [P.PENDING, P.REQUIRES_ACTION, P.AUTHORIZED, P.PARTIALLY_CAPTURED, P.CAPTURED,
             P.PARTIALLY_REFUNDED, P.REFUNDED, P.DISPUTED, P.CHARGED_BACK]
    assert [progress_rank(s) for s in chain] == sorted(progress_rank(s) for s in chain)
    assert len({progress_rank(s) for s in chain}) == len(chain)


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        (P.PENDING, P.AUTHORIZED),
        (P.PENDING, P.CAPTURED),
        (P.PENDING, P.FAILED),
        (P.REQUIRES_ACTION, P.PENDING),
        (P.AUTHORIZED, P.PARTIALLY_CAPTURED),
        (P.AUTHORIZED, P.CANCELED),
        (P.PARTIALLY_CAPTURED, P.CAPTURED),
        (P.CAPTURED, P.PARTIALLY_REFUNDED),
        (P.CAPTURED, P.REFUNDED),
        (P.CAPTURED, P.DISPUTED),
        (P.PARTIALLY_REFUNDED, P.REFUNDED),
        (A.ACTIVE, A.SUSPENDED),
        (A.SUSPENDED, A.ACTIVE),
        (A.ACTIVE, A.CLOSED),
        (A.SUSPENDED, A.CLOSED),
    ],
)
def test_forward_moves_are_allowed_from_every_source(current: P | A, proposed: P | A) -> None:
    assert all(is_allowed(current, proposed, source) for source in Source)


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        (P.FAILED, P.CAPTURED),
        (P.DISPUTED, P.CAPTURED),
        (P.DISPUTED, P.CHARGED_BACK),
        (P.CHARGED_BACK, P.CAPTURED),
    ],
)
def test_late_moves_are_allowed_from_the_provider_or_an_operator(current: P, proposed: P) -> None:
    assert is_allowed(current, proposed, Source.PUSH)
    assert is_allowed(current, proposed, Source.POLL)
    assert is_allowed(current, proposed, Source.REPLAY)
    assert is_allowed(current, proposed, Source.MANUAL)


def test_a_checkout_sync_result_cannot_revive_a_failed_payment() -> None:
    assert not is_allowed(P.FAILED, P.CAPTURED, Source.SYNC)


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        (P.CAPTURED, P.PENDING),
        (P.CAPTURED, P.AUTHORIZED),
        (P.CAPTURED, P.FAILED),
        (P.REFUNDED, P.CAPTURED),
        (P.REFUNDED, P.PARTIALLY_REFUNDED),
        (P.CANCELED, P.AUTHORIZED),
        (P.AUTHORIZED, P.PENDING),
        (A.CLOSED, A.ACTIVE),
    ],
)
def test_regressions_are_not_in_the_table(current: P | A, proposed: P | A) -> None:
    assert not any(is_allowed(current, proposed, source) for source in Source)


def test_moves_across_the_payment_and_agreement_models_are_never_allowed() -> None:
    assert not is_allowed(P.CAPTURED, A.CLOSED, Source.MANUAL)


def test_staying_in_the_same_status_is_a_confirmation() -> None:
    assert is_allowed(P.REFUNDED, P.REFUNDED, Source.SYNC)


def test_the_shipped_document_loads_to_the_same_table() -> None:
    assert table_from_document(_document()) == TABLE


def test_unknown_status_word_is_rejected() -> None:
    document = _document()
    document["payment"]["moves"][0]["to"].append("settled")
    with pytest.raises(ConfigurationError, match="settled"):
        table_from_document(document)


def test_status_without_rank_is_rejected() -> None:
    document = _document()
    del document["payment"]["rank"]["disputed"]
    with pytest.raises(ConfigurationError, match="disputed"):
        table_from_document(document)


def test_same_move_listed_twice_is_rejected() -> None:
    document = _document()
    document["payment"]["moves"].append(copy.deepcopy(document["payment"]["moves"][0]))
    with pytest.raises(ConfigurationError, match="listed twice"):
        table_from_document(document)


def test_unknown_source_group_is_rejected() -> None:
    document = _document()
    document["payment"]["moves"][0]["sources"] = "everyone"
    with pytest.raises(ConfigurationError, match="everyone"):
        table_from_document(document)


def test_move_to_itself_is_rejected() -> None:
    document = _document()
    document["agreement"]["moves"].append({"from": ["closed"], "to": ["closed"], "sources": "any"})
    with pytest.raises(ConfigurationError, match="not a move"):
        table_from_document(document)


def test_agreement_status_in_a_payment_row_is_rejected() -> None:
    document = _document()
    document["payment"]["moves"][0]["to"].append("closed")
    with pytest.raises(ConfigurationError, match="closed"):
        table_from_document(document)
