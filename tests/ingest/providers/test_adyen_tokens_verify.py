"""Adyen webhooks signed in the ``HmacSignature`` header (the Tokenization webhooks), at the verifier.

Vector: tests/fixtures/vectors/adyen.json ``header_hmac_vectors`` — Adyen/adyen-python-api-library
test/UtilTest.py ``test_is_valid_hmac_payload`` (commit b6f49792b79c23e2674b35c04dd045aa07daf599), the exact
raw body with its leading newline and indentation. Bodies: Adyen's own examples from
tests/fixtures/catalogs/adyen_token_webhook_types.json (Adyen/adyen-openapi json/TokenizationNotification-v1.json).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from Adyen import util as adyen_util

from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers.adyen.verify import decode_key, sign_body, verify
from paystream.errors import ConfigurationError, MalformedDelivery, SignatureError

KEY = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174"
OTHER_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
T = 1_700_000_000
PUBLISHED = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "catalogs" /
                        "adyen_token_webhook_types.json").read_text())
EXAMPLES: dict[str, dict[str, Any]] = PUBLISHED["examples"]
CREATED = orjson.dumps(EXAMPLES["recurring.token.created"])


@pytest.fixture(scope="module")
def header_vector(load_vector: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    (vector,) = load_vector("adyen.json")["header_hmac_vectors"]
    return vector  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("adyen", [KEY])


@pytest.fixture(scope="module")
def deliver(make_delivery: Callable[..., IncomingDelivery]) -> Callable[..., IncomingDelivery]:
    def make(body: bytes, signature: str | None = None) -> IncomingDelivery:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["HmacSignature"] = signature
        return make_delivery("adyen", body, headers, T)

    return make


def signed(body: bytes, key: str = KEY) -> str:
    return sign_body(body, decode_key(key))


async def test_the_published_header_vector_verifies(header_vector: dict[str, Any], make_account: Any,
                                                    deliver: Any) -> None:
    body = header_vector["raw_body_exact"].encode("utf-8")
    assert len(body) == 546 and body.startswith(b"\n")  # the exact bytes, whitespace and all
    assert signed(body, header_vector["hmac_key_hex"]) == header_vector["expected_HmacSignature_header"]

    result = await verify(deliver(body, header_vector["expected_HmacSignature_header"]),
                          make_account("adyen", [header_vector["hmac_key_hex"]]))

    (accepted,) = result.accepted
    assert accepted.body == body  # published as received, not re-serialized
    assert (accepted.verification.verifier, accepted.verification.key_id) == ("adyen-hmac-header", "secret[0]")
    # merchant.created has no eventId: an id from the bytes, so the processor can dead-letter it by its type.
    assert accepted.delivery_id == f"merchant.created:sha256:{hashlib.sha256(body).hexdigest()}"
    assert accepted.object_ids == {"event_type": "merchant.created", "environment": "test"}


async def test_the_published_negative_vector_is_refused(header_vector: dict[str, Any], make_account: Any,
                                                        deliver: Any) -> None:
    body = header_vector["raw_body_exact"].encode("utf-8")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, header_vector["negative"]["HmacSignature"]),
                     make_account("adyen", [header_vector["hmac_key_hex"]]))
    assert (raised.value.code, raised.value.status) == ("bad_signature", 401)


async def test_a_token_webhook_is_one_event_delivery(account: ResolvedAccount, deliver: Any) -> None:
    result = await verify(deliver(CREATED, signed(CREATED)), account)

    (accepted,) = result.accepted
    assert result.rejected == []
    assert accepted.kind == "event"
    assert accepted.body == CREATED
    assert accepted.delivery_id == "recurring.token.created:QBQQ9DLNRHHKGK38:M5N7TQ4TG5PFWR50"
    assert accepted.object_ids == {"event_type": "recurring.token.created", "event_id": "QBQQ9DLNRHHKGK38",
                                   "object_type": "recurring_contract", "object_id": "M5N7TQ4TG5PFWR50",
                                   "environment": "test"}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
async def test_every_published_example_verifies_and_the_sdk_agrees(kind: str, account: ResolvedAccount,
                                                                   deliver: Any) -> None:
    body = orjson.dumps(EXAMPLES[kind])
    signature = signed(body)
    assert adyen_util.is_valid_hmac_payload(signature, KEY, body) is True  # Adyen's own check of our signer
    (accepted,) = (await verify(deliver(body, signature), account)).accepted
    assert accepted.delivery_id == f"{kind}:QBQQ9DLNRHHKGK38:M5N7TQ4TG5PFWR50"


async def test_missing_header(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(CREATED), account)
    assert (raised.value.code, raised.value.status) == ("missing_header", 401)


async def test_empty_header(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(CREATED, "  "), account)
    assert raised.value.code == "missing_header"


async def test_bad_signature_body_changed_after_signing(account: ResolvedAccount, deliver: Any) -> None:
    tampered = CREATED.replace(b"M5N7TQ4TG5PFWR50", b"M5N7TQ4TG5PFWR51")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(tampered, signed(CREATED)), account)
    assert (raised.value.code, raised.value.status) == ("bad_signature", 401)


async def test_wrong_key(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(CREATED, signed(CREATED, OTHER_KEY)), account)
    assert (raised.value.code, raised.value.status) == ("bad_signature", 401)


async def test_whitespace_is_signed_too(account: ResolvedAccount, deliver: Any) -> None:
    """The raw bytes are signed, not the JSON they hold: re-indented, the same event no longer verifies."""
    pretty = orjson.dumps(EXAMPLES["recurring.token.created"], option=orjson.OPT_INDENT_2)
    with pytest.raises(SignatureError):
        await verify(deliver(pretty, signed(CREATED)), account)


async def test_malformed_body_signed(account: ResolvedAccount, deliver: Any) -> None:
    body = orjson.dumps({**EXAMPLES["recurring.token.created"], "data": "M5N7TQ4TG5PFWR50"})
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(body, signed(body)), account)
    assert (raised.value.code, raised.value.status) == ("malformed_event", 400)


async def test_malformed_body_is_not_read_before_the_signature(account: ResolvedAccount, deliver: Any) -> None:
    body = orjson.dumps({**EXAMPLES["recurring.token.created"], "data": "M5N7TQ4TG5PFWR50"})
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body, signed(body, OTHER_KEY)), account)
    assert raised.value.code == "bad_signature"


async def test_body_that_is_not_json(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(CREATED[:-1], signed(CREATED[:-1])), account)
    assert (raised.value.code, raised.value.status) == ("malformed_json", 400)


async def test_rotation_second_secret_matches(make_account: Any, deliver: Any) -> None:
    result = await verify(deliver(CREATED, signed(CREATED)), make_account("adyen", [OTHER_KEY, KEY]))
    assert result.accepted[0].verification.key_id == "secret[1]"


async def test_no_secret_configured(make_account: Any, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(CREATED, signed(CREATED)), make_account("adyen", []))
    assert raised.value.code == "no_secret_configured"


async def test_undecodable_key_is_a_configuration_error(make_account: Any, deliver: Any) -> None:
    with pytest.raises(ConfigurationError):
        await verify(deliver(CREATED, signed(CREATED)), make_account("adyen", ["not-hex"]))


async def test_a_standard_batch_is_still_refused_without_items(account: ResolvedAccount, deliver: Any) -> None:
    """The header path takes {type, data} bodies only: an empty batch stays malformed_batch."""
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(b'{"live": "false", "notificationItems": []}', "x"), account)
    assert raised.value.code == "malformed_batch"



async def test_a_signed_webhook_without_token_ids_is_published_by_its_digest(account: ResolvedAccount,
                                                                             deliver: Any) -> None:
    """Adyen's ACH Notification of Change example (Webhooks-v1): no eventId, no token; kept, not refused."""
    (example,) = PUBLISHED["webhooks_v1_typed_examples"]["examples"]["ACH_NOTIFICATION_OF_CHANGE"]
    body = orjson.dumps(example)
    (accepted,) = (await verify(deliver(body, signed(body)), account)).accepted
    assert accepted.delivery_id == f"ach.notificationOfChange:sha256:{hashlib.sha256(body).hexdigest()}"
    assert accepted.object_ids == {"event_type": "ach.notificationOfChange", "environment": "test"}
    assert accepted.body == body
