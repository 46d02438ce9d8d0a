"""The toy fulfillment service's decisions (docs/consumers.md, "Decision table"), as a pure function.

:func:`decide` looks at an order as the service last left it and the payment's newest event, and says what
to do now. It is level-triggered: it reads the state the event shows (status, amounts, risk), not the step
from the previous event, so an order comes out right whether the service saw every event or bootstrapped
from a snapshot in the middle. Two rules hold whatever arrives:

* an order is released (shipped) at most once — ``released`` never goes back to False;
* a decision that needs a person (intercept, defend, review) is asked for once per episode;
* a new derivation epoch (a rebuild) replays the payment from its start: the service stays quiet until the new
  epoch is back at the status where the old one ended (docs/consumers.md, "A new epoch").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from paystream.consume import StatusEvent

SHIPPABLE = frozenset({"authorized", "partially_captured", "captured", "partially_refunded"})
WAITING = frozenset({"pending", "requires_action"})
STOPPED = frozenset({"failed", "canceled"})  # the payment never completed
TAKEN_BACK = frozenset({"refunded", "charged_back"})  # the money went back to the customer
AGREEMENT_ACTIONS = {"active": "renewals_on", "suspended": "renewals_paused", "closed": "renewals_stopped"}
# Every action the service can take (the decision table's "example" columns name only these).
ACTIONS = frozenset({"release", "hold", "intercept", "defend", "dispute_won", "partial_refund", "refund_failed",
                     "review", "reverse", "cancel", "capture_due", *AGREEMENT_ACTIONS.values()})


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the service keeps it. ``state``: new, waiting, held, released, reversed, canceled."""

    order_id: str
    payment_key: str
    state: str = "new"
    released: bool = False  # shipped once; never again
    status: str | None = None  # the payment status of the last event applied
    refunded_amount: int = 0
    dispute_open: bool = False
    intercepted: bool = False
    capture_noticed: bool = False
    authorization_expires_at: datetime | None = None
    epoch: int = 0  # the derivation epoch of the last event applied
    catch_up: str | None = None  # a new epoch replays the payment: act again once it reaches this status


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    why: str


def order_id_of(event: StatusEvent) -> str:
    """The merchant's order reference when the payment carries one, else the payment itself."""
    return event.data.order_ref or event.payment_key


def decide(order: Order | None, event: StatusEvent, now: datetime,
           capture_window: timedelta) -> tuple[Order, list[Decision]]:
    if event.is_agreement:
        return _agreement(order, event)
    data = event.data
    before = order or Order(order_id_of(event), event.payment_key, epoch=data.epoch)
    if data.epoch > before.epoch:
        # A rebuild derives the payment again from its first observation: its new epoch passes through
        # statuses the order has left. Nothing is news until it is back where the old epoch ended.
        before = replace(before, epoch=data.epoch, catch_up=before.status)
    if before.catch_up is not None:
        if data.status != before.catch_up:
            return before, []
        before = replace(before, catch_up=None)
    decisions: list[Decision] = []
    after = _money(before, event, decisions)
    after = replace(after, status=data.status, refunded_amount=data.refunded_amount or 0,
                    authorization_expires_at=data.authorization_expires_at)
    notice = capture_notice(after, now, capture_window)
    if notice is not None:
        after, decision = notice
        decisions.append(decision)
    return after, decisions


def _money(order: Order, event: StatusEvent, out: list[Decision]) -> Order:
    data = event.data
    status, refunded = data.status, data.refunded_amount or 0
    on_hold = data.risk is not None and data.risk.hold
    if status in STOPPED or status in TAKEN_BACK:
        if order.state == "released":
            out.append(Decision("reverse", f"{status} after shipping: recall the parcel or recover the goods"))
            return replace(order, state="reversed")
        if order.state in ("new", "waiting", "held"):
            out.append(Decision("cancel", f"{status}: do not ship"))
            return replace(order, state="canceled")
        return order
    if status == "disputed":
        if order.released and not order.dispute_open:
            out.append(Decision("defend", "dispute open on a shipped order: send proof of delivery"))
        elif order.state in ("new", "waiting"):
            out.append(Decision("hold", "dispute open: do not ship"))
            order = replace(order, state="held")
        return replace(order, dispute_open=True)
    if on_hold:
        if order.released and not order.intercepted:
            out.append(Decision("intercept", "risk signal on a shipped order: stop the parcel if still possible"))
            return replace(order, intercepted=True)
        if order.state in ("new", "waiting"):
            out.append(Decision("hold", "risk signal open or confirmed: do not ship"))
            return replace(order, state="held")
        return order
    if status in WAITING:
        return replace(order, state="waiting") if order.state == "new" else order
    # SHIPPABLE, no hold.
    if order.dispute_open and not data.disputed_amount:
        out.append(Decision("dispute_won", "dispute closed in the merchant's favour: nothing to recover"))
        order = replace(order, dispute_open=False)
    if order.state in ("canceled", "reversed") and (order.status in TAKEN_BACK or order.released):
        # The money came back to the merchant after the order was stopped for it (a refund failed, a
        # chargeback was reversed, a failed payment succeeded after shipping was recalled).
        if order.status in TAKEN_BACK or order.status in STOPPED:
            out.append(Decision("review", f"{status} again after the order was {order.state}: a person decides "
                                          "(the customer may still be owed a refund); never ship automatically"))
        return order
    if not order.released:
        out.append(Decision("release", f"{status}: ship"))
        order = replace(order, state="released", released=True)
    if refunded > order.refunded_amount and status == "partially_refunded":
        out.append(Decision("partial_refund", f"refunded {refunded} of {data.amount}: drop or take back those items"))
    elif refunded < order.refunded_amount:
        out.append(Decision("refund_failed", f"refunded amount fell to {refunded}: the customer is still owed "
                                             "the refund (customer service)"))
    return replace(order, intercepted=False)


def capture_notice(order: Order, now: datetime, window: timedelta) -> tuple[Order, Decision] | None:
    """An authorisation that lapses within ``window`` and nobody captured yet: capture it (shipped orders) or
    decide (held orders) before it lapses. Asked once per order."""
    expires = order.authorization_expires_at
    if order.status != "authorized" or expires is None or order.capture_noticed or expires - now > window:
        return None
    what = "capture now" if order.released else "capture or cancel"
    return replace(order, capture_noticed=True), Decision("capture_due", f"{what} before {expires:%Y-%m-%d %H:%M}Z")


def _agreement(order: Order | None, event: StatusEvent) -> tuple[Order, list[Decision]]:
    before = order or Order(event.payment_key, event.payment_key)
    after = replace(before, status=event.status, state=event.status)
    if before.status == event.status:
        return after, []
    return after, [Decision(AGREEMENT_ACTIONS[event.status], f"agreement {event.status}")]
