"""docs/consumers.md's decision table against the status model (schemas/status.py) and the example's code.

Every payment status, agreement status and signal has exactly one row; for the status rows, the example
columns say what deploy/local/fulfillment_rules.py really decides for an order not yet shipped and for one
already shipped.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from paystream.consume import StatusEvent, parse_event
from schemas.event import serialize_event
from schemas.join import advance
from schemas.observation import Observation
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, RiskState, Source

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
from fulfillment_rules import ACTIONS, Order, decide  # noqa: E402

GUIDE = ROOT / "docs" / "consumers.md"
NOW = datetime(2025, 5, 1, 12, tzinfo=UTC)
NOTHING = "—"


def decision_table() -> dict[str, list[str]]:
    """Rows of the table under '## Decision table', by their first cell (without backticks)."""
    text = GUIDE.read_text()
    section = text.split("\n## Decision table\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, rule, *rows = lines
    assert "example: not shipped" in header and set(rule) <= set("|-")
    table: dict[str, list[str]] = {}
    for line in rows:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 5, line
        case = cells[0].strip("`")
        assert case not in table, f"two rows for {case}"
        table[case] = cells[1:]
    return table


def required_cases() -> set[str]:
    refunds = {str(state) for state in MoneyState} - {MoneyState.SUCCEEDED} | {"partial", "full"}
    return ({f"status: {status}" for status in PaymentStatus}
            | {f"agreement: {status}" for status in AgreementStatus}
            | {f"risk: {state}" for state in RiskState}
            | {f"dispute: {state}" for state in DisputeState}
            | {f"refund: {state}" for state in refunds}
            # the money moves of transitions.json's amounts_only rows for captures
            | {"capture: failed", "capture: reversed"}
            | {"authorization: expiring"})


def actions(cell: str) -> list[str]:
    return [] if cell == NOTHING else re.findall(r"`([a-z_]+)`", cell)


def test_every_status_and_signal_has_a_row_and_nothing_else_does() -> None:
    table = decision_table()
    assert set(table) == required_cases(), (sorted(required_cases() - set(table)),
                                            sorted(set(table) - required_cases()))


def test_every_row_says_what_to_do_and_names_only_actions_the_example_has() -> None:
    for case, (shows, should, not_shipped, shipped) in decision_table().items():
        assert shows and should, case
        for cell in (not_shipped, shipped):
            assert cell == NOTHING or actions(cell), f"{case}: {cell!r}"
            assert set(actions(cell)) <= ACTIONS, f"{case}: {cell!r}"


def event_of(status: str) -> StatusEvent:
    """A valid event with ``status`` and amounts that fit it (built from a real one, then validated)."""
    kind = ObjectKind.AGREEMENT if status in set(AgreementStatus) else ObjectKind.PAYMENT
    first = advance(None, Observation(
        provider="adyen", account="main", object_type="payment", object_id="P1", kind=kind,
        status=PaymentStatus.AUTHORIZED if kind is ObjectKind.PAYMENT else AgreementStatus.ACTIVE,
        provider_status="x", source=Source.PUSH, evidence_id="e1", occurred_at=NOW, observed_at=NOW, amount=1000,
        currency="EUR"), NOW).event
    assert first is not None
    raw: dict[str, Any] = orjson.loads(serialize_event(first))
    amounts = {"partially_captured": (400, 0, 0), "partially_refunded": (1000, 300, 0), "refunded": (1000, 1000, 0),
               "disputed": (1000, 0, 1000), "charged_back": (1000, 0, 1000), "authorized": (0, 0, 0),
               "pending": (0, 0, 0), "requires_action": (0, 0, 0), "failed": (0, 0, 0), "canceled": (0, 0, 0)}
    captured, refunded, disputed = amounts.get(status, (1000, 0, 0))
    raw["data"].update(status=status, previous_status=None, sequence=2, captured_amount=captured,
                       refunded_amount=refunded, disputed_amount=disputed)
    return parse_event(orjson.dumps(raw))


SHIPPED = Order("order-1", "adyen:main:payment:P1", state="released", released=True, status="captured")


@pytest.mark.parametrize("status", [*PaymentStatus, *AgreementStatus], ids=str)
def test_the_example_columns_are_what_the_example_decides(status: str) -> None:
    kind = "agreement" if status in set(AgreementStatus) else "status"
    _, _, not_shipped, shipped = decision_table()[f"{kind}: {status}"]
    event = event_of(status)
    window = timedelta(hours=1)  # no expiry on these events: no capture notice
    assert [d.action for d in decide(None, event, NOW, window)[1]] == actions(not_shipped)
    assert [d.action for d in decide(SHIPPED, event, NOW, window)[1]] == actions(shipped)
