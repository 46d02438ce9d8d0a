"""The demo traffic generator (deploy/local/demo_traffic.py) sends what our own code accepts — no stack needed.

Its stories run against a recording sink (pauses advance a fake clock instead of sleeping). Every recorded
webhook then goes through the verifier ingest runs, with the accounts of deploy/local/demo.toml, and its
payload through the parsers the processors run; a thin push is checked against the object the test
provider held *when it was sent* (what the fetcher would have got).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import secrets
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator, FormatChecker

from ingest.delivery import IncomingDelivery, ResolvedAccount, VerifiedDelivery
from ingest.providers import PUSH_PROVIDERS
from ingest.providers import parsing as providers
from ingest.providers.amazon_pay import sns
from ingest.providers.amazon_pay.certs import CertificateStore
from paystream.config import AccountConfig, resolve_secret
from schemas.event import load_schema
from schemas.join import fold
from schemas.observation import Observation
from schemas.status import AgreementStatus, PaymentStatus, Source

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import demo_material
import demo_traffic
from demo_traffic import Delivery

CONFIG = tomllib.loads(demo_material.CONFIG.read_text())
ObjectKey = tuple[str, str, str]  # (provider, object_type, object_id) as the test provider keys them


@dataclass
class Sent:
    delivery: Delivery
    at: float
    provider_objects: dict[ObjectKey, dict[str, Any]]  # what the test provider held at that moment


@dataclass
class Recorder:
    """A :class:`demo_traffic.Sink` that records instead of sending."""

    clock: float
    sent: list[Sent] = field(default_factory=list)
    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    stripe_events: list[dict[str, Any]] = field(default_factory=list)

    def now(self) -> float:
        return self.clock

    async def pause(self, seconds: float) -> None:
        self.clock += seconds

    async def send(self, delivery: Delivery) -> int:
        self.sent.append(Sent(delivery, self.clock, dict(self.objects)))
        return 200

    async def set_object(self, provider: str, object_type: str, object_id: str, body: dict[str, Any]) -> None:
        self.objects[(provider, object_type, object_id)] = body

    async def add_stripe_event(self, event: dict[str, Any]) -> None:
        self.stripe_events.append(event)


def _sns_certificate(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed "SNS signing certificate" like the one demo_material pre-seeds for ingest."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> demo_material.DemoMaterial:
    """Throw-away secrets under the variable names demo.toml references (nothing written to .local/)."""
    env = {
        "PAYSTREAM_DEMO_STRIPE_WHSEC": "whsec_" + secrets.token_hex(16),
        "PAYSTREAM_DEMO_ADYEN_HMAC_KEY": secrets.token_hex(32).upper(),
        "PAYSTREAM_DEMO_STANDARD_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "PAYSTREAM_DEMO_OBSERVATION_TOKEN": secrets.token_urlsafe(24),
    }
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return demo_material.DemoMaterial(env, tmp_path_factory.mktemp("demo") / "unused.pem", key)


@pytest.fixture(scope="module")
async def recorder(material: demo_material.DemoMaterial) -> Recorder:
    started = dt.datetime.now(dt.UTC).timestamp()
    recording = Recorder(clock=started)
    await demo_traffic.run_once(recording, material, demo_traffic.run_id(started))
    return recording


def _account(provider: str, material: demo_material.DemoMaterial) -> ResolvedAccount:
    config = AccountConfig(**CONFIG["accounts"][provider]["demo"])
    return ResolvedAccount(provider, "demo", config, tuple(resolve_secret(ref, material.env) for ref in config.secrets))


async def _verify(sent: Sent, material: demo_material.DemoMaterial) -> list[VerifiedDelivery]:
    """What ingest does with the delivery: its provider's verifier, the demo account, the pre-seeded cert."""
    delivery = sent.delivery
    incoming = IncomingDelivery(delivery.provider, "demo", delivery.body,
                                {name.lower(): value for name, value in delivery.headers.items()}, sent.at)
    verifier = PUSH_PROVIDERS[delivery.provider].verify
    if delivery.provider == "amazon_pay":
        store = CertificateStore(preseeded={demo_material.SNS_CERT_NAME: _sns_certificate(material.sns_private_key)})
        verifier = functools.partial(sns.verify, store=store)
    result = await verifier(incoming, _account(delivery.provider, material))
    assert result.rejected == [], f"{delivery.label}: {result.rejected}"
    return result.accepted


def _webhooks(recorder: Recorder) -> list[Sent]:
    return [sent for sent in recorder.sent if sent.delivery.path.startswith("/webhooks/")]


def _parse(provider: str, body: bytes, *, at: float, evidence: str, kind: str, source: Source) -> list[Observation]:
    return providers.parse(
        provider, body, account="demo", account_config=AccountConfig(**CONFIG["accounts"][provider]["demo"]),
        source=source, evidence_id=evidence, observed_at=dt.datetime.fromtimestamp(at, dt.UTC), object_kind=kind,
    )


async def _observations(recorder: Recorder, material: demo_material.DemoMaterial) -> list[Observation]:
    """Every observation the processors would make: thick pushes parsed, thin pushes fetched then parsed."""
    found: list[Observation] = []
    for sent in _webhooks(recorder):
        for verified in await _verify(sent, material):
            provider = sent.delivery.provider
            if verified.kind == "event":
                found += _parse(provider, verified.body, at=sent.at, evidence=verified.delivery_id, kind="event",
                                source=Source.PUSH)
                continue
            for target in providers.thin_targets(provider, verified.body):
                body = orjson.dumps(sent.provider_objects[(provider, target.object_type, target.object_id)])
                found += _parse(provider, body, at=sent.at, evidence=f"{verified.delivery_id}:fetch", kind="object",
                                source=Source.POLL)
    return found


async def test_every_provider_sends_webhooks_its_verifier_accepts(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    kinds = defaultdict(set)
    for sent in _webhooks(recorder):
        for verified in await _verify(sent, material):
            kinds[sent.delivery.provider].add(verified.kind)
    assert kinds == {"stripe": {"event"}, "adyen": {"event"}, "standard": {"event"}, "amazon_pay": {"thin"},
                     "mollie": {"hint"}}


async def test_every_thick_push_parses_into_observations(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    for sent in _webhooks(recorder):
        for verified in await _verify(sent, material):
            if verified.kind == "event":
                parsed = _parse(sent.delivery.provider, verified.body, at=sent.at, evidence=verified.delivery_id,
                                kind="event", source=Source.PUSH)
                assert parsed, sent.delivery.label


async def test_every_thin_push_names_an_object_the_provider_held_when_it_was_sent(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    thin = 0
    for sent in _webhooks(recorder):
        for verified in await _verify(sent, material):
            if verified.kind in ("thin", "hint"):
                for target in providers.thin_targets(sent.delivery.provider, verified.body):
                    assert (sent.delivery.provider, target.object_type, target.object_id) in sent.provider_objects, (
                        f"{sent.delivery.label}: sent before the provider held {target}")
                    thin += 1
    assert thin >= 5  # charge permission, charge x2 and refund IPNs; the Mollie hints


def test_every_object_in_the_provider_api_parses(recorder: Recorder) -> None:
    for (provider, _object_type, object_id), body in recorder.objects.items():
        parsed = _parse(provider, orjson.dumps(body), at=recorder.clock, evidence="poll", kind="object",
                        source=Source.POLL)
        assert [observation.object_id for observation in parsed] != [], object_id


def test_every_event_in_the_stripe_events_list_parses(recorder: Recorder) -> None:
    assert recorder.stripe_events
    for event in recorder.stripe_events:
        assert _parse("stripe", orjson.dumps(event), at=recorder.clock, evidence=event["id"], kind="event",
                      source=Source.POLL), event["type"]


def test_observation_requests_match_the_schema_and_a_configured_token(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    validator = Draft202012Validator(load_schema("observation-request"), format_checker=FormatChecker())
    tokens = {resolve_secret(ref, material.env).get_secret_value() for ref in CONFIG["observation_tokens"]}
    requests = [sent.delivery for sent in recorder.sent if sent.delivery.path == "/v1/observations"]
    assert requests
    for delivery in requests:
        body = orjson.loads(delivery.body)
        validator.validate(body)
        assert delivery.headers["Authorization"].removeprefix("Bearer ") in tokens
        assert body["register_poll"] is True
        config = AccountConfig(**CONFIG["accounts"][body["provider"]]["demo"])
        status = providers.sync_status(body["provider"], body["object_type"], body["state"]["provider_status"], config)
        assert status is PaymentStatus.PENDING


async def test_each_payment_ends_in_the_status_its_story_tells(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    observations = await _observations(recorder, material)
    # The scheduled polls: what the provider API says at the end (the pull-only payment's only news).
    for (provider, _object_type, _object_id), body in recorder.objects.items():
        observations += _parse(provider, orjson.dumps(body), at=recorder.clock, evidence="stale-poll", kind="object",
                               source=Source.POLL)
    by_key = defaultdict(list)
    for observation in observations:
        by_key[observation.payment_key].append(observation)
    final = {key.split(":", 2)[2]: fold(found).status for key, found in by_key.items()}
    run = demo_traffic.run_id(recorder.sent[0].at)
    permission = f"S02-{run}-0000001"
    assert final == {
        f"payment_intent:pi_demo_{run}_1": PaymentStatus.REFUNDED,
        f"payment_intent:pi_demo_{run}_2": PaymentStatus.CAPTURED,
        f"payment_intent:pi_demo_{run}_3": PaymentStatus.FAILED,
        f"payment:DEMO{run}0001": PaymentStatus.CAPTURED,
        f"payment:DEMO{run}0002": PaymentStatus.FAILED,
        f"charge_permission:{permission}": AgreementStatus.ACTIVE,
        f"charge:{permission}-C000001": PaymentStatus.PARTIALLY_REFUNDED,
        f"payment:tr_demo{run}1": PaymentStatus.CAPTURED,
        f"payment:tr_pull{run}1": PaymentStatus.CAPTURED,
        f"payment:pay_demo_{run}_1": PaymentStatus.CAPTURED,
        f"payment:pay_demo_{run}_2": PaymentStatus.FAILED,
    }


def test_exactly_one_signed_delivery_is_sent_twice_unchanged(recorder: Recorder) -> None:
    seen = defaultdict(list)
    # Mollie hints are always the same bytes (``id=tr_…``): two hints for one payment are not a duplicate.
    for sent in (sent for sent in recorder.sent if sent.delivery.provider != "mollie"):
        seen[(sent.delivery.path, sent.delivery.body, tuple(sorted(sent.delivery.headers.items())))].append(sent)
    twice = [copies for copies in seen.values() if len(copies) > 1]
    assert [len(copies) for copies in twice] == [2]


async def test_a_later_event_is_delivered_before_an_earlier_one(
    recorder: Recorder, material: demo_material.DemoMaterial
) -> None:
    pushed = [obs for obs in await _observations(recorder, material) if obs.source is Source.PUSH]
    out_of_order = {
        later.payment_key
        for index, later in enumerate(pushed)
        for earlier in pushed[index + 1:]
        if earlier.payment_key == later.payment_key and earlier.occurred_at < later.occurred_at
    }
    assert out_of_order == {f"stripe:demo:payment_intent:pi_demo_{demo_traffic.run_id(recorder.sent[0].at)}_2"}


async def test_a_rerun_makes_new_payments(recorder: Recorder, material: demo_material.DemoMaterial) -> None:
    again = Recorder(clock=recorder.clock + 60)
    await demo_traffic.run_once(again, material, demo_traffic.run_id(again.clock))
    first = {sent.delivery.object_id for sent in recorder.sent}
    assert first.isdisjoint(sent.delivery.object_id for sent in again.sent)


@dataclass
class Ingest:
    """A stand-in ingest answering from a script, recording what it received."""

    answers: list[web.Response]
    bodies: list[bytes] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return self.answers.pop(0) if self.answers else web.Response(status=200)


async def _send_to(ingest: Ingest) -> int:
    app = web.Application()
    app.router.add_post("/webhooks/stripe/demo", ingest.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    delivery = Delivery("stripe", "pi_x", "payment_intent.succeeded", "/webhooks/stripe/demo", b'{"id":"evt_x"}', {})
    try:
        async with ClientSession() as session:
            return await demo_traffic.HttpSink(session, url, url).send(delivery)
    finally:
        await runner.cleanup()


async def test_a_delivery_answered_503_is_sent_again_after_retry_after() -> None:
    ingest = Ingest([web.Response(status=503, headers={"Retry-After": "0"})])
    assert await _send_to(ingest) == 200
    assert ingest.bodies == [b'{"id":"evt_x"}', b'{"id":"evt_x"}']


async def test_a_delivery_refused_with_401_is_not_sent_again() -> None:
    ingest = Ingest([web.Response(status=401)])
    assert await _send_to(ingest) == 401
    assert len(ingest.bodies) == 1
