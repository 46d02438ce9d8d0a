"""The body of POST /v1/observations, as its JSON Schema accepts and refuses it."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError

from schemas.event import load_schema

VALIDATOR = Draft202012Validator(load_schema("observation-request"), format_checker=FormatChecker())


def body(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "provider": "stripe",
        "account": "eu-main",
        "object_type": "payment_intent",
        "object_id": "pi_3Mtw",
        "order_ref": "order-42",
        "state": {"provider_status": "succeeded", "amount": 1000, "currency": "EUR",
                  "occurred_at": "2025-03-01T12:00:00Z"},
        "request_id": "req-1",
    }
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def test_a_full_sync_result_is_accepted() -> None:
    VALIDATOR.validate(body())


def test_a_poll_registration_without_state_is_accepted() -> None:
    VALIDATOR.validate(body(state=None, order_ref=None, register_poll=True))


def test_missing_request_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="request_id"):
        VALIDATOR.validate(body(request_id=None))


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(provider="paypal"))


def test_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(status="captured"))


def test_neither_state_nor_poll_registration_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state=None))


def test_poll_registration_set_to_false_without_state_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state=None, register_poll=False))


def test_state_without_provider_status_is_refused() -> None:
    with pytest.raises(ValidationError, match="provider_status"):
        VALIDATOR.validate(body(state={"amount": 1000}))


def test_state_with_a_canonical_status_field_is_refused() -> None:
    # Checkout reports the provider's word; mapping it is the provider module's job.
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state={"provider_status": "succeeded", "status": "captured"}))


def test_negative_amount_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state={"provider_status": "succeeded", "amount": -1}))


def test_lower_case_currency_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state={"provider_status": "succeeded", "currency": "eur"}))


def test_invalid_occurred_at_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(state={"provider_status": "succeeded", "occurred_at": "yesterday"}))


def test_account_with_a_slash_is_refused() -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(body(account="eu/main"))
