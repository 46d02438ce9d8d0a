"""Canonical statuses (DESIGN §4.3). Every provider module maps its own words onto these explicitly."""

from __future__ import annotations

from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    PARTIALLY_CAPTURED = "partially_captured"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELED = "canceled"
    FAILED = "failed"
    DISPUTED = "disputed"
    CHARGED_BACK = "charged_back"


class AgreementStatus(StrEnum):
    """Stored payment method / mandate / Amazon Pay Charge Permission."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Source(StrEnum):
    """Where the deciding observation came from."""

    PUSH = "push"
    POLL = "poll"
    SYNC = "sync"
    REPLAY = "replay"
    MANUAL = "manual"


class ObjectKind(StrEnum):
    PAYMENT = "payment"
    AGREEMENT = "agreement"


class MoneyState(StrEnum):
    """The state of one capture or refund, by its own id (DESIGN §4.3: a refund counts by its own outcome).

    Only ``succeeded`` counts in ``captured_amount`` / ``refunded_amount``: pending money has not moved yet,
    and failed, canceled or reversed money came back."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    REVERSED = "reversed"


class DisputeState(StrEnum):
    """One dispute (inquiry, chargeback, pre-arbitration...) of a payment, by its own id."""

    OPEN = "open"  # the cardholder's bank asked; funds may be withdrawn; the merchant can still win
    WON = "won"  # closed in the merchant's favour (or prevented / withdrawn): the money stays
    LOST = "lost"  # closed against the merchant: the money went back to the cardholder


class RiskState(StrEnum):
    """One risk signal (fraud warning, review) on a payment. Fulfillment holds a shipment while any signal
    is ``open`` or ``confirmed``; the payment's status does not change."""

    OPEN = "open"  # a warning or a review that nobody closed yet
    CLEARED = "cleared"  # reviewed and accepted, or a warning withdrawn
    CONFIRMED = "confirmed"  # reviewed and rejected, or fraud reported by the issuer
