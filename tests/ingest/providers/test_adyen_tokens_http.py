"""Adyen Tokenization webhooks over real sockets: one flat test per failure mode, and the accepted delivery on
the real broker.

Each rejection leaves the trail of every other ingest rejection (http_harness.assert_rejected): its status, a
JSON ``{"error", "detail"}`` body, one warning log line with the reason, ``paystream_ingest_rejections_total``
+ 1, and for a 401 ``paystream_signature_failures_total`` + 1. They run against ``offline_ingest`` (its broker
never answers): a rejection must not depend on Kafka. Bodies are Adyen's own examples (Adyen/adyen-openapi
json/TokenizationNotification-v1.json, tests/fixtures/catalogs/adyen_token_webhook_types.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from http_harness import ACCOUNT, ADYEN_HEX_KEY, RunningIngest, counter_value, post_rejected, read_inbox

from ingest.providers.adyen.verify import decode_key, sign_body

ADYEN = f"/webhooks/adyen/{ACCOUNT}"
EXAMPLES = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "catalogs" /
                       "adyen_token_webhook_types.json").read_text())["examples"]
CREATED = orjson.dumps(EXAMPLES["recurring.token.created"])
OTHER_KEY = "00" * 32


def headers_for(body: bytes, key: str = ADYEN_HEX_KEY) -> dict[str, str]:
    return {"Content-Type": "application/json", "HmacSignature": sign_body(body, decode_key(key))}


def signature_failures(reason: str) -> float:
    return counter_value("paystream_signature_failures_total", provider="adyen", reason=reason)


async def test_token_webhook_without_hmac_signature_header_is_401(offline_ingest: RunningIngest) -> None:
    before = signature_failures("missing_header")
    await post_rejected(offline_ingest, ADYEN, CREATED, {"Content-Type": "application/json"}, status=401,
                        reason="missing_header", provider="adyen")
    assert signature_failures("missing_header") == before + 1


async def test_token_webhook_changed_after_signing_is_401(offline_ingest: RunningIngest) -> None:
    tampered = CREATED.replace(b'"visastandarddebit"', b'"mcstandarddebit"')
    assert tampered != CREATED
    before = signature_failures("bad_signature")
    await post_rejected(offline_ingest, ADYEN, tampered, headers_for(CREATED), status=401, reason="bad_signature",
                        provider="adyen")
    assert signature_failures("bad_signature") == before + 1


async def test_token_webhook_signed_with_a_key_not_configured_is_401(offline_ingest: RunningIngest) -> None:
    before = signature_failures("bad_signature")
    await post_rejected(offline_ingest, ADYEN, CREATED, headers_for(CREATED, OTHER_KEY), status=401,
                        reason="bad_signature", provider="adyen")
    assert signature_failures("bad_signature") == before + 1


async def test_signed_token_webhook_without_a_data_object_is_400(offline_ingest: RunningIngest) -> None:
    body = orjson.dumps({**EXAMPLES["recurring.token.created"], "data": ["M5N7TQ4TG5PFWR50"]})
    await post_rejected(offline_ingest, ADYEN, body, headers_for(body), status=400, reason="malformed_event",
                        provider="adyen")


@pytest.mark.kafka
async def test_token_webhook_lands_on_the_inbox_with_its_exact_bytes(ingest: RunningIngest) -> None:
    published_before = counter_value("paystream_ingest_published_total", provider="adyen", kind="event")
    headers = headers_for(CREATED)

    reply = await ingest.post(ADYEN, CREATED, headers)

    assert (reply.status, reply.body) == (200, b"[accepted]")  # Adyen accepts any 2xx for these
    assert reply.headers["content-type"].startswith("text/plain")
    [(key, envelope)] = await read_inbox(ingest.settings)
    delivery_id = "recurring.token.created:QBQQ9DLNRHHKGK38:M5N7TQ4TG5PFWR50"
    assert key == f"adyen:{ACCOUNT}:recurring_contract:M5N7TQ4TG5PFWR50".encode()  # keyed by its agreement
    assert (envelope.provider, envelope.account, envelope.delivery_id, envelope.kind) == (
        "adyen", ACCOUNT, delivery_id, "event")
    assert envelope.body == CREATED
    assert envelope.verification == {"verifier": "adyen-hmac-header", "key_id": "secret[0]", "ok": True}
    assert envelope.headers["hmacsignature"] == headers["HmacSignature"]  # kept for replay --reverify
    assert envelope.object_ids["object_id"] == "M5N7TQ4TG5PFWR50"
    assert counter_value("paystream_ingest_published_total", provider="adyen", kind="event") == published_before + 1
