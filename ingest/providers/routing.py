"""The one routing function: which payment a record is about, so that it is published under that payment's key.

Everything about one payment lands in one partition as it is published (DESIGN §4.2): ingest keys each verified
delivery (``payments.inbox.v1``) by the payment key this function gives, the fetcher keys each result by the
payment it was asked about, and the processor — one stateful stage over both topics — applies a record's inputs
where the record is, and redirects the rare input about another payment (the other items of a legacy Adyen
batch, a Refund filed under its Charge, a replay of a record published before this rule) inside the same
transaction.

The answer comes from the provider parsers themselves (:mod:`ingest.providers.parsing`), so it can never
disagree with what the processor reads:

* an event (thick push): the payment of its first observation;
* a thin push or a hint: the object it names (the fetcher gets that object, and the request is keyed by it);
* a checkout's synchronous report: the payment it names.

``None`` when the record names no payment: an event its catalog ignores, or a body the parser refuses (the
processor dead-letters it); such records keep the delivery's own key (:attr:`InboxEnvelope.key`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from ingest.providers import parsing
from ingest.providers.catalog import silent
from paystream.config import AccountConfig
from paystream.errors import NormalizationError
from schemas.envelopes import DeliveryKind
from schemas.observation import payment_key
from schemas.status import Source

_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # the parse needs a receipt time; the key does not depend on it


def delivery_payment_key(provider: str, account: str, kind: DeliveryKind, body: bytes,
                         account_config: AccountConfig | None) -> str | None:
    """The payment key of a verified delivery, or ``None`` when it names no payment."""
    try:
        if kind == "event":
            with silent():  # ingest only asks: the processor counts what it ignores
                observations = parsing.parse(provider, body, account=account, account_config=account_config,
                                             source=Source.PUSH, evidence_id="routing", observed_at=_ANY_TIME,
                                             object_kind="event")
            return observations[0].payment_key if observations else None
        if kind in ("thin", "hint"):
            targets = parsing.thin_targets(provider, body)
            return payment_key(provider, account, targets[0].object_type, targets[0].object_id) if targets else None
        if kind == "sync":
            request = orjson.loads(body)
            return payment_key(provider, account, str(request["object_type"]), str(request["object_id"]))
    except (NormalizationError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return None
