"""The current-state document of a payment (value of ``payments.state.v1``, compacted, key = payment key).

One record per payment holds what a new consumer needs to start without reading the history, and what
operators need to see of payments that have no status event yet::

    {
      "payment_key": "...", "provider": "...", "account": "...", "object_type": "...", "object_id": "...",
      "first_seen_at": "...",            # when paystream first heard of the payment
      "updated_at": "...",               # when this document was written
      "status": "captured" | null,       # the status of the latest event (null: none emitted yet)
      "parked": false,                   # observations are known but none says a status yet
      "polling": null | {"state": "active", "poll": 3, "next_poll_at": "..."}
                      | {"state": "ended", "reason": "not_found", "ended_at": "..."},
      "quarantined": null | {"reason": "...", "at": "...", "record_bytes": 123},
      "event": null | {...}              # the latest payments.status.v1 event, as emitted
    }

The document is written in the same transaction as the event or the chain change that moved it, and only when
something in it (but ``updated_at``) changed. JSON Schema: ``schemas/payment-state.schema.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from processors.payment_record import PaymentRecord
from processors.scheduling import PollSchedule
from schemas.envelopes import to_rfc3339

CONTENT_TYPE = b"application/json"


def _time(unix_s: float) -> str:
    return to_rfc3339(datetime.fromtimestamp(unix_s, UTC))


def signature(record: PaymentRecord | None) -> tuple[object, ...] | None:
    """What the document shows of a record (cheap to compare: decides whether to write it again)."""
    if record is None:
        return None
    state = record.state
    chain = record.chain
    return (record.last_event, None if chain is None else (chain.since, chain.poll), record.polling_ended,
            record.quarantine, state is not None and state.status is None)


def document(key: str, record: PaymentRecord, schedule: PollSchedule, now: datetime) -> bytes:
    provider, account, object_type, object_id = key.split(":", 3)
    state, chain, ended, quarantine = record.state, record.chain, record.polling_ended, record.quarantine
    polling: dict[str, Any] | None = None
    if chain is not None:
        due = max(chain.since + schedule.offset_of(chain.poll), now.timestamp())
        polling = {"state": "active", "poll": chain.poll, "next_poll_at": _time(due)}
    elif ended is not None:
        polling = {"state": "ended", "reason": ended[0], "ended_at": _time(ended[1])}
    emitted = state.emitted if state is not None else None
    return orjson.dumps({
        "payment_key": key, "provider": provider, "account": account, "object_type": object_type,
        "object_id": object_id, "first_seen_at": _time(record.first_seen), "updated_at": to_rfc3339(now),
        "status": None if emitted is None else str(emitted.status),
        "parked": state is not None and state.status is None,
        "polling": polling,
        "quarantined": None if quarantine is None else {
            "reason": quarantine.reason, "at": _time(quarantine.at), "record_bytes": quarantine.record_bytes},
        "event": None if record.last_event is None else orjson.Fragment(record.last_event),
    })
