"""Adyen payments with a known life, for the fulfillment example's tests: what paystream emits for each
(the statuses), and what the example must decide when it follows every event (``live``) or first meets the
payment in the state topic's snapshot, at its final state (``snapshot``).

The deliveries are real Adyen NotificationRequestItems (ingest/providers/adyen/parse.py reads them); each
payment's deliveries share one inbox partition so the processor sees them in order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.append(str(Path(__file__).resolve().parents[1] / "processors"))
from processor_harness import delivery_id_in, envelope, inbox_partition

from schemas.envelopes import InboxEnvelope

AMOUNT = 1000


@dataclass(frozen=True)
class Step:
    code: str
    psp_suffix: str = ""  # the item's own pspReference is the payment's plus this (modifications)
    value: int = AMOUNT
    success: str = "true"
    referenced: bool = True  # modifications name their payment in originalReference
    additional: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    statuses: tuple[str, ...]  # what paystream emits, in order
    live: tuple[str, ...]  # the example's decisions when it sees every event
    snapshot: tuple[str, ...]  # ... when it first sees the payment's final state
    agreement: bool = False


AUTH = Step("AUTHORISATION", referenced=False)
CAPTURE = Step("CAPTURE", "C")
REVIEW_REJECTED = Step("MANUAL_REVIEW_REJECT", referenced=False)
SCENARIOS = (
    Scenario("ship", (AUTH, CAPTURE), ("authorized", "captured"), ("release",), ("release",)),
    Scenario("auth_only", (AUTH,), ("authorized",), ("release",), ("release",)),
    Scenario("refund_full", (AUTH, CAPTURE, Step("REFUND", "R")), ("authorized", "captured", "refunded"),
             ("release", "reverse"), ("cancel",)),
    Scenario("refund_partial", (AUTH, CAPTURE, Step("REFUND", "R", 300)),
             ("authorized", "captured", "partially_refunded"), ("release", "partial_refund"),
             ("release", "partial_refund")),
    Scenario("refund_failed", (AUTH, CAPTURE, Step("REFUND", "R"), Step("REFUND_FAILED", "R")),
             ("authorized", "captured", "refunded", "captured"), ("release", "reverse", "review"), ("release",)),
    Scenario("failed", (Step("AUTHORISATION", success="false", referenced=False),), ("failed",), ("cancel",),
             ("cancel",)),
    Scenario("canceled", (AUTH, Step("CANCELLATION", "X")), ("authorized", "canceled"), ("release", "reverse"),
             ("cancel",)),
    Scenario("dispute_lost", (AUTH, CAPTURE, Step("NOTIFICATION_OF_CHARGEBACK", "D"),
                              Step("DISPUTE_DEFENSE_PERIOD_ENDED", "E")),
             ("authorized", "captured", "disputed", "charged_back"), ("release", "defend", "reverse"), ("cancel",)),
    Scenario("dispute_won", (AUTH, CAPTURE, Step("NOTIFICATION_OF_CHARGEBACK", "D"), Step("CHARGEBACK_REVERSED", "W")),
             ("authorized", "captured", "disputed", "captured"), ("release", "defend", "dispute_won"), ("release",)),
    Scenario("risk_then_cancel", (REVIEW_REJECTED, AUTH, Step("CANCELLATION", "X")), ("authorized", "canceled"),
             ("hold", "cancel"), ("cancel",)),
    Scenario("risk_cleared", (REVIEW_REJECTED, AUTH, Step("MANUAL_REVIEW_ACCEPT", referenced=False)),
             ("authorized", "authorized"), ("hold", "release"), ("release",)),
    Scenario("risk_after_shipping", (AUTH, CAPTURE, Step("NOTIFICATION_OF_FRAUD", "F")),
             ("authorized", "captured", "captured"), ("release", "intercept"), ("hold",)),
    Scenario("agreement", (Step("RECURRING_CONTRACT", referenced=False),), ("active",), ("renewals_on",),
             ("renewals_on",), agreement=True),
)


def item(payment: str, step: Step, minute: int) -> bytes:
    body: dict[str, Any] = {
        "pspReference": payment + step.psp_suffix, "merchantAccountCode": "M", "merchantReference": f"order-{payment}",
        "amount": {"currency": "EUR", "value": step.value}, "eventCode": step.code, "success": step.success,
        "eventDate": f"2025-05-01T10:{minute:02d}:00+00:00", "additionalData": dict(step.additional)}
    if step.referenced:
        body["originalReference"] = payment
    return orjson.dumps(body)


def deliveries(scenario: Scenario, payment: str, partitions: int) -> list[InboxEnvelope]:
    partition = inbox_partition("adyen", "main", payment, partitions)
    return [envelope("adyen", "main", delivery_id_in(partition, partitions, "adyen", "main", f"{payment}:{n}"),
                     item(payment, step, minute=n + 1)) for n, step in enumerate(scenario.steps)]


def order_of(scenario: Scenario, payment: str) -> str:
    """The order id the example keys its decisions by."""
    return f"adyen:main:recurring_contract:{payment}" if scenario.agreement else f"order-{payment}"


def payment_key(scenario: Scenario, payment: str) -> str:
    return f"adyen:main:{'recurring_contract' if scenario.agreement else 'payment'}:{payment}"
