"""Hypothesis-generated requests against every verifier route: each one is refused, none escapes as a 500.

Requests go out as exact bytes on a raw socket (no client library tidies the headers). Generated
header values use every byte HTTP allows in a field value (visible ASCII, space, tab and obs-text
0x80-0xFF), so they reach the app; bytes the HTTP parser itself refuses are covered in
test_rel_hostile_http.py. Besides random bodies and headers, "near misses" take a correctly signed
delivery and change one byte of what the signature covers — the closest a forger gets.

Every reply must be a refusal status with a JSON error body and a counted rejection; the last test
reads the module's inbox topic: nothing was published.
"""

from __future__ import annotations

import string

import orjson
import pytest
from http_harness import ACCOUNT, SNS_ACCOUNT, Deliveries
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reliability_harness import HostileTarget, http_request

from ingest.providers.mollie.verify import parse_hint
from paystream.errors import MalformedDelivery

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

STRIPE = f"/webhooks/stripe/{ACCOUNT}"
STANDARD = f"/webhooks/standard/{ACCOUNT}"
ADYEN = f"/webhooks/adyen/{ACCOUNT}"
MOLLIE = f"/webhooks/mollie/{ACCOUNT}"
SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
OBSERVATIONS = "/v1/observations"

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names the verifiers read, and the framing headers a generated request must not carry (the request
# builder sets Content-Length itself; a generated Transfer-Encoding would only test the parser).
INTERESTING_NAMES = [b"stripe-signature", b"webhook-id", b"webhook-timestamp", b"webhook-signature",
                     b"content-type", b"authorization", b"x-amz-sns-message-type", b"x-amz-sns-topic-arn"]
FRAMING = {b"content-length", b"transfer-encoding", b"host", b"connection", b"expect", b"upgrade", b"te",
           b"trailer"}
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# Field-value bytes: visible ASCII, space, tab, obs-text (0x80-0xFF).
FIELD_BYTES = [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]

header_names = st.one_of(
    st.sampled_from(INTERESTING_NAMES),
    st.text(TCHAR, min_size=1, max_size=30).map(str.encode).filter(lambda n: n.lower() not in FRAMING),
)
header_values = st.lists(st.sampled_from(FIELD_BYTES), max_size=200).map(bytes).map(bytes.strip)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=30,
)
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(orjson.dumps),
    st.text(max_size=300).map(str.encode),
)


def flip(data: bytes, index: int, replacement: int) -> bytes:
    """``data`` with the byte at ``index`` (modulo its length) changed to another value."""
    position = index % len(data)
    new = replacement if replacement != data[position] else (replacement + 1) % 256
    return data[:position] + bytes([new]) + data[position + 1:]


def header_flip(value: str, index: int, replacement: int) -> bytes:
    """A header value with one byte changed to another legal field-value byte."""
    raw = value.encode("latin-1")
    position = index % len(raw)
    choices = [b for b in FIELD_BYTES if b != raw[position] and b not in (0x09, 0x20)]
    return raw[:position] + bytes([choices[replacement % len(choices)]]) + raw[position + 1:]


def encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]


# --- random bodies and headers on every route --------------------------------------------------------


@FUZZ
@given(body=bodies, headers=header_lists)
async def test_stripe_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await hostile_target.refused_raw(http_request(STRIPE, headers, body))


@FUZZ
@given(body=bodies, headers=header_lists)
async def test_standard_webhooks_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await hostile_target.refused_raw(http_request(STANDARD, headers, body))


@FUZZ
@given(body=bodies, headers=header_lists)
async def test_adyen_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await hostile_target.refused_raw(http_request(ADYEN, headers, body))


@FUZZ
@given(body=bodies, headers=header_lists)
async def test_sns_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await hostile_target.refused_raw(http_request(SNS, headers, body))


def _well_formed_hint(body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    content_type = next((v.decode("latin-1") for n, v in headers if n.lower() == b"content-type"), None)
    try:
        parse_hint(body, content_type)
    except MalformedDelivery:
        return False
    return True


@FUZZ
@given(
    body=st.one_of(bodies, st.text(string.printable, max_size=100).map(lambda t: b"id=" + t.encode())),
    headers=header_lists,
)
async def test_mollie_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    # A well-formed hint is accepted by design (Mollie signs nothing); everything else is refused.
    assume(not _well_formed_hint(body, headers))
    await hostile_target.refused_raw(http_request(MOLLIE, headers, body))


@FUZZ
@given(body=bodies, headers=header_lists, authenticated=st.booleans())
async def test_observations_route_refuses_generated_requests(
    hostile_target: HostileTarget, body: bytes, headers: list[tuple[bytes, bytes]], authenticated: bool
) -> None:
    if authenticated:  # past the token check, the body itself is what is refused
        headers = [(n, v) for n, v in headers if n.lower() != b"authorization"]
        headers.append((b"authorization", hostile_target.running.bearer()["Authorization"].encode()))
    await hostile_target.refused_raw(http_request(OBSERVATIONS, headers, body))


@FUZZ
@given(
    provider=st.text(TCHAR.replace("%", ""), min_size=1, max_size=20),  # no %-escapes: no decoded "stripe"
    account=st.text(TCHAR.replace("%", ""), min_size=1, max_size=20),
    body=bodies,
)
async def test_unknown_provider_or_account_routes_are_404(
    hostile_target: HostileTarget, provider: str, account: str, body: bytes
) -> None:
    assume((provider, account) not in {("stripe", ACCOUNT), ("standard", ACCOUNT), ("adyen", ACCOUNT),
                                       ("mollie", ACCOUNT), ("amazon_pay", SNS_ACCOUNT)})
    assume(provider not in (".", "..") and account not in (".", ".."))  # dot segments change the path
    reply = await hostile_target.refused_raw(http_request(f"/webhooks/{provider}/{account}", [], body))
    assert reply.status == 404


# --- near misses: a correctly signed delivery with one byte changed ----------------------------------


@FUZZ
@given(index=st.integers(min_value=0), replacement=st.integers(0, 255), in_header=st.booleans())
async def test_stripe_delivery_with_one_signed_byte_changed_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, index: int, replacement: int, in_header: bool
) -> None:
    body, headers = rel_deliveries.stripe()
    signature = headers.pop("Stripe-Signature")
    if in_header:
        raw_headers = [*encoded(headers), (b"Stripe-Signature", header_flip(signature, index, replacement))]
    else:
        body = flip(body, index, replacement)
        raw_headers = [*encoded(headers), (b"Stripe-Signature", signature.encode())]
    reply = await hostile_target.refused_raw(http_request(STRIPE, raw_headers, body))
    assert reply.status == 401


@FUZZ
@given(index=st.integers(min_value=0), replacement=st.integers(0, 255),
       target=st.sampled_from(["body", "webhook-id", "webhook-timestamp", "webhook-signature"]))
async def test_standard_webhooks_delivery_with_one_signed_byte_changed_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, index: int, replacement: int, target: str
) -> None:
    body, headers = rel_deliveries.standard()
    raw_headers = encoded(headers)
    if target == "body":
        body = flip(body, index, replacement)
    else:
        raw_headers = [(n, header_flip(headers[target], index, replacement) if n.decode() == target else v)
                       for n, v in raw_headers]
    reply = await hostile_target.refused_raw(http_request(STANDARD, raw_headers, body))
    assert reply.status == 401


@FUZZ
@given(index=st.integers(min_value=0), replacement=st.sampled_from(string.ascii_letters + string.digits + "+/"),
       field=st.sampled_from(["pspReference", "merchantReference", "eventCode", "success", "hmacSignature"]))
async def test_adyen_item_with_one_signed_character_changed_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, index: int, replacement: str, field: str
) -> None:
    item = rel_deliveries.adyen_item()
    holder: dict[str, object] = item["additionalData"] if field == "hmacSignature" else item  # type: ignore[assignment]
    value = str(holder[field])
    position = index % len(value)
    assume(value[position] != replacement)
    holder[field] = value[:position] + replacement + value[position + 1:]
    body, headers = rel_deliveries.adyen([item])
    reply = await hostile_target.refused_raw(http_request(ADYEN, encoded(headers), body))
    assert reply.status == 401


@FUZZ
@given(index=st.integers(min_value=0), replacement=st.sampled_from(string.ascii_letters + string.digits),
       field=st.sampled_from(["Message", "MessageId", "Timestamp", "TopicArn", "Signature"]))
async def test_sns_message_with_one_signed_character_changed_is_refused(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, index: int, replacement: str, field: str
) -> None:
    body, headers = rel_deliveries.sns()
    message = orjson.loads(body)
    value = str(message[field])
    position = index % len(value)
    assume(value[position] != replacement)
    message[field] = value[:position] + replacement + value[position + 1:]
    reply = await hostile_target.refused_raw(http_request(SNS, encoded(headers), orjson.dumps(message)))
    # 401 (signature, topic) or 400 (a Timestamp no longer ISO 8601).
    assert reply.status in (400, 401)


# --- closing check --------------------------------------------------------------------------------


async def test_nothing_refused_reached_the_inbox(hostile_target: HostileTarget) -> None:
    await hostile_target.assert_inbox_holds_only_accepted()
    assert hostile_target.accepted_keys == set()
