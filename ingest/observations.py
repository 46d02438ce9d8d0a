"""``POST /v1/observations``: a checkout service's synchronous result or a poll registration.

The caller authenticates with a bearer token from configuration; the body is validated against
``schemas/observation-request.schema.json`` and published to the inbox as a ``sync`` delivery whose id
is the caller's idempotency key, so a retried request is one observation downstream.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker

from ingest.accounts import AccountBook
from paystream.config import Settings, resolve_secret
from paystream.errors import MalformedDelivery, Unauthorized
from schemas.envelopes import InboxEnvelope, to_rfc3339
from schemas.event import load_schema
from schemas.observation import payment_key

_VERIFIER = "bearer-token"


class ObservationIntake:
    def __init__(self, settings: Settings, accounts: AccountBook) -> None:
        self._tokens = [resolve_secret(ref).get_secret_value().encode() for ref in settings.observation_tokens]
        self._accounts = accounts
        # Only the format the schema uses: loading every format checker costs ~5 s of start-up.
        self._validator = Draft202012Validator(
            load_schema("observation-request"), format_checker=FormatChecker(formats=["date-time"])
        )

    def authenticate(self, authorization: str | None) -> str:
        """The matching token's position (its key id); :class:`Unauthorized` otherwise."""
        if not self._tokens:
            raise Unauthorized("no observation tokens are configured", code="no_token_configured")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token", code="missing_token")
        presented = token.strip().encode()
        matches = [hmac.compare_digest(presented, known) for known in self._tokens]  # check all: constant time
        if not any(matches):
            raise Unauthorized("invalid bearer token", code="bad_token")
        return f"token[{matches.index(True)}]"

    def envelope(self, body: bytes, *, received_at: float, key_id: str | None = None) -> InboxEnvelope:
        request = self._parse(body)
        account = self._accounts.require(request["provider"], request["account"])
        return InboxEnvelope(
            provider=account.provider,
            account=account.name,
            delivery_id=f"sync:{request['request_id']}",
            kind="sync",
            received_at=to_rfc3339(datetime.fromtimestamp(received_at, UTC)),
            body=body,
            headers={},
            verification={"verifier": _VERIFIER, "key_id": key_id, "ok": True},
            object_ids={"object_type": request["object_type"], "object_id": request["object_id"]},
            payment_key=payment_key(account.provider, account.name, request["object_type"], request["object_id"]),
        )

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedDelivery(f"body is not JSON: {exc}", code="malformed_json") from exc
        error = next(iter(sorted(self._validator.iter_errors(request), key=lambda e: e.path)), None)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "body"
            raise MalformedDelivery(f"{where}: {error.message}"[:300], code="schema_violation")
        assert isinstance(request, dict)
        return request
