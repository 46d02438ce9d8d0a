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
