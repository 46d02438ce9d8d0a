"""The API documents in schemas/: OpenAPI 3.1 for ingest's HTTP routes, AsyncAPI 3.0 for the topics, and the
JSON Schemas of the internal topic records (DESIGN §4).

No AsyncAPI validator on PyPI is well kept (the Python ones are pre-alpha or code generators), so the
AsyncAPI document is checked here part by part: references, addresses, bindings, payload schemas and the
cross-checks against the code. The OpenAPI document goes through openapi-spec-validator, and replies of the
real ASGI app (with an in-memory publisher) are validated against the responses it documents.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ingest.accounts import AccountBook
from ingest.app import ROUTES, IngestApp
from ingest.delivery import ResolvedAccount
from ingest.fetch.options import FetchOptions
from ingest.providers import PUSH_PROVIDERS
from ingest.providers.amazon_pay import sns
from ingest.providers.amazon_pay.certs import CertificateStore
from ingest.providers.signers import adyen_batch, mollie_hint, sign_adyen_item, sign_standard, sign_stripe
from paystream import dlq
from paystream.config import AccountConfig, KafkaSettings, Settings, TopicSettings
from paystream.errors import BrokerUnavailable, NormalizationError
from processors.scheduling import PollSchedule, poll_request
from processors.settings import ProcessorSettings
from processors.state_doc import CONTENT_TYPE as STATE_CONTENT_TYPE
from schemas.envelopes import FetchRequest, FetchResult, InboxEnvelope, ReplayMark, to_rfc3339
from schemas.event import EVENT_CONTENT_TYPE

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
OPENAPI = SCHEMAS / "openapi.yaml"
ASYNCAPI = SCHEMAS / "asyncapi.yaml"
ENVELOPE_SCHEMAS = {InboxEnvelope: "inbox-envelope", FetchRequest: "fetch-request", FetchResult: "fetch-result"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
NOW = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


# --- loading and $ref resolution ----------------------------------------------------------------------


@cache
def load(path: Path) -> Any:
    text = path.read_text()
    return yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def follow_pointer(document: Any, pointer: str) -> Any:
    node = document
    for token in [t for t in pointer.split("/") if t]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def resolve(ref: str, base: Path, documents: Mapping[Path, Any] | None = None) -> tuple[Path, Any]:
    """(file, target) of a file-relative ``$ref``; KeyError/IndexError/OSError when it dangles."""
    location, _, pointer = ref.partition("#")
    target_file = (base.parent / location).resolve() if location else base
    document = documents[target_file] if documents and target_file in documents else load(target_file)
    return target_file, follow_pointer(document, pointer)


def dangling_refs(start: Path, documents: Mapping[Path, Any] | None = None) -> list[str]:
    """Every ``$ref`` reachable from ``start`` (following into referenced files) that resolves to nothing."""
    broken: list[str] = []
    seen: set[Path] = set()
    queue = [start]
    while queue:
        current = queue.pop()
        if current in seen:
            continue
        seen.add(current)
        document = documents[current] if documents and current in documents else load(current)
        for ref in refs_in(document):
            try:
                target_file, _ = resolve(ref, current, documents)
            except (KeyError, IndexError, ValueError, OSError):
                broken.append(f"{current.name}: {ref}")
                continue
            queue.append(target_file)
    return broken


def envelope_schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = load(SCHEMAS / f"{name}.schema.json")
    return document


def envelope_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(envelope_schema(name), format_checker=FormatChecker())


def as_record(envelope: InboxEnvelope | FetchRequest | FetchResult) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(envelope.to_bytes())
    return record


# --- OpenAPI ------------------------------------------------------------------------------------------


def openapi() -> dict[str, Any]:
    document: dict[str, Any] = load(OPENAPI)
    return document


def test_openapi_document_is_valid_openapi_3_1() -> None:
    assert openapi()["openapi"].startswith("3.1.")
    validate_openapi(openapi(), base_uri=OPENAPI.as_uri())  # raises on any violation


def test_openapi_lists_exactly_the_routes_the_app_serves() -> None:
    documented = {
        (method.upper(), path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == set(ROUTES)


def test_every_ref_of_the_openapi_document_resolves() -> None:
    assert dangling_refs(OPENAPI) == []


def test_ref_check_reports_a_dangling_ref() -> None:
    broken = json.loads(json.dumps(openapi()))
    broken["paths"]["/healthz"]["get"]["responses"]["503"] = {"$ref": "#/components/responses/NoSuchThing"}

    assert dangling_refs(OPENAPI, {OPENAPI: broken}) == ["openapi.yaml: #/components/responses/NoSuchThing"]


def test_observation_body_references_the_shared_request_schema() -> None:
    content = openapi()["paths"]["/v1/observations"]["post"]["requestBody"]["content"]
    assert content == {"application/json": {"schema": {"$ref": "./observation-request.schema.json"}}}


def test_provider_path_parameter_lists_exactly_the_push_providers() -> None:
    parameter = openapi()["components"]["parameters"]["Provider"]
    assert set(parameter["schema"]["enum"]) == set(PUSH_PROVIDERS)


def test_every_provider_success_body_is_documented() -> None:
    content = openapi()["paths"]["/webhooks/{provider}/{account}"]["post"]["responses"]["200"]["content"]
    for name, spec in PUSH_PROVIDERS.items():
        media = spec.success_content_type.decode()
        assert media in content, f"{name}: {media} not documented"
        schema = content[media]["schema"]
        if "$ref" in schema:
            _, schema = resolve(schema["$ref"], OPENAPI)
        body = orjson.loads(spec.success_body) if media == "application/json" else spec.success_body.decode()
        Draft202012Validator(schema).validate(body)


def _rejection_codes_in_source() -> set[str]:
    """The machine codes ingest can answer with, read from its source (codes are stable metric labels)."""
    files = [p for p in (ROOT / "ingest").rglob("*.py") if "fetch" not in p.relative_to(ROOT).parts]
    codes: set[str] = set()
    for path in [*files, ROOT / "paystream" / "errors.py"]:
        text = path.read_text()
        codes |= set(re.findall(r'(?<![A-Za-z_])code\s*=\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'_error\(\s*"([a-z_]+)"', text))
        if path.name == "verify.py":  # an Adyen batch whose items all fail answers with their one reason
            codes |= set(re.findall(r'RejectedItem\(reason="([a-z_]+)"', text))
    return codes


def test_every_rejection_code_of_ingest_is_documented() -> None:
    codes = _rejection_codes_in_source()
    assert {"bad_signature", "kafka_unavailable", "method_not_allowed", "not_ready"} <= codes  # the scan works
    documented = OPENAPI.read_text()
    assert sorted(code for code in codes if f"`{code}`" not in documented) == []


def test_retry_after_is_documented_where_the_app_sends_it() -> None:
    responses = openapi()["components"]["responses"]
    for name in ("RateLimited", "Unavailable"):
        assert responses[name]["headers"]["Retry-After"] == {"$ref": "#/components/headers/Retry-After"}
    webhook = openapi()["paths"]["/webhooks/{provider}/{account}"]["post"]["responses"]
    observations = openapi()["paths"]["/v1/observations"]["post"]["responses"]
    assert webhook["429"]["$ref"].endswith("/RateLimited")
    assert webhook["503"]["$ref"].endswith("/Unavailable") and observations["503"]["$ref"].endswith("/Unavailable")


# --- the live app against its document ----------------------------------------------------------------

ADYEN_KEY = "0F" * 32
STRIPE_SECRET = "whsec_api_documents_test"
STANDARD_SECRET = "whsec_" + "c3RhbmRhcmQtd2ViaG9va3MtZG9jdW1lbnQtdGVzdCE="
TOKEN = "observation-token-for-api-document-tests"


@pytest.fixture(autouse=True)
def _restore_the_sns_certificate_store() -> Iterator[None]:
    """IngestApp installs its certificate store process-wide; give the previous one back afterwards."""
    saved = sns._default_store
    yield
    sns._default_store = saved


class MemoryPublisher:
    """Stands in for InboxPublisher at the seam: records what would have been produced."""

    def __init__(self, *, ready: bool = True) -> None:
        self.ready = ready
        self.published: list[InboxEnvelope] = []

    async def publish(self, envelopes: Sequence[InboxEnvelope]) -> None:
        if not self.ready:
            raise BrokerUnavailable("Kafka is unavailable")
        self.published.extend(envelopes)


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def make_app(tmp_path: Path, *, ready: bool = True, max_body_bytes: int = 1024 * 1024) -> IngestApp:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = Settings(observation_tokens=[f"file:{token_file}"])
    settings = settings.model_copy(update={"http": settings.http.model_copy(update={"max_body_bytes": max_body_bytes})})

    def account(provider: str, secrets: tuple[str, ...] = (), **config: Any) -> ResolvedAccount:
        return ResolvedAccount(provider, "main", AccountConfig(**config), tuple(SecretStr(s) for s in secrets))

    book = [account("stripe", (STRIPE_SECRET,)), account("standard", (STANDARD_SECRET,)),
            account("adyen", (ADYEN_KEY,)), account("mollie", hint_burst=1, hint_rate_per_s=0.001)]
    return IngestApp(settings, publisher=MemoryPublisher(ready=ready),  # type: ignore[arg-type]
                     accounts=AccountBook({(a.provider, a.name): a for a in book}),
                     certificates=CertificateStore(preseeded={}), clock=NOW.timestamp)


async def call(app: IngestApp, method: str, path: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None) -> Reply:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": raw_headers, "query_string": b""}
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, content = sent[0], sent[1]
    return Reply(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, content["body"])


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@cache
def _registry() -> Registry[Any]:
    """The OpenAPI document and the JSON Schema files, by file URI (and each schema also by its $id)."""
    registry: Registry[Any] = Registry()
    registry = registry.with_resource(OPENAPI.as_uri(), DRAFT202012.create_resource(openapi()))
    for path in SCHEMAS.glob("*.schema.json"):
        resource = Resource.from_contents(load(path))
        # By file, by $id, and by file name next to the $ids (what a relative $ref in a schema with an $id means).
        registry = registry.with_resources([(path.as_uri(), resource), (load(path)["$id"], resource),
                                            (f"https://paystream.dev/schemas/{path.name}", resource)])
    return registry


def assert_documented(reply: Reply, method: str, template: str, *, response: str | None = None) -> None:
    """The reply's status, media type and body are what the OpenAPI document says for this operation."""
    pointer = (f"/components/responses/{response}" if response is not None
               else f"/paths/{_escape(template)}/{method.lower()}/responses/{reply.status}")
    documented = follow_pointer(openapi(), pointer)
    if "$ref" in documented:
        pointer = documented["$ref"].removeprefix("#")
        documented = follow_pointer(openapi(), pointer)
    media = reply.headers["content-type"].split(";")[0].strip()
    assert media in documented["content"], f"{reply.status} {media} is not documented for {method} {template}"
    schema = {"$ref": f"{OPENAPI.as_uri()}#{pointer}/content/{_escape(media)}/schema"}
    body: Any = orjson.loads(reply.body) if media == "application/json" else reply.body.decode()
    Draft202012Validator(schema, registry=_registry()).validate(body)
    for name, header in documented.get("headers", {}).items():
        if "$ref" in header:
            _, header = resolve(header["$ref"], OPENAPI)
        if header.get("required"):
            assert name.lower() in reply.headers, f"documented header {name} missing"


async def test_healthz_reply_matches_the_document(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path, ready=False), "GET", "/healthz")
    assert reply.status == 200
    assert_documented(reply, "GET", "/healthz")


async def test_readyz_replies_match_the_document(tmp_path: Path) -> None:
    ready = await call(make_app(tmp_path), "GET", "/readyz")
    not_ready = await call(make_app(tmp_path, ready=False), "GET", "/readyz")
    assert (ready.status, not_ready.status) == (200, 503)
    assert_documented(ready, "GET", "/readyz")
    assert_documented(not_ready, "GET", "/readyz")


async def test_metrics_reply_matches_the_document(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path), "GET", "/metrics")
    assert reply.status == 200
    assert_documented(reply, "GET", "/metrics")


async def test_accepted_observation_matches_the_document(tmp_path: Path) -> None:
    body = orjson.dumps({"provider": "stripe", "account": "main", "object_type": "payment_intent",
                         "object_id": "pi_1", "request_id": "req-1", "register_poll": True})
    request_schema = {"$ref": f"{OPENAPI.as_uri()}#/paths/~1v1~1observations/post/requestBody/content/"
                              "application~1json/schema"}
    Draft202012Validator(request_schema, registry=_registry()).validate(orjson.loads(body))  # via the shared file
    reply = await call(make_app(tmp_path), "POST", "/v1/observations", body, {"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 202
    assert_documented(reply, "POST", "/v1/observations")


async def test_observation_without_token_matches_the_documented_401(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path), "POST", "/v1/observations", b"{}")
    assert reply.status == 401
    assert_documented(reply, "POST", "/v1/observations")


async def test_malformed_observation_matches_the_documented_400(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path), "POST", "/v1/observations", b"{not json",
                       {"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 400
    assert_documented(reply, "POST", "/v1/observations")


async def test_unknown_account_matches_the_documented_404(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path), "POST", "/webhooks/stripe/nobody", b"{}")
    assert reply.status == 404
    assert_documented(reply, "POST", "/webhooks/{provider}/{account}")


async def test_body_over_the_limit_matches_the_documented_413(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path, max_body_bytes=1024), "POST", "/webhooks/stripe/main", b"x" * 2048)
    assert reply.status == 413
    assert_documented(reply, "POST", "/webhooks/{provider}/{account}")


async def test_bad_signature_matches_the_documented_401(tmp_path: Path) -> None:
    body = b'{"id":"evt_forged"}'
    reply = await call(make_app(tmp_path), "POST", "/webhooks/stripe/main", body,
                       {"Stripe-Signature": sign_stripe(body, "whsec_wrong", int(NOW.timestamp()))})
    assert reply.status == 401
    assert_documented(reply, "POST", "/webhooks/{provider}/{account}")


async def test_kafka_unavailable_matches_the_documented_503(tmp_path: Path) -> None:
    body = b'{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}'
    reply = await call(make_app(tmp_path, ready=False), "POST", "/webhooks/stripe/main", body,
                       {"Stripe-Signature": sign_stripe(body, STRIPE_SECRET, int(NOW.timestamp()))})
    assert reply.status == 503
    assert_documented(reply, "POST", "/webhooks/{provider}/{account}")


async def test_adyen_acceptance_matches_the_documented_text_body(tmp_path: Path) -> None:
    item = sign_adyen_item({"pspReference": "7914073381342284", "merchantAccountCode": "Test",
                            "merchantReference": "order-1", "amount": {"value": 1999, "currency": "EUR"},
                            "eventCode": "AUTHORISATION", "success": "true"}, ADYEN_KEY)
    reply = await call(make_app(tmp_path), "POST", "/webhooks/adyen/main", adyen_batch([item]),
                       {"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, b"[accepted]")
    assert_documented(reply, "POST", "/webhooks/{provider}/{account}")


async def test_hint_flood_matches_the_documented_429(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    first = await call(app, "POST", "/webhooks/mollie/main", mollie_hint("tr_first"), form)
    second = await call(app, "POST", "/webhooks/mollie/main", mollie_hint("tr_second"), form)
    assert (first.status, second.status) == (200, 429)
    assert_documented(first, "POST", "/webhooks/{provider}/{account}")
    assert_documented(second, "POST", "/webhooks/{provider}/{account}")


async def test_other_methods_match_the_documented_405(tmp_path: Path) -> None:
    reply = await call(make_app(tmp_path), "PUT", "/webhooks/stripe/main", b"{}")
    assert reply.status == 405
    assert_documented(reply, "PUT", "/webhooks/{provider}/{account}", response="MethodNotAllowed")


# --- the envelope JSON Schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENVELOPE_SCHEMAS.values()))
def test_envelope_schema_is_a_valid_2020_12_schema(name: str) -> None:
    schema = envelope_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("record_class", list(ENVELOPE_SCHEMAS), ids=lambda c: c.__name__)
def test_envelope_schema_names_exactly_the_dataclass_fields(record_class: type) -> None:
    schema = envelope_schema(ENVELOPE_SCHEMAS[record_class])
    fields = dataclasses.fields(record_class)
    without_default = {f.name for f in fields
                       if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert set(schema["properties"]) == {f.name for f in fields}
    # FetchResult.from_bytes reads a missing body as empty: the one field that is optional on the wire.
    assert set(schema["required"]) == without_default - ({"body"} if record_class is FetchResult else set())


async def test_real_inbox_envelopes_of_every_signed_provider_validate(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    stamp = int(NOW.timestamp())
    stripe_body = b'{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}'
    standard_body = b'{"type":"payment.succeeded","data":{"id":"pay_1"}}'
    adyen_item = sign_adyen_item({"pspReference": "7914073381342284", "merchantAccountCode": "Test",
                                  "merchantReference": "o-1", "amount": {"value": 5, "currency": "EUR"},
                                  "eventCode": "CAPTURE", "success": "true"}, ADYEN_KEY)
    requests = [
        ("stripe", stripe_body, {"Stripe-Signature": sign_stripe(stripe_body, STRIPE_SECRET, stamp)}),
        ("standard", standard_body, sign_standard(standard_body, STANDARD_SECRET, "msg_1", stamp)),
        ("adyen", adyen_batch([adyen_item]), {"Content-Type": "application/json"}),
        ("mollie", mollie_hint("tr_1"), {"Content-Type": "application/x-www-form-urlencoded"}),
    ]
    for provider, body, headers in requests:
        reply = await call(app, "POST", f"/webhooks/{provider}/main", body, {"Content-Type": "application/json",
                                                                            **headers})
        assert reply.status == 200, (provider, reply.body)
    published = app.publisher.published  # type: ignore[attr-defined]
    assert {e.kind for e in published} == {"event", "hint"}
    for envelope in published:
        envelope_validator("inbox-envelope").validate(as_record(envelope))


async def test_real_sync_envelope_validates(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    body = orjson.dumps({"provider": "stripe", "account": "main", "object_type": "payment_intent",
                         "object_id": "pi_1", "request_id": "req-1",
                         "state": {"provider_status": "succeeded", "amount": 1999, "currency": "EUR"}})
    reply = await call(app, "POST", "/v1/observations", body, {"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 202
    [envelope] = app.publisher.published  # type: ignore[attr-defined]
    envelope_validator("inbox-envelope").validate(as_record(envelope))


def test_replayed_inbox_envelope_validates() -> None:
    envelope = InboxEnvelope("stripe", "main", "evt_1", "event", to_rfc3339(NOW), b"\x00\xff raw",
                             {"content-type": "application/json"},
                             {"verifier": "stripe-v1", "key_id": "secret[0]", "ok": True},
                             replay=ReplayMark(to_rfc3339(NOW), "s3://archive/raw/2026/03/01/x.jsonl.gz#7", True))
    envelope_validator("inbox-envelope").validate(as_record(envelope))


def test_inbox_schema_refuses_what_from_bytes_refuses() -> None:
    envelope = InboxEnvelope("stripe", "main", "evt_1", "event", to_rfc3339(NOW), b"{}",
                             verification={"verifier": "stripe-v1", "key_id": None, "ok": True})
    record = as_record(envelope) | {"unexpected": 1}
    with pytest.raises(NormalizationError):
        InboxEnvelope.from_bytes(orjson.dumps(record))
    assert not envelope_validator("inbox-envelope").is_valid(record)


def test_inbox_schema_refuses_a_body_that_is_not_base64() -> None:
    envelope = InboxEnvelope("stripe", "main", "evt_1", "event", to_rfc3339(NOW), b"{}",
                             verification={"verifier": "stripe-v1", "key_id": None, "ok": True})
    record = as_record(envelope) | {"body": "not base64!"}
    with pytest.raises(NormalizationError):
        InboxEnvelope.from_bytes(orjson.dumps(record))
    assert not envelope_validator("inbox-envelope").is_valid(record)


def test_real_stale_poll_fetch_request_validates() -> None:
    request = poll_request("amazon_pay:eu-main:charge:S02-1234567-1234567-C000001", "amazon_pay", "eu-main",
                           "charge", "S02-1234567-1234567-C000001", since=NOW.timestamp() - 600, poll=2, version=7,
                           schedule=PollSchedule(gaps_s=[60, 300], repeat_s=3600), now=NOW)
    envelope_validator("fetch-request").validate(as_record(request))


def test_fetch_request_with_evidence_validates() -> None:
    request = FetchRequest("mollie:main:payment:tr_1", "mollie", "main", "payment", "tr_1", "hint",
                           to_rfc3339(NOW), to_rfc3339(NOW), "mollie-hint-1:fetch", evidence_id="mollie-hint-1")
    envelope_validator("fetch-request").validate(as_record(request))


def test_fetch_request_schema_refuses_an_unknown_reason() -> None:
    request = FetchRequest("mollie:main:payment:tr_1", "mollie", "main", "payment", "tr_1", "hint",
                           to_rfc3339(NOW), to_rfc3339(NOW), "r-1")
    assert not envelope_validator("fetch-request").is_valid(as_record(request) | {"reason": "curiosity"})


def test_fetched_object_result_validates() -> None:
    result = FetchResult("stripe:main:payment_intent:pi_1", "stripe", "main", "payment_intent", "pi_1", "f-1",
                         "r-1", "thin_push", to_rfc3339(NOW), "ok", 200, b'{"id":"pi_1","status":"succeeded"}')
    envelope_validator("fetch-result").validate(as_record(result))


def test_failed_fetch_result_without_answer_validates() -> None:
    result = FetchResult("stripe:main:payment_intent:pi_1", "stripe", "main", "payment_intent", "pi_1", "f-2",
                         "r-1", "stale", to_rfc3339(NOW), "timeout", None, attempt=3)
    envelope_validator("fetch-result").validate(as_record(result))


def test_fetch_result_schema_refuses_a_payment_key_of_another_shape() -> None:
    result = FetchResult("pi_1", "stripe", "main", "payment_intent", "pi_1", "f-1", "r-1", "sweep",
                         to_rfc3339(NOW), "ok", 200, b"{}", object_kind="event")
    assert not envelope_validator("fetch-result").is_valid(as_record(result))


# --- AsyncAPI -----------------------------------------------------------------------------------------


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = load(ASYNCAPI)
    return document


def channel_by_address() -> dict[str, dict[str, Any]]:
    return {channel["address"]: channel for channel in asyncapi()["channels"].values()}


def messages() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = asyncapi()["components"]["messages"]
    return found


def test_asyncapi_document_is_version_3_0_0() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert set(document) <= {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations",
                             "components"}


def test_every_ref_of_the_asyncapi_document_resolves() -> None:
    assert dangling_refs(ASYNCAPI) == []


def test_channel_addresses_are_the_default_topic_names() -> None:
    assert sorted(channel_by_address()) == sorted(TopicSettings().all_names())


def test_channel_bindings_match_the_topic_settings() -> None:
    topics = TopicSettings()
    for address, channel in channel_by_address().items():
        kafka = channel["bindings"]["kafka"]
        assert (kafka["partitions"], kafka["replicas"]) == (topics.partitions, topics.replication_factor), address
        assert kafka["topicConfiguration"]["retention.ms"] == topics.retention_ms(address), address
        assert kafka["topicConfiguration"]["cleanup.policy"] == [topics.cleanup_policy(address)], address


def _payload_schema(message: Mapping[str, Any]) -> tuple[type[Draft7Validator] | type[Draft202012Validator],
                                                         dict[str, Any]]:
    payload = message["payload"]
    if "schemaFormat" not in payload:  # an AsyncAPI Schema Object: a superset of draft-07
        return Draft7Validator, payload
    assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    _, schema = resolve(payload["schema"]["$ref"], ASYNCAPI)
    return Draft202012Validator, schema


def test_every_message_payload_is_a_valid_json_schema() -> None:
    for name, message in messages().items():
        validator, schema = _payload_schema(message)
        validator.check_schema(schema)  # raises SchemaError
        for part in (message.get("headers"), message["bindings"]["kafka"]["key"]):
            if part is not None:
                Draft7Validator.check_schema(part)
        assert message["name"] == name


def test_typed_payloads_reference_the_json_schema_files() -> None:
    referenced = {name: message["payload"]["schema"]["$ref"] for name, message in messages().items()
                  if "schemaFormat" in message["payload"]}
    assert referenced == {
        "InboxEnvelope": "./inbox-envelope.schema.json",
        "FetchRequest": "./fetch-request.schema.json",
        "FetchResult": "./fetch-result.schema.json",
        "PaymentStatusEvent": "./payment-status-event.schema.json",
        "PaymentState": "./payment-state.schema.json",
    }


def test_documented_keys_match_the_keys_the_records_carry() -> None:
    envelope = InboxEnvelope("amazon_pay", "eu-main", "0b3e-4f1a", "thin", to_rfc3339(NOW), b"{}")
    request = FetchRequest("amazon_pay:eu-main:charge:S02-1", "amazon_pay", "eu-main", "charge", "S02-1",
                           "thin_push", to_rfc3339(NOW), to_rfc3339(NOW), "0b3e-4f1a:fetch")
    for name, key in (("InboxEnvelope", envelope.key), ("FetchRequest", request.key),
                      ("FetchResult", request.key), ("PaymentStatusEvent", request.key),
                      ("PaymentState", request.key)):
        Draft7Validator(messages()[name]["bindings"]["kafka"]["key"]).validate(key.decode())
    assert not Draft7Validator(messages()["FetchRequest"]["bindings"]["kafka"]["key"]).is_valid(envelope.key.decode())


def test_status_messages_carry_the_content_types_the_processor_writes() -> None:
    status = messages()["PaymentStatusEvent"]
    assert status["contentType"] == EVENT_CONTENT_TYPE
    assert status["headers"]["properties"]["content-type"]["const"] == EVENT_CONTENT_TYPE
    state = messages()["PaymentState"]
    assert state["contentType"] == STATE_CONTENT_TYPE.decode()
    assert state["headers"]["properties"]["content-type"]["const"] == STATE_CONTENT_TYPE.decode()


def test_the_current_state_schema_embeds_the_status_event_schema() -> None:
    """A payments.state.v1 value is a document whose `event` is the payment's latest status event."""
    _, state = resolve("./payment-state.schema.json", ASYNCAPI)
    Draft202012Validator.check_schema(state)
    assert {"$ref": "payment-status-event.schema.json"} in state["properties"]["event"]["anyOf"]


def test_dead_letter_headers_are_the_ones_processors_write() -> None:
    headers = messages()["DeadLetter"]["headers"]
    assert set(headers["properties"]) == set(dlq.OURS)
    assert set(headers["required"]) == set(dlq.OURS)


def _operations() -> list[tuple[str, dict[str, Any]]]:
    return list(asyncapi()["operations"].items())


def test_every_operation_sends_or_receives_messages_of_its_own_channel() -> None:
    for name, operation in _operations():
        assert operation["action"] in {"send", "receive"}, name
        channel_ref = operation["channel"]["$ref"]
        resolve(channel_ref, ASYNCAPI)  # raises when the channel does not exist
        assert operation["messages"], name
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name
        assert len(operation["tags"]) == 1, f"{name}: one process per operation"


EXPECTED_FLOWS = {
    ("ingest", "send", "payments.inbox.v1"),
    ("process", "receive", "payments.inbox.v1"),
    ("process", "receive", "payments.fetch.results.v1"),
    ("process", "send", "payments.fetch.requests.v1"),
    ("process", "send", "payments.status.v1"),
    ("process", "send", "payments.state.v1"),
    ("process", "send", "payments.dlq.v1"),
    ("fetch", "receive", "payments.fetch.requests.v1"),
    ("fetch", "send", "payments.fetch.requests.v1"),
    ("fetch", "send", "payments.fetch.results.v1"),
    ("fetch", "send", "payments.dlq.v1"),
    ("archive", "receive", "payments.inbox.v1"),
    ("archive", "receive", "payments.fetch.results.v1"),
    ("replay", "send", "payments.inbox.v1"),
}


def test_operations_describe_the_data_flow_of_each_process() -> None:
    flows = set()
    for _, operation in _operations():
        _, channel = resolve(operation["channel"]["$ref"], ASYNCAPI)
        flows.add((operation["tags"][0]["name"], operation["action"], channel["address"]))
    assert flows == EXPECTED_FLOWS


def test_consumer_groups_are_the_code_defaults() -> None:
    expected = {"process": ProcessorSettings().app_id, "fetch": FetchOptions().group_id,
                "archive": f"{KafkaSettings().client_id}-archiver"}
    for name, operation in _operations():
        if operation["action"] == "receive":
            group = operation["bindings"]["kafka"]["groupId"]["const"]
            assert group == expected[operation["tags"][0]["name"]], name


def test_real_state_documents_validate_against_the_state_schema() -> None:
    """Documents the reconcile stage writes: an event's, a thin-pushed payment's (no event, polled), a
    quarantined one's and one whose polling ended."""
    from processors.payment_record import PaymentRecord, Quarantine
    from processors.scheduling import PollChain, PollSchedule
    from processors.state_doc import document
    from schemas.event import build_event, serialize_event
    from schemas.join import advance
    from schemas.observation import Observation
    from schemas.status import ObjectKind, PaymentStatus, Source

    schema = load(SCHEMAS / "payment-state.schema.json")
    validator = Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker())
    observation = Observation(provider="stripe", account="main", object_type="payment_intent", object_id="pi_1",
                              kind=ObjectKind.PAYMENT, status=PaymentStatus.PENDING, provider_status="processing",
                              source=Source.PUSH, evidence_id="evt_1", occurred_at=NOW, observed_at=NOW)
    step = advance(None, observation, NOW)
    assert step.event is not None
    event = serialize_event(build_event(step.state, NOW)).decode()
    key = "stripe:main:payment_intent:pi_1"
    schedule = PollSchedule([60], 3600)
    records = [
        PaymentRecord(NOW.timestamp(), step.state, last_event=event,
                      chain=PollChain(NOW.timestamp(), 1, "r-1", version=1)),
        PaymentRecord(NOW.timestamp(), chain=PollChain(NOW.timestamp(), 2, "r-2", version=2)),
        PaymentRecord(NOW.timestamp(), step.state, last_event=event,
                      quarantine=Quarantine("record_size_cap", NOW.timestamp(), 600_000)),
        PaymentRecord(NOW.timestamp(), polling_ended=("not_found", NOW.timestamp())),
    ]
    for record in records:
        validator.validate(orjson.loads(document(key, record, schedule, NOW)))
