"""Standard Webhooks verification.

Vectors: tests/fixtures/vectors/standard_webhooks.json — from standard-webhooks/standard-webhooks
libraries/python/tests/test_webhooks.py and spec/standard-webhooks.md
(commit b2fa7b8719fb75d326b591077f5d1b385cfcdfae).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers.signers import sign_standard
from ingest.providers.standard.verify import decode_secret, verify
from paystream.errors import ConfigurationError, MalformedDelivery, SignatureError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T = 1_614_265_330


@pytest.fixture(scope="module")
def vector(load_vector: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return load_vector("standard_webhooks.json")


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("standard", [SECRET])


@pytest.fixture(scope="module")
def published(vector: dict[str, Any]) -> dict[str, Any]:
    published: dict[str, Any] = vector["vectors"][0]
    assert published["secret"] == SECRET
    return published


@pytest.fixture(scope="module")
def deliver(
    make_delivery: Callable[..., IncomingDelivery], published: dict[str, Any]
) -> Callable[..., IncomingDelivery]:
    def build(
        *,
        body: bytes | None = None,
        signature: str | None = None,
        received_at: float = T + 5,
        **overrides: str | None,
    ) -> IncomingDelivery:
        headers: dict[str, str | None] = {
            "webhook-id": published["webhook_id"],
            "webhook-timestamp": published["webhook_timestamp"],
            "webhook-signature": signature or published["expected_signature_header"],
        }
        headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
        present = {name: value for name, value in headers.items() if value is not None}
        payload = published["payload"].encode() if body is None else body
        return make_delivery("standard", payload, present, received_at)

    return build


async def test_published_vector_verifies(account: ResolvedAccount, deliver: Any, published: Any) -> None:
    (accepted,) = (await verify(deliver(), account)).accepted
    assert accepted.delivery_id == published["webhook_id"]
    assert accepted.body == published["payload"].encode()
    assert accepted.kind == "event"
    assert (accepted.verification.verifier, accepted.verification.key_id) == ("standard-v1", "secret[0]")


def test_published_secret_bytes(published: dict[str, Any]) -> None:
    assert decode_secret(SECRET).hex() == published["secret_bytes_hex"]


async def test_one_byte_change_fails(account: ResolvedAccount, deliver: Any, published: Any) -> None:
    body = published["payload"].encode().replace(b"2432232314", b"2432232315")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(body=body), account)
    assert raised.value.code == "bad_signature"


async def test_published_negative_signature_fails(account: ResolvedAccount, deliver: Any, vector: Any) -> None:
    negative = vector["negative_vectors"][0]
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signature=negative["webhook-signature"]), account)
    assert raised.value.code == "bad_signature"


async def test_published_multi_signature_header_verifies(
    account: ResolvedAccount, deliver: Any, vector: Any, published: Any
) -> None:
    header = vector["negative_vectors"][1]["webhook-signature"].replace(
        "<valid>", published["expected_signature_header"]
    )
    assert (await verify(deliver(signature=header), account)).accepted[0].delivery_id == published["webhook_id"]


async def test_empty_v1_entry_fails(account: ResolvedAccount, deliver: Any, vector: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signature=vector["negative_vectors"][2]["webhook-signature"]), account)
    assert raised.value.code == "bad_signature"


async def test_secret_without_prefix_verifies(make_account: Any, deliver: Any) -> None:
    account = make_account("standard", [SECRET.removeprefix("whsec_")])
    assert (await verify(deliver(), account)).accepted


@pytest.mark.parametrize("unpadded", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr"])
async def test_unpadded_secret_decodes_like_the_sdk(unpadded: str, make_account: Any, deliver: Any) -> None:
    assert decode_secret(unpadded) == Webhook(unpadded)._whsecret
    sdk_signature = Webhook(unpadded).sign("msg_1", datetime.fromtimestamp(T, tz=UTC), "{}")
    delivery = deliver(body=b"{}", signature=sdk_signature, webhook_id="msg_1")
    assert (await verify(delivery, make_account("standard", [f"whsec_{unpadded}"]))).accepted


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_missing_header(header: str, account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(**{header.replace("-", "_"): None}), account)
    assert raised.value.code == "missing_header"


async def test_malformed_timestamp_header(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(webhook_timestamp="1614265330.5"), account)
    assert raised.value.code == "malformed_header"


async def test_signature_header_without_v1_entry(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signature="v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw"), account)
    assert raised.value.code == "malformed_header"


async def test_stale_timestamp(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(received_at=T + 301), account)
    assert raised.value.code == "stale_timestamp"


async def test_future_timestamp(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(received_at=T - 301), account)
    assert raised.value.code == "future_timestamp"


async def test_no_secret_configured(make_account: Any, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(), make_account("standard", []))
    assert raised.value.code == "no_secret_configured"


async def test_rotation_second_secret_matches(make_account: Any, deliver: Any) -> None:
    account = make_account("standard", ["whsec_bmV3LXNlY3JldC1ub3QteWV0LXVzZWQ=", SECRET])
    assert (await verify(deliver(), account)).accepted[0].verification.key_id == "secret[1]"


async def test_undecodable_secret_is_a_configuration_error(make_account: Any, deliver: Any) -> None:
    with pytest.raises(ConfigurationError):
        await verify(deliver(), make_account("standard", ["whsec_not*base64"]))


async def test_signed_body_that_is_not_json(account: ResolvedAccount, deliver: Any) -> None:
    headers = sign_standard(b"plain text", SECRET, "msg_2", T)
    delivery = deliver(body=b"plain text", signature=headers["webhook-signature"], webhook_id="msg_2")
    with pytest.raises(MalformedDelivery) as raised:
        await verify(delivery, account)
    assert raised.value.code == "malformed_json"


async def test_event_type_is_read_after_verification(account: ResolvedAccount, deliver: Any) -> None:
    body = orjson.dumps({"type": "invoice.paid", "timestamp": "2021-02-25T15:02:10Z", "data": {}})
    headers = sign_standard(body, SECRET, "msg_3", T)
    delivery = deliver(body=body, signature=headers["webhook-signature"], webhook_id="msg_3")
    assert (await verify(delivery, account)).accepted[0].object_ids == {"event_type": "invoice.paid"}


# Header values are ASCII; webhook ids are base62 in practice.
_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=30)


@settings(max_examples=25, deadline=None)
@given(msg_id=_ids, data=st.text(max_size=100), timestamp=st.integers(T - 10**6, T + 10**6))
def test_sdk_signed_messages_verify(
    msg_id: str, data: str, timestamp: int, account: ResolvedAccount, deliver: Any
) -> None:
    body = orjson.dumps({"type": "test", "data": data})
    signature = Webhook(SECRET).sign(f"msg_{msg_id}", datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
    delivery = deliver(
        body=body,
        signature=signature,
        webhook_id=f"msg_{msg_id}",
        webhook_timestamp=str(timestamp),
        received_at=timestamp,
    )
    assert asyncio.run(verify(delivery, account)).accepted[0].delivery_id == f"msg_{msg_id}"


@settings(max_examples=25, deadline=None)
@given(msg_id=_ids, data=st.text(max_size=100))
def test_our_signer_satisfies_the_sdk(msg_id: str, data: str) -> None:
    body = orjson.dumps({"type": "test", "data": data})
    # The SDK checks the timestamp against its own clock, so sign with the current time.
    headers = sign_standard(body, ["whsec_b3RoZXI=", SECRET], f"msg_{msg_id}", int(time.time()))
    assert Webhook(SECRET).verify(body, headers) == orjson.loads(body)


async def test_non_ascii_webhook_id_is_malformed(account: ResolvedAccount, deliver: Any) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(webhook_id="msg_ª"), account)
    assert raised.value.code == "malformed_header"
