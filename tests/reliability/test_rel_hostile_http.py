"""Hostile bodies and framing on every route: oversized, wrong content types, invalid UTF-8, deep nesting,
requests the HTTP parser itself must refuse. Signed where a signature would otherwise decide first, so
each test reaches the check it is about. The last test: nothing refused reached the inbox.
"""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest
from http_harness import (
    ACCOUNT,
    SNS_ACCOUNT,
    STANDARD_SECRET,
    STRIPE_SECRET,
    Deliveries,
    read_reply,
    request_head,
)
from reliability_harness import HostileTarget, http_request, raw_exchange, rejections_sum

from ingest.providers.signers import sign_standard, sign_stripe

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

STRIPE = f"/webhooks/stripe/{ACCOUNT}"
STANDARD = f"/webhooks/standard/{ACCOUNT}"
ADYEN = f"/webhooks/adyen/{ACCOUNT}"
MOLLIE = f"/webhooks/mollie/{ACCOUNT}"
SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
OBSERVATIONS = "/v1/observations"
JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


def stripe_signed(body: bytes) -> dict[str, str]:
    return {**JSON, "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, int(time.time()))}


def standard_signed(body: bytes) -> dict[str, str]:
    return {**JSON, **sign_standard(body, STANDARD_SECRET, f"msg_{time.monotonic_ns()}", int(time.time()))}


def headers_for(route: str, body: bytes, target: HostileTarget) -> dict[str, str]:
    """Headers that get ``body`` past authentication on ``route`` (signed / bearer), so the body decides."""
    if route == STRIPE:
        return stripe_signed(body)
    if route == STANDARD:
        return standard_signed(body)
    if route == OBSERVATIONS:
        return target.running.bearer()
    if route == MOLLIE:
        return {"Content-Type": "application/x-www-form-urlencoded"}
    return {"Content-Type": "text/plain; charset=UTF-8"} if route == SNS else dict(JSON)


ALL_ROUTES = [STRIPE, STANDARD, ADYEN, MOLLIE, SNS, OBSERVATIONS]


# --- 413 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_body_one_byte_over_the_limit_is_413(hostile_target: HostileTarget, route: str) -> None:
    body = b"x" * (hostile_target.running.settings.http.max_body_bytes + 1)

    reply = await hostile_target.refused(route, body, headers_for(route, body, hostile_target))

    assert (reply.status, reply.json()["error"]) == (413, "body_too_large")


async def test_chunked_observation_body_over_the_limit_is_413(hostile_target: HostileTarget) -> None:
    chunk = b"x" * 65536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    head = request_head(OBSERVATIONS, {**hostile_target.running.bearer(), "Transfer-Encoding": "chunked"})
    before = rejections_sum()
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
    try:
        writer.write(head)
        reply_task = asyncio.create_task(read_reply(reader))
        sent = 0
        try:
            while sent < 8 * MIB and not reply_task.done():
                writer.write(framed)
                sent += len(chunk)
                await writer.drain()
                await asyncio.sleep(0)
        except ConnectionError:
            pass
        reply = await asyncio.wait_for(reply_task, timeout=30)
    finally:
        writer.close()

    assert (reply.status, reply.json()["error"]) == (413, "body_too_large")
    assert rejections_sum() >= before + 1


async def test_unauthenticated_oversized_observation_is_401_without_reading_the_body(
    hostile_target: HostileTarget,
) -> None:
    body = b"x" * (2 * MIB)

    reply = await hostile_target.refused(OBSERVATIONS, body, JSON)

    assert (reply.status, reply.json()["error"]) == (401, "missing_token")


# --- wrong content types --------------------------------------------------------------------------


async def test_mollie_hint_sent_as_json_is_400(hostile_target: HostileTarget) -> None:
    reply = await hostile_target.refused(MOLLIE, b'{"id": "tr_WDqYK6vllg"}', JSON)

    assert (reply.status, reply.json()["error"]) == (400, "malformed_hint")


async def test_mollie_hint_form_under_a_json_content_type_is_400(hostile_target: HostileTarget) -> None:
    reply = await hostile_target.refused(MOLLIE, b"id=tr_WDqYK6vllg", JSON)

    assert (reply.status, reply.json()["error"]) == (400, "malformed_hint")


async def test_observation_sent_as_a_form_is_400(hostile_target: HostileTarget) -> None:
    headers = {**hostile_target.running.bearer(), "Content-Type": "application/x-www-form-urlencoded"}

    reply = await hostile_target.refused(OBSERVATIONS, b"provider=stripe&account=main", headers)

    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")


async def test_sns_message_sent_as_a_form_is_400(hostile_target: HostileTarget) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "x-amz-sns-message-type": "Notification"}

    reply = await hostile_target.refused(SNS, b"Type=Notification&MessageId=1&Message=x", headers)

    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")


async def test_adyen_batch_sent_as_multipart_is_400(hostile_target: HostileTarget) -> None:
    body = b"--b\r\nContent-Disposition: form-data; name=\"notificationItems\"\r\n\r\n[]\r\n--b--\r\n"

    reply = await hostile_target.refused(ADYEN, body, {"Content-Type": "multipart/form-data; boundary=b"})

    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")


async def test_unsigned_stripe_event_under_any_content_type_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    for content_type in ("text/xml", "application/octet-stream", "multipart/form-data; boundary=x", ""):
        reply = await hostile_target.refused(STRIPE, rel_deliveries.stripe_event(), {"Content-Type": content_type})
        assert reply.status == 401


# --- invalid UTF-8 --------------------------------------------------------------------------------

INVALID_UTF8 = b'{"id": "evt_\xff\xfe\xc3\x28", "object": "event"}'


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_body_with_invalid_utf8_is_400(hostile_target: HostileTarget, route: str) -> None:
    body = b"id=tr_\xff\xfe" if route == MOLLIE else INVALID_UTF8

    reply = await hostile_target.refused(route, body, headers_for(route, body, hostile_target))

    assert reply.status == 400


async def test_standard_webhook_id_with_non_ascii_bytes_is_401(hostile_target: HostileTarget) -> None:
    body = b'{"type":"payment.succeeded"}'
    headers = standard_signed(body)
    raw = [(name.encode(), value.encode()) for name, value in headers.items() if name != "webhook-id"]
    raw.append((b"webhook-id", b"msg_\xff\xfe\x80"))

    reply = await hostile_target.refused_raw(http_request(STANDARD, raw, body))

    assert (reply.status, reply.json()["error"]) == (401, "malformed_header")


async def test_standard_webhook_signature_with_non_ascii_bytes_is_401(hostile_target: HostileTarget) -> None:
    """Found by the fuzzer: a non-ASCII byte in a ``v1,`` entry made base64 raise ValueError → 500."""
    body = b'{"type":"payment.succeeded"}'
    headers = standard_signed(body)
    raw = [(name.encode(), value.encode()) for name, value in headers.items() if name != "webhook-signature"]
    raw.append((b"webhook-signature", b"v1,\x93" + base64.b64encode(b"0" * 32)))

    reply = await hostile_target.refused_raw(http_request(STANDARD, raw, body))

    assert (reply.status, reply.json()["error"]) == (401, "bad_signature")


async def test_stripe_signature_header_with_non_ascii_bytes_is_401(hostile_target: HostileTarget) -> None:
    body = b'{"id":"evt_1","object":"event"}'
    raw = [(b"Content-Type", b"application/json"), (b"Stripe-Signature", b"t=\xb9\xb2\xb3,v1=\xff\xfe")]

    reply = await hostile_target.refused_raw(http_request(STRIPE, raw, body))

    assert reply.status == 401


async def test_sns_signature_with_non_ascii_characters_is_401(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    """A JSON string may hold any character: base64 of a non-ASCII str raises ValueError, not binascii.Error."""
    body, headers = rel_deliveries.sns()
    message = orjson.loads(body)
    message["Signature"] = "\u00e9" + message["Signature"][1:]

    reply = await hostile_target.refused(SNS, orjson.dumps(message), headers)

    assert (reply.status, reply.json()["error"]) == (401, "bad_signature")


# --- deeply nested JSON ---------------------------------------------------------------------------

NESTING_ROUTES = [STRIPE, STANDARD, ADYEN, SNS, OBSERVATIONS]


@pytest.mark.parametrize("route", NESTING_ROUTES)
async def test_100k_open_brackets_are_400_not_a_recursion_error(hostile_target: HostileTarget, route: str) -> None:
    body = b"[" * 100_000

    reply = await hostile_target.refused(route, body, headers_for(route, body, hostile_target))

    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")


@pytest.mark.parametrize("route", NESTING_ROUTES)
async def test_100k_nested_objects_are_400_not_a_recursion_error(hostile_target: HostileTarget, route: str) -> None:
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000

    reply = await hostile_target.refused(route, body, headers_for(route, body, hostile_target))

    assert (reply.status, reply.json()["error"]) == (400, "malformed_json")


async def test_deep_nesting_inside_an_sns_message_string_is_refused(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    message = rel_deliveries.sns_message()
    message["Message"] = "[" * 100_000  # the inner IPN is parsed after the signature; unsigned here

    reply = await hostile_target.refused(SNS, orjson.dumps(message), {"Content-Type": "text/plain"})

    assert (reply.status, reply.json()["error"]) == (401, "missing_signature")


# --- refused by the HTTP parser (uvicorn/httptools answers 400 itself; no paystream metric) ---------

SMUGGLING_AND_BROKEN_FRAMING = [
    ("content-length and chunked", b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two content-lengths", b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}"),
    ("negative content-length", b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    ("superscript digits in content-length", b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: \xb9\xb2\r\n\r\n"),
    ("NUL in a header", b"POST %s HTTP/1.1\r\nHost: a\r\nStripe-Signature: t=1\x00v1=a\r\nContent-Length: 0\r\n\r\n"),
    ("bare LF line ends", b"POST %s HTTP/1.1\nHost: a\nContent-Length: 0\n\n"),
    ("space before the colon", b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n"),
    ("bad chunk size", b"POST %s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize(("trick", "request_bytes"), SMUGGLING_AND_BROKEN_FRAMING, ids=lambda v: str(v)[:40])
async def test_broken_framing_is_refused_by_the_parser(
    hostile_target: HostileTarget, trick: str, request_bytes: bytes
) -> None:
    reply = await raw_exchange(hostile_target.port, request_bytes.replace(b"%s", STRIPE.encode()))

    assert reply.status == 400, (trick, reply.body)


async def test_other_methods_on_a_webhook_route_are_405(hostile_target: HostileTarget) -> None:
    for method in (b"PUT", b"DELETE", b"PATCH", b"OPTIONS"):
        reply = await hostile_target.refused_raw(http_request(STRIPE, [], b"{}", method=method))
        assert (reply.status, reply.json()["error"]) == (405, "method_not_allowed")


# --- closing check --------------------------------------------------------------------------------


async def test_nothing_refused_reached_the_inbox(hostile_target: HostileTarget) -> None:
    await hostile_target.assert_inbox_holds_only_accepted()
    assert hostile_target.accepted_keys == set()
