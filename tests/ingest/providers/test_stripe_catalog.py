"""The Stripe catalog against Stripe's own published list of event types (stripe-python 16.1.0 enabled_events).

Every listed type has a decision, the catalog names nothing the list lacks, and an event of every type, built
from Stripe's own example objects (openapi fixtures3), is read as its decision says: observations of the
decided kind, or nothing on purpose (counted) — never an exception.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from ingest.providers.catalog import load_catalog
from ingest.providers.stripe import parse as stripe
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "catalogs"
# Copied from /work/shared/catalogs/stripe_event_types.json; its "source" names the SDK file it lists.
PUBLISHED = json.loads((FIXTURES / "stripe_event_types.json").read_text())
TYPES: list[str] = PUBLISHED["event_types"]
# Stripe's example object per API resource (the resources the event types carry, copied from fixtures3).
RESOURCES: dict[str, dict[str, Any]] = json.loads((FIXTURES / "stripe_fixtures3.json").read_text())["resources"]
# Which resource each event type carries as data.object, and the fields the type implies.
OBJECTS: dict[str, dict[str, Any]] = json.loads((FIXTURES / "stripe_event_objects.json").read_text())["types"]
CATALOG = load_catalog("stripe")
MAPPED = sorted(set(CATALOG.names()) - set(CATALOG.names("ignore")))
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def stripe_event(event_type: str, number: int = 1) -> dict[str, Any]:
    """An event of ``event_type`` as Stripe sends it, its data object built from Stripe's example."""
    spec = OBJECTS[event_type]
    if "resource" in spec:
        obj = copy.deepcopy(RESOURCES[spec["resource"]])
    else:  # no fixtures3 example: the object as the SDK names it
        obj = {"id": f"{spec['object'].replace('.', '_')}_1", "object": spec["object"], "livemode": False}
    obj.update(spec.get("set", {}))
    return {"id": f"evt_catalog_{number:04d}", "object": "event", "api_version": "2024-06-20", "created": 1714560000,
            "livemode": False, "pending_webhooks": 1, "type": event_type, "data": {"object": obj},
            "request": {"id": None, "idempotency_key": None}}


def parse(event: dict[str, Any]) -> list[Observation]:
    return stripe.parse(orjson.dumps(event), account="main", source=Source.PUSH, evidence_id=event["id"],
                        observed_at=NOW, object_kind="event")


def ignored_count(event_type: str) -> float:
    return REGISTRY.get_sample_value("paystream_events_ignored_total",
                                     {"provider": "stripe", "type": event_type}) or 0.0


def test_the_fixture_is_stripes_published_list_with_its_source() -> None:
    assert PUBLISHED["source"] == ("stripe-python 16.1.0 stripe/params/_webhook_endpoint_create_params.py "
                                   "(enabled_events)")
    assert len(TYPES) == 275 and len(set(TYPES)) == 275
    assert any(source.startswith(PUBLISHED["source"]) for source in CATALOG.sources)
    assert CATALOG.entry_kind == "event type"


def test_the_fixture_is_what_the_installed_sdk_lists() -> None:
    """The SDK (a dev dependency) is the oracle the list was copied from: they still agree."""
    from typing import get_args

    from stripe.params._webhook_endpoint_create_params import WebhookEndpointCreateParams

    (item,) = get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])  # List[Literal[...]]
    assert set(get_args(item)) == set(TYPES) | {"*"}


def test_every_listed_type_has_a_decision() -> None:
    undecided = sorted(set(TYPES) - set(CATALOG.entries))
    assert not undecided, f"event types Stripe lists without a decision: {undecided}"


def test_the_catalog_names_no_type_the_list_lacks() -> None:
    extra = sorted(set(CATALOG.entries) - set(TYPES))
    assert not extra, f"catalog entries Stripe's list does not have: {extra}"


def test_every_listed_type_has_an_example_event() -> None:
    assert set(OBJECTS) == set(TYPES)
    assert all(spec["resource"] in RESOURCES for spec in OBJECTS.values() if "resource" in spec)


def test_the_parser_reads_every_object_the_mapped_types_carry() -> None:
    carried = {RESOURCES[OBJECTS[name]["resource"]]["object"] for name in MAPPED}
    assert carried <= set(stripe.READERS), carried - set(stripe.READERS)


def _reads_as_decided(outcome: str, observations: list[Observation]) -> bool:
    """Whether what the parser made of an event is what the catalog's outcome for its type says."""
    def payment(obs: Observation) -> bool:
        return obs.kind is ObjectKind.PAYMENT and obs.object_type in ("payment_intent", "charge")

    checks = {
        "status": lambda obs: payment(obs) and isinstance(obs.status, PaymentStatus),
        "capture": lambda obs: payment(obs) and obs.status is PaymentStatus.CAPTURED and bool(obs.captures),
        "refund": lambda obs: payment(obs) and (bool(obs.refunds) or obs.refunded_total is not None),
        "dispute": lambda obs: payment(obs) and isinstance(obs.status, PaymentStatus) and bool(obs.disputes),
        "risk": lambda obs: payment(obs) and obs.status is None and bool(obs.risk),
        "agreement": lambda obs: obs.kind is ObjectKind.AGREEMENT and isinstance(obs.status, AgreementStatus),
    }
    return bool(observations) and all(checks[outcome](obs) for obs in observations)


@pytest.mark.parametrize("event_type", MAPPED)
def test_every_mapped_type_is_read_as_its_decision_says(event_type: str) -> None:
    before = ignored_count(event_type)
    observations = parse(stripe_event(event_type))
    if not observations:  # nothing on purpose (a session without a PaymentIntent...): counted
        assert ignored_count(event_type) == before + 1
    else:
        assert _reads_as_decided(CATALOG.entry(event_type).outcome, observations), (event_type, observations)
        assert ignored_count(event_type) == before


def test_the_stripe_examples_make_every_mapped_type_observe_something() -> None:
    """The examples are realistic enough that no mapped type falls back to "nothing" (that path is tested on
    its own in tests/processors/test_parse_stripe.py)."""
    silent = [name for name in MAPPED if not parse(stripe_event(name))]
    assert not silent, silent


@pytest.mark.parametrize("event_type", CATALOG.names("ignore"))
def test_every_ignored_type_gives_nothing_and_is_counted(event_type: str) -> None:
    before = ignored_count(event_type)
    assert parse(stripe_event(event_type)) == []
    assert ignored_count(event_type) == before + 1


def test_outcome_counts() -> None:
    counts = Counter(CATALOG.entry(name).outcome for name in TYPES)
    print(f"stripe catalog: {len(TYPES)} listed types: mapped {len(TYPES) - counts['ignore']} "
          f"({dict(sorted((k, v) for k, v in counts.items() if k != 'ignore'))}), ignored {counts['ignore']}, "
          f"unknown {len(set(TYPES) - set(CATALOG.entries))}")
    assert sum(counts.values()) == len(TYPES)
    assert counts["ignore"] < len(TYPES) and "fetch" not in counts  # thin v2 events are not in this list
