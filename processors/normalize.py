"""Normalize: inbox envelopes and fetch results → inputs about single payments (pure, no Kafka).

* ``event`` (a thick push): the provider parser's observations, ``source=push`` (``replay`` when replayed).
* ``thin``: a fetch request per object the push names (``reason=thin_push``); no status is read from it.
* ``hint`` (unsigned, Mollie): a fetch request (``reason=hint``); never a status. Hints are not limited here:
  the fetcher coalesces them per object and runs them within the account's rate (nothing is dropped).
* ``sync`` (POST /v1/observations): the reported state as an observation with ``source=sync``, and a
  fetch request (``reason=registered``) when the checkout registered the payment to be polled.
* fetch results: with outcome ``ok`` the provider parser's observations, ``source=poll``; whatever the
  outcome, a :class:`~processors.payment_inputs.PolledInput` that moves the payment's stale-poll chain on —
  also when an ``ok`` body cannot be parsed (outcome ``unparseable``: the result goes to the DLQ, and the
  chain still moves on, so a bad body can never end a payment's polling).

Deliveries are deduplicated per payment by the reconcile stage: every input from a delivery carries a dedupe
id derived from the delivery id (the same bytes delivered again give the same ids). Replayed deliveries carry
none, so a replay after a state wipe re-applies them.

Every failure raises :class:`NormalizationError` (DLQ); nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ingest.providers import parsing as providers
from ingest.providers.parse_support import field_of, iso_time, load_object, optional_field
from paystream.config import AccountConfig, Settings
from paystream.errors import NormalizationError
from paystream.metrics import OBSERVATIONS, child
from processors.payment_inputs import FetchInput, ObservationInput, PaymentInput, PolledInput
from schemas.envelopes import FetchReason, FetchRequest, FetchResult, InboxEnvelope, from_rfc3339, to_rfc3339
from schemas.observation import Observation, payment_key
from schemas.status import Source
from schemas.transitions import kind_of


@dataclass(frozen=True, slots=True)
class Unparseable:
    """A fetch result whose ``ok`` body the parser refused: the chain still moves on (``polled``), the result
    goes to the DLQ with ``error``."""

    polled: PolledInput
    error: NormalizationError


class Normalizer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def account_config(self, provider: str, account: str) -> AccountConfig | None:
        return self.settings.account(provider, account)

    def inbox(self, envelope: InboxEnvelope, now: datetime) -> list[PaymentInput]:
        received_at = from_rfc3339(envelope.received_at)
        if envelope.kind == "event":
            source = Source.REPLAY if envelope.replay else Source.PUSH
            observations = providers.parse(
                envelope.provider, envelope.body, account=envelope.account,
                account_config=self.account_config(envelope.provider, envelope.account), source=source,
                evidence_id=envelope.delivery_id, observed_at=received_at, object_kind="event",
            )
            _count(observations)
            replayed = envelope.replay is not None
            return [ObservationInput(obs, None if replayed else f"{envelope.delivery_id}#{index}")
                    for index, obs in enumerate(observations)]
        if envelope.kind == "thin":
            return self._fetches(envelope, "thin_push", now)
        if envelope.kind == "hint":
            return self._fetches(envelope, "hint", now)
        if envelope.kind == "sync":
            return self._sync(envelope, received_at, now)
        raise NormalizationError(f"inbox envelope of unknown kind {envelope.kind!r}", reason="malformed_envelope")

    def fetch_result(self, result: FetchResult) -> list[PaymentInput] | Unparseable:
        polled = PolledInput(result.provider, result.account, result.object_type, result.object_id,
                             result.request_id, result.reason, result.attempt, result.outcome)
        if result.outcome != "ok":
            return [polled]  # the fetcher counts and retries its failures; nothing was observed
        try:
            observations = providers.parse(
                result.provider, result.body, account=result.account,
                account_config=self.account_config(result.provider, result.account), source=Source.POLL,
                evidence_id=result.fetch_id, observed_at=from_rfc3339(result.fetched_at),
                object_kind=result.object_kind,
            )
        except NormalizationError as exc:
            return Unparseable(replace(polled, outcome="unparseable"), exc)
        _count(observations)
        # The polled marker goes last: on the payment's partition it follows what the poll observed, so the
        # chain moves on from the state the poll left.
        return [*(ObservationInput(obs, None, result.reason) for obs in observations), polled]

    def _fetches(self, envelope: InboxEnvelope, reason: FetchReason, now: datetime) -> list[PaymentInput]:
        targets = providers.thin_targets(envelope.provider, envelope.body)
        stamp = to_rfc3339(now)
        # requested_at is when the announcement reached us, not when it was processed: a fetch sent after the
        # delivery was received reads state at least as new as what it announced, so a later copy of the
        # same delivery (a provider retry, a redelivery after a rebalance) is coalesced by the fetcher.
        requests = [
            FetchRequest(
                payment_key=payment_key(envelope.provider, envelope.account, target.object_type, target.object_id),
                provider=envelope.provider, account=envelope.account, object_type=target.object_type,
                object_id=target.object_id, reason=reason, not_before=stamp, requested_at=envelope.received_at,
                request_id=f"{envelope.delivery_id}:fetch" + (f":{index}" if index else ""),
                evidence_id=envelope.delivery_id,
            )
            for index, target in enumerate(targets)
        ]
        # A hint is not deduplicated by delivery: the fetcher coalesces hints per object instead.
        return [FetchInput(request, None if reason == "hint" else request.request_id) for request in requests]

    def _sync(self, envelope: InboxEnvelope, received_at: datetime, now: datetime) -> list[PaymentInput]:
        what = "sync observation"
        body = load_object(envelope.body, what)
        provider = field_of(body, "provider", str, what)
        account = field_of(body, "account", str, what)
        if (provider, account) != (envelope.provider, envelope.account):
            raise NormalizationError(f"{what}: body names {provider}/{account}, envelope "
                                     f"{envelope.provider}/{envelope.account}", reason="malformed_body")
        object_type = field_of(body, "object_type", str, what)
        object_id = field_of(body, "object_id", str, what)
        result: list[PaymentInput] = []
        state = body.get("state")
        if state is not None:
            if not isinstance(state, dict):
                raise NormalizationError(f"{what}: state is not an object", reason="malformed_body")
            observation = self._sync_observation(envelope, body, state, object_type, object_id, received_at)
            _count([observation])
            result.append(ObservationInput(observation, None if envelope.replay else f"{envelope.delivery_id}#0"))
        if body.get("register_poll") is True:
            stamp = to_rfc3339(now)
            request = FetchRequest(
                payment_key=payment_key(provider, account, object_type, object_id), provider=provider,
                account=account, object_type=object_type, object_id=object_id, reason="registered",
                not_before=stamp, requested_at=stamp, request_id=f"{envelope.delivery_id}:registered",
                evidence_id=envelope.delivery_id,
            )
            result.append(FetchInput(request, request.request_id))
        if not result:
            raise NormalizationError(f"{what}: neither state nor register_poll", reason="malformed_body")
        return result

    def _sync_observation(
        self, envelope: InboxEnvelope, body: dict[str, Any], state: dict[str, Any], object_type: str,
        object_id: str, received_at: datetime,
    ) -> Observation:
        what = "sync observation state"
        word = field_of(state, "provider_status", str, what)
        config = self.account_config(envelope.provider, envelope.account)
        status = providers.sync_status(envelope.provider, object_type, word, config)
        occurred = state.get("occurred_at")
        currency = optional_field(state, "currency", str, what)
        return Observation(
            provider=envelope.provider, account=envelope.account, object_type=object_type, object_id=object_id,
            kind=kind_of(status), status=status, provider_status=word, source=Source.SYNC,
            evidence_id=envelope.delivery_id,
            occurred_at=received_at if occurred is None else iso_time(occurred, what), observed_at=received_at,
            amount=optional_field(state, "amount", int, what), currency=currency.upper() if currency else None,
            order_ref=optional_field(body, "order_ref", str, "sync observation"),
        )


def _count(observations: list[Observation]) -> None:
    for obs in observations:
        child(OBSERVATIONS, obs.provider, obs.source.value).inc()
