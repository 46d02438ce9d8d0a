"""Reconcile (pure): dedupe per payment, the join around it, the stale-poll chain; the poll schedule; the
codecs of the internal topic and of the per-payment record; DLQ headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paystream.dlq import ERROR_CLASS, ERROR_REASON, FIRST_FAILURE_AT, SOURCE_OFFSET, dlq_headers
from paystream.errors import NormalizationError, UnknownProviderStatus
from paystream.metrics import DUPLICATES, MISSED_WEBHOOKS, PARKED
from processors import payment_inputs
from processors.payment_inputs import FetchInput, ObservationInput, PolledInput
from processors.payment_record import PaymentRecord, RecordCodec
from processors.reconcile import Reconciled, Reconciler
from processors.scheduling import Horizons, PollChain, PollSchedule, next_poll
from schemas.envelopes import FetchRequest, from_rfc3339
from schemas.observation import Movement, Observation
from schemas.status import ObjectKind, PaymentStatus, Source

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
KEY = "stripe:acct:payment_intent:pi_1"
SCHEDULE = PollSchedule([60, 300, 900], repeat_s=3600)
TTL_S = 30 * 86400


def movements(entries: dict[str, int]) -> dict[str, Movement]:
    return {key: Movement(value) for key, value in entries.items()}


def reconciler(pollable: tuple[str, ...] = ("stripe",)) -> Reconciler:
    return Reconciler(SCHEDULE, pollable, TTL_S)


def obs(status: PaymentStatus | None, evidence: str, minute: int, source: Source = Source.PUSH,
        provider: str = "stripe", observed_offset: int | None = None, **extra: Any) -> Observation:
    """Provider time ``minute`` minutes after T0, received 5 s later (or ``observed_offset`` s after T0)."""
    observed = T0 + (timedelta(minutes=minute, seconds=5) if observed_offset is None
                     else timedelta(seconds=observed_offset))
    for name in ("captures", "refunds"):
        if name in extra:
            extra[name] = movements(extra[name])
    return Observation(provider=provider, account="acct", object_type="payment_intent", object_id="pi_1",
                       kind=ObjectKind.PAYMENT, status=status, provider_status=str(status), source=source,
                       evidence_id=evidence, occurred_at=T0 + timedelta(minutes=minute, seconds=1),
                       observed_at=observed, **extra)


def pushed(status: PaymentStatus | None, evidence: str, minute: int, **extra: Any) -> ObservationInput:
    return ObservationInput(obs(status, evidence, minute, **extra), f"{evidence}#0")


def polled(request_id: str, attempt: int, outcome: str = "ok") -> PolledInput:
    return PolledInput("stripe", "acct", "payment_intent", "pi_1", request_id, "stale", attempt, outcome)


def fetch(request_id: str = "d-1:fetch", reason: str = "thin_push") -> FetchInput:
    stamp = "2024-05-01T10:00:00.000Z"
    return FetchInput(FetchRequest(payment_key=KEY, provider="stripe", account="acct", object_type="payment_intent",
                                   object_id="pi_1", reason=reason, not_before=stamp,  # type: ignore[arg-type]
                                   requested_at=stamp, request_id=request_id), request_id)


def run(inputs: list[Any], now: datetime = T0, rec: Reconciler | None = None) -> list[Reconciled]:
    rec = rec or reconciler()
    record = None
    results = []
    for item in inputs:
        result = rec(record, item, now)
        record = result.record
        results.append(result)
    return results


def stale_requests(result: Reconciled) -> list[FetchRequest]:
    return [r for r in result.fetch_requests if r.reason == "stale"]


# --- the join, dedupe and events -----------------------------------------------------------------------


def test_first_observation_emits_sequence_one() -> None:
    (result,) = run([pushed(PaymentStatus.PENDING, "e1", 0)])
    assert result.event is not None and result.event["data"]["sequence"] == 1
    assert result.changed and result.record.first_seen == T0.timestamp()


def test_a_redelivered_observation_is_a_duplicate_and_nothing_is_stored_or_emitted() -> None:
    before = DUPLICATES.labels("stripe")._value.get()
    first, again = run([pushed(PaymentStatus.AUTHORIZED, "e1", 0), pushed(PaymentStatus.AUTHORIZED, "e1", 0)])
    assert (again.event, again.changed, again.fetch_requests) == (None, False, [])
    assert again.record is first.record
    assert DUPLICATES.labels("stripe")._value.get() == before + 1


def test_observations_keep_no_delivery_ledger_the_join_recognises_them_by_content() -> None:
    # The ledger of delivery ids grew by 59 bytes per delivery for 31 days (issue 18): it is gone for
    # observations; a redelivery long after is still a duplicate because its content is.
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.AUTHORIZED, "e1", 0), T0)
    later = rec(first.record, pushed(PaymentStatus.AUTHORIZED, "e1", 0), T0 + timedelta(seconds=TTL_S + 1))
    assert (later.changed, later.event, first.record.seen) == (False, None, ())


def test_a_thin_push_is_new_again_after_the_dedupe_ttl_and_the_ledger_stays_bounded() -> None:
    rec = reconciler()
    record = rec(None, fetch("d-0:fetch"), T0).record
    for n in range(1, 100):
        record = rec(record, fetch(f"d-{n}:fetch"), T0).record
    assert len(record.seen) == 64 and record.seen[-1][0] == "d-99:fetch"
    later = rec(record, fetch("d-99:fetch"), T0 + timedelta(seconds=TTL_S + 1))
    assert [r.reason for r in later.fetch_requests] == ["thin_push"]


def test_replays_and_polls_are_not_deduplicated_by_delivery() -> None:
    replayed = ObservationInput(obs(PaymentStatus.AUTHORIZED, "e1", 0, Source.REPLAY), None)
    first, again = run([replayed, replayed])
    assert first.changed and again.record.seen == ()


def test_stale_regression_is_ignored() -> None:
    _, late = run([pushed(PaymentStatus.CAPTURED, "e1", 5), pushed(PaymentStatus.AUTHORIZED, "e2", 9)])
    assert late.event is None
    assert late.record.state is not None and late.record.state.status is PaymentStatus.CAPTURED


def test_observation_of_the_wrong_kind_raises_for_the_dlq() -> None:
    first = run([pushed(PaymentStatus.AUTHORIZED, "e1", 0)])[0]
    wrong = Observation(provider="stripe", account="acct", object_type="payment_intent", object_id="pi_1",
                        kind=ObjectKind.AGREEMENT, status=None, provider_status="x", source=Source.PUSH,
                        evidence_id="e9", occurred_at=T0, observed_at=T0)
    with pytest.raises(NormalizationError):
        reconciler()(first.record, ObservationInput(wrong, "e9#0"), T0)


def test_status_first_seen_by_a_stale_poll_counts_a_missed_webhook() -> None:
    before = MISSED_WEBHOOKS.labels("stripe")._value.get()
    run([pushed(PaymentStatus.PENDING, "e1", 0),
         ObservationInput(obs(PaymentStatus.CAPTURED, "f1", 9, Source.POLL), None, "stale")])
    assert MISSED_WEBHOOKS.labels("stripe")._value.get() == before + 1


def test_an_early_amount_only_observation_is_parked_then_applied() -> None:
    before = PARKED.labels("stripe")._value.get()
    parked, authorized = run([pushed(None, "e1", 2, captures={"ch_1": 500}),
                              pushed(PaymentStatus.AUTHORIZED, "e2", 1, amount=500)])
    assert parked.event is None and parked.record.state is not None and parked.record.state.status is None
    assert PARKED.labels("stripe")._value.get() == before + 1
    assert authorized.event is not None and authorized.event["data"]["status"] == "captured"


# --- fetch inputs --------------------------------------------------------------------------------------


def test_a_thin_push_fetch_is_emitted_once_per_delivery() -> None:
    first, again = run([fetch(), fetch()])
    assert [r.reason for r in first.fetch_requests] == ["thin_push", "stale"]
    assert (again.fetch_requests, again.changed) == ([], False)


def test_a_registered_payment_without_any_observation_gets_its_poll_chain() -> None:
    (result,) = run([fetch("d-1:registered", "registered")])
    (stale,) = stale_requests(result)
    assert result.record.state is None and result.record.chain is not None
    assert (stale.attempt, from_rfc3339(stale.not_before)) == (1, T0 + timedelta(seconds=60))


def test_no_poll_chain_for_agreements_or_push_only_providers() -> None:
    agreement = FetchInput(FetchRequest(payment_key="stripe:acct:mandate:m_1", provider="stripe", account="acct",
                                        object_type="mandate", object_id="m_1", reason="thin_push",
                                        not_before="2024-05-01T10:00:00.000Z", requested_at="2024-05-01T10:00:00.000Z",
                                        request_id="d-2:fetch"), "d-2:fetch")
    (result,) = run([agreement])
    assert stale_requests(result) == [] and result.record.chain is None
    (adyen,) = run([ObservationInput(obs(PaymentStatus.PENDING, "e1", 0, provider="adyen"), "e1#0")])
    assert adyen.fetch_requests == [] and adyen.record.chain is None


# --- the stale-poll chain ------------------------------------------------------------------------------


def test_news_arms_poll_one_after_the_first_gap() -> None:
    (result,) = run([pushed(PaymentStatus.PENDING, "e1", 0)])
    (stale,) = stale_requests(result)
    news = T0 + timedelta(seconds=5)  # the receipt of the observation
    assert (stale.attempt, from_rfc3339(stale.not_before)) == (1, news + timedelta(seconds=60))
    assert result.record.chain == PollChain(news.timestamp(), 1, stale.request_id, version=1)
    assert stale.request_id == f"{KEY}:stale:{news.timestamp():.6f}:1"
    assert stale.chain_version == 1 and result.record.chain_version == 1


def test_the_armed_polls_result_arms_the_next_whatever_its_outcome() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    chain = first.record.chain
    assert chain is not None
    after = rec(first.record, polled(chain.request_id, 1, outcome="server_error"), T0 + timedelta(seconds=70))
    (second,) = stale_requests(after)
    assert second.attempt == 2
    assert from_rfc3339(second.not_before) == datetime.fromtimestamp(chain.since + 360, UTC)


def test_results_of_other_fetches_leave_the_chain_alone() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    other = rec(first.record, polled("d-7:fetch", 1), T0 + timedelta(seconds=10))
    assert (other.changed, other.fetch_requests) == (False, [])


def test_news_soon_after_keeps_the_armed_poll_as_the_first_of_the_restarted_chain() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0 + timedelta(seconds=5))
    armed = first.record.chain
    assert armed is not None
    # Authorized 20 s later: the armed poll (due 65 s after T0) comes before the restarted chain's first poll
    # would (85 s), so it stands for it and no second request is emitted.
    authorized = rec(first.record, ObservationInput(obs(PaymentStatus.AUTHORIZED, "e2", 0, observed_offset=20),
                                                    "e2#0"), T0 + timedelta(seconds=20))
    assert stale_requests(authorized) == []
    news = T0 + timedelta(seconds=20)
    assert authorized.record.chain == PollChain(news.timestamp(), 1, armed.request_id, version=armed.version)
    # Its result arms poll 2 of the restarted chain.
    after = rec(authorized.record, polled(armed.request_id, 1), T0 + timedelta(seconds=70))
    (second,) = stale_requests(after)
    assert (second.attempt, from_rfc3339(second.not_before)) == (2, news + timedelta(seconds=360))


def test_news_after_the_first_gap_restarts_the_chain_and_an_outcome_ends_it() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    chain = first.record.chain
    assert chain is not None
    late = T0 + timedelta(hours=2)  # poll 1 came back late: the poll it arms is due at once, before the news
    after_two = rec(first.record, polled(chain.request_id, 1), late)
    authorized = rec(after_two.record, pushed(PaymentStatus.AUTHORIZED, "e2", 119), late)
    (restart,) = stale_requests(authorized)
    assert restart.attempt == 1 and authorized.record.chain is not None
    assert authorized.record.chain.request_id == restart.request_id
    captured = rec(authorized.record, pushed(PaymentStatus.CAPTURED, "e3", 121), late)
    assert stale_requests(captured) == [] and captured.record.chain is None


def test_a_poll_that_reads_what_a_push_said_is_not_news() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    same = ObservationInput(obs(PaymentStatus.PENDING, "f1", 0, Source.POLL), None, "stale")
    again = rec(first.record, same, T0 + timedelta(seconds=61))
    # A new group for the join (the source differs) but the same facts: the chain is left as it was.
    assert again.record.state is not None and len(again.record.state.retained) == 2
    assert stale_requests(again) == [] and again.record.chain == first.record.chain


def test_a_poll_that_reads_a_new_provider_word_is_news() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    moved = ObservationInput(obs(PaymentStatus.REQUIRES_ACTION, "f1", 1, Source.POLL), None, "stale")
    again = rec(first.record, moved, T0 + timedelta(minutes=3))
    (restart,) = stale_requests(again)
    assert restart.attempt == 1 and again.record.chain is not None


def test_a_chain_that_fell_behind_continues_with_the_latest_due_poll() -> None:
    # 3 h after the news polls 1..5 are due (offsets 60 s ... 8460 s): poll 5 goes out now, 2-4 are skipped.
    assert next_poll(SCHEDULE, since=T0.timestamp(), done=1, now=T0 + timedelta(hours=3)) == 5
    assert next_poll(SCHEDULE, since=T0.timestamp(), done=1, now=T0 + timedelta(seconds=61)) == 2


@pytest.mark.parametrize(("quiet_s", "due"), [(59, 0), (60, 1), (359, 1), (360, 2), (1260, 3), (4859, 3),
                                              (4860, 4), (8460, 5)])
def test_polls_due_follow_the_gaps_then_repeat(quiet_s: float, due: int) -> None:
    assert SCHEDULE.polls_due(quiet_s) == due


@pytest.mark.parametrize(("poll", "offset"), [(1, 60), (2, 360), (3, 1260), (4, 4860), (5, 8460)])
def test_poll_offsets_are_the_gaps_accumulated_then_the_repeat(poll: int, offset: int) -> None:
    assert SCHEDULE.offset_of(poll) == offset


def horizon_reconciler(**limits: float) -> Reconciler:
    horizons = Horizons(not_found_limit=int(limits.get("not_found", 3)), horizon_s=limits.get("horizon", 86400),
                        expiry_grace_s=limits.get("grace", 60))
    return Reconciler(SCHEDULE, ("stripe",), TTL_S, horizons=horizons)


def poll_answers(rec: Reconciler, record: Any, outcomes: list[str], start: datetime) -> list[Reconciled]:
    results, now = [], start
    for outcome in outcomes:
        assert record.chain is not None
        now += timedelta(hours=2)
        result = rec(record, polled(record.chain.request_id, record.chain.poll, outcome), now)
        results.append(result)
        record = result.record
    return results


def test_polling_ends_after_repeated_not_found_and_says_so() -> None:
    rec = horizon_reconciler(not_found=3)
    registered = rec(None, fetch("d-1:registered", "registered"), T0)
    results = poll_answers(rec, registered.record, ["not_found", "not_found", "not_found"], T0)
    assert [bool(stale_requests(r)) for r in results] == [True, True, False]
    assert results[-1].record.chain is None
    assert results[-1].record.polling_ended is not None and results[-1].record.polling_ended[0] == "not_found"


def test_an_answer_in_between_resets_the_not_found_count() -> None:
    rec = horizon_reconciler(not_found=2)
    registered = rec(None, fetch("d-1:registered", "registered"), T0)
    results = poll_answers(rec, registered.record, ["not_found", "server_error", "not_found"], T0)
    assert all(stale_requests(r) for r in results)


def test_polling_ends_at_the_horizon_after_first_seen() -> None:
    rec = horizon_reconciler(horizon=3 * 3600)
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    results = poll_answers(rec, first.record, ["ok", "ok"], T0)
    assert stale_requests(results[0]) and not stale_requests(results[1])
    assert results[1].record.polling_ended is not None and results[1].record.polling_ended[0] == "horizon"


def test_polling_an_authorisation_ends_after_its_expiry() -> None:
    rec = horizon_reconciler(horizon=30 * 86400, grace=60)
    expiry = T0 + timedelta(hours=3)
    first = rec(None, pushed(PaymentStatus.AUTHORIZED, "e1", 0, authorization_expires_at=expiry), T0)
    results = poll_answers(rec, first.record, ["ok", "ok"], T0)
    assert results[1].record.polling_ended is not None and results[1].record.polling_ended[0] == "expired"


def test_news_after_polling_ended_restarts_it_with_a_higher_chain_version() -> None:
    rec = horizon_reconciler(not_found=1)
    registered = rec(None, fetch("d-1:registered", "registered"), T0)
    (ended,) = poll_answers(rec, registered.record, ["not_found"], T0)
    assert ended.record.chain is None and ended.record.chain_version == 1
    news = rec(ended.record, pushed(PaymentStatus.PENDING, "e1", 200), T0 + timedelta(hours=3))
    (stale,) = stale_requests(news)
    assert (stale.chain_version, news.record.polling_ended) == (2, None)


def test_chain_versions_only_grow_across_links() -> None:
    rec = reconciler()
    record = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0).record
    versions = [record.chain.version]
    for hour in (1, 2, 3):
        record = rec(record, polled(record.chain.request_id, record.chain.poll), T0 + timedelta(hours=hour)).record
        versions.append(record.chain.version)
    assert versions == [1, 2, 3, 4]


def test_hints_are_passed_on_without_a_record_so_made_up_ids_cost_no_state() -> None:
    (result,) = run([fetch("h-1:fetch", "hint")])
    assert ([r.reason for r in result.fetch_requests], result.changed) == (["hint"], False)


def test_a_refund_fetch_target_arms_no_chain_under_its_own_key() -> None:
    # Amazon Pay: a Refund IPN is fetched under the refund's id, its observations are filed under the charge:
    # a chain on the refund key would poll it daily forever (issue 17).
    rec = Reconciler(SCHEDULE, {"amazon_pay": frozenset({"charge"})}, TTL_S)
    stamp = "2024-05-01T10:00:00.000Z"
    refund = FetchInput(FetchRequest(payment_key="amazon_pay:acct:refund:R1", provider="amazon_pay", account="acct",
                                     object_type="refund", object_id="R1", reason="thin_push", not_before=stamp,
                                     requested_at=stamp, request_id="d-3:fetch"), "d-3:fetch")
    result = rec(None, refund, T0)
    assert ([r.reason for r in result.fetch_requests], result.record.chain) == (["thin_push"], None)


def test_a_quarantined_payment_applies_nothing() -> None:
    rec = reconciler()
    first = rec(None, pushed(PaymentStatus.PENDING, "e1", 0), T0)
    flagged = rec.quarantine(first.record, "record_size_cap", 600_000, T0)
    result = rec(flagged, pushed(PaymentStatus.CAPTURED, "e2", 5), T0)
    assert (result.quarantined, result.changed, result.event) == (True, False, None)
    assert flagged.chain is None


# --- codecs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [
    pushed(PaymentStatus.CAPTURED, "e1", 1, amount=100, currency="EUR", captures={"ch_1": 100}, order_ref="o"),
    ObservationInput(obs(None, "f1", 2, Source.POLL, refunds={"re_1": 5}), None, "stale"),
    fetch(),
    polled("r-1", 3, "timeout"),
])
def test_payment_inputs_round_trip_exactly(item: Any) -> None:
    assert payment_inputs.decode(payment_inputs.encode(item)) == item


@pytest.mark.parametrize("raw", [b"not json", b'{"kind": "observation"}', b'{"kind": "other"}',
                                 b'{"kind": "polled", "polled": {"provider": "x"}}'])
def test_unreadable_payment_inputs_are_normalization_errors(raw: bytes) -> None:
    with pytest.raises(NormalizationError):
        payment_inputs.decode(raw)


def test_the_payment_record_round_trips_through_its_stored_bytes() -> None:
    results = run([pushed(PaymentStatus.AUTHORIZED, "e1", 1, amount=900, currency="EUR"),
                   pushed(None, "e2", 2, captures={"ch_1": 900}),
                   pushed(PaymentStatus.PARTIALLY_REFUNDED, "e3", 3, refunds={"re_1": 300}), fetch()])
    record = results[-1].record
    assert record.last_event is not None and record.seen
    assert PaymentRecord.from_bytes(record.to_bytes()) == record


def test_a_record_of_the_first_processor_is_migrated_not_dead_lettered() -> None:
    # A v1 record (issue 18: "a stored record of an older format dead-letters every later input").
    v1 = {"v": 1, "first_seen": T0.timestamp(), "seen": {"e1#0": T0.timestamp()},
          "chain": {"since": T0.timestamp(), "poll": 2, "request_id": "r-2"},
          "state": {"provider": "stripe", "account": "acct", "object_type": "payment_intent", "object_id": "pi_1",
                    "kind": "payment", "status": "partially_refunded", "previous_status": "captured",
                    "reported_status": "captured", "provider_status": "captured", "reason_code": None,
                    "amount": 900, "currency": "EUR", "captured_amount": 900, "refunded_amount": 300,
                    "order_ref": None, "source": "push", "occurred_at": "2024-05-01T10:01:01+00:00",
                    "observed_at": "2024-05-01T10:01:05+00:00", "evidence": ["e1"], "sequence": 2,
                    "stale_count": 0, "retained": [
                        {"occurred_at": "2024-05-01T10:01:01+00:00", "status": "captured", "provider_status": "x",
                         "source": "push", "reason_code": None, "amount": 900, "currency": "EUR",
                         "order_ref": None, "captures": [["ch_1", 900]], "refunds": [["re_1", 300]],
                         "observed_at": "2024-05-01T10:01:05+00:00", "evidence_ids": ["e1"]}]}}
    import orjson

    record = PaymentRecord.from_bytes(orjson.dumps(v1))
    assert record.state is not None and record.chain is not None
    assert (record.state.status, record.state.refunded_amount, record.state.sequence) == (
        PaymentStatus.PARTIALLY_REFUNDED, 300, 2)
    # The next real change continues the numbering; a repeat of the same facts emits nothing.
    after = reconciler()(record, pushed(PaymentStatus.REFUNDED, "e9", 9, refunds={"re_2": 600}), T0)
    assert after.event is not None and after.event["data"]["sequence"] == 3


def test_bytes_no_version_wrote_are_a_normalization_error() -> None:
    with pytest.raises(NormalizationError):
        PaymentRecord.from_bytes(b'{"v": 99}')


def test_the_codec_reuses_a_decoded_record_only_for_identical_bytes() -> None:
    codec = RecordCodec(capacity=2)
    record = run([pushed(PaymentStatus.PENDING, "e1", 0)])[0].record
    raw = codec.encode(b"k", record)
    assert codec.decode(b"k", raw) is record
    rolled_back = PaymentRecord(first_seen=1.0)  # e.g. what the store holds after an aborted transaction
    assert codec.decode(b"k", rolled_back.to_bytes()) == rolled_back
    assert codec.decode(b"k", None) is None
    codec.encode(b"a", record)
    codec.encode(b"b", record)
    assert len(codec._decoded) == 2  # bounded


# --- DLQ headers --------------------------------------------------------------------------------------


def test_dlq_headers_keep_the_original_and_the_first_failure_time() -> None:
    error = UnknownProviderStatus("stripe: no mapping for event type 'x'")
    first = dlq_headers([("trace", b"1")], error=error, topic="in", partition=2, offset=7, now=T0)
    again = dlq_headers(first, error=error, topic="dlq-replay", partition=0, offset=1, now=T0 + timedelta(days=1))
    headers = dict(again)
    assert headers["trace"] == b"1"
    assert (headers[ERROR_CLASS], headers[ERROR_REASON], headers[SOURCE_OFFSET]) == (
        b"UnknownProviderStatus", b"unknown_provider_status", b"1")
    assert headers[FIRST_FAILURE_AT] == b"2024-05-01T10:00:00.000Z"
    assert len([name for name, _ in again if name == ERROR_CLASS]) == 1
