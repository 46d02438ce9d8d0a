"""Rendered log lines never carry secrets or card numbers."""

from __future__ import annotations

import io
import sys

import orjson
import pytest
from pydantic import SecretStr

from paystream import logs


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure(level="info", fmt="json")
    yield buffer
    logs.configure(level="info", fmt="json")


def test_lines_are_json_with_bound_context(rendered: io.StringIO) -> None:
    import structlog

    with structlog.contextvars.bound_contextvars(delivery_id="evt_1"):
        logs.get_logger("t").info("delivery_rejected", reason="bad_signature")
    line = orjson.loads(rendered.getvalue().splitlines()[-1])
    assert line["event"] == "delivery_rejected"
    assert line["delivery_id"] == "evt_1"
    assert line["level"] == "info"


def test_secrets_and_card_numbers_are_masked(rendered: io.StringIO) -> None:
    logs.get_logger("t").info(
        "oops",
        webhook_secret="whsec_topsecret",
        account={"api_key": "sk_live_123", "name": "main"},
        body='{"card": "4242 4242 4242 4242", "order": "1234567"}',
        key=SecretStr("hidden-value"),
    )
    text = rendered.getvalue()
    for leaked in ("whsec_topsecret", "sk_live_123", "4242 4242 4242 4242", "hidden-value"):
        assert leaked not in text
    assert "1234567" in text  # short numbers that are not card numbers stay readable
    assert '"name":"main"' in text
