"""SNS message verification for Amazon Pay IPNs.

Vectors: tests/fixtures/vectors/amazon_sns.json — real messages AWS published on 2022-07-28 and the real
SNS signing certificate, from aws/aws-php-sns-message-validator tests/FunctionalValidationsTest.php and
tests/MessageValidatorTest.php (commit 01f104920423c9b7c0a13dbe5115cc4cbc808161). The certificate has
expired since; it verifies because validity is checked at the message Timestamp.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ingest.delivery import IncomingDelivery, ResolvedAccount
from ingest.providers.amazon_pay.certs import CertificateStore
from ingest.providers.amazon_pay.sns import string_to_sign, verify
from ingest.providers.signers import sign_sns
from paystream.errors import MalformedDelivery, SignatureError

TOPIC = "arn:aws:sns:eu-west-1:291180941288:A2G5K08Z0WZHJQ_Paystream_IPN"
CERT_NAME = "SimpleNotificationService-0000000000000000000000000000test.pem"
CERT_URL = f"https://sns.eu-west-1.amazonaws.com/{CERT_NAME}"
RECEIVED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
AMAZON_PAY_MESSAGE = {
    "ReleaseEnvironment": "Sandbox",
    "MerchantID": "A2G5K08Z0WZHJQ",
    "ObjectType": "CHARGE",
    "ObjectId": "S02-7331650-8246451-C068246",
    "ChargePermissionId": "S02-7331650-8246451",
    "NotificationType": "STATE_CHANGE",
    "NotificationId": "2b9c4f57-3c5a-4e7e-8d4c-1a2b3c4d5e6f",
    "NotificationVersion": "V1",
    "MockNotification": "false",
}


@pytest.fixture(scope="module")
def real(load_vector: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return load_vector("amazon_sns.json")


@pytest.fixture(scope="module")
def real_store(real: dict[str, Any]) -> CertificateStore:
    """The real certificate pre-seeded under its URL's file name: nothing is fetched."""
    name = real["signing_cert_url"].rsplit("/", 1)[-1]
    return CertificateStore(preseeded={name: real["certificate_pem"].encode()})


@pytest.fixture(scope="module")
def test_store(sns_signer: tuple[rsa.RSAPrivateKey, bytes]) -> CertificateStore:
    return CertificateStore(preseeded={CERT_NAME: sns_signer[1]})


@pytest.fixture(scope="module")
def account(make_account: Callable[..., ResolvedAccount]) -> ResolvedAccount:
    return make_account("amazon_pay", allowed_topic_arns=[TOPIC])


@pytest.fixture(scope="module")
def deliver(make_delivery: Callable[..., IncomingDelivery]) -> Callable[[dict[str, Any]], IncomingDelivery]:
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}
    return lambda message: make_delivery("amazon_pay", orjson.dumps(message), headers, RECEIVED)


@pytest.fixture(scope="module")
def signed(sns_signer: tuple[rsa.RSAPrivateKey, bytes]) -> Callable[..., dict[str, Any]]:
    """An SNS message signed by the test CA's sns.amazonaws.com key."""

    def make(message_type: str = "Notification", version: str = "2", **fields: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "Type": message_type,
            "MessageId": "5d2e7a4c-1b3f-5e6a-9c8d-0f1e2d3c4b5a",
            "TopicArn": TOPIC,
            "Message": orjson.dumps(AMAZON_PAY_MESSAGE).decode(),
            "Timestamp": "2025-06-01T12:00:00.000Z",
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
        }
        if message_type != "Notification":
            message["Token"] = "2336412f37fb687f5d51e6e2425dacbbae7b5ed2"
            message["SubscribeURL"] = (
                "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425dacbbae7b5ed2"
            )
            message["Message"] = "You have chosen to subscribe to the topic."
        message.update(fields)
        return sign_sns(message, sns_signer[0])

    return make


@pytest.mark.parametrize("index", range(4))
async def test_real_aws_message_verifies(
    index: int, real: Any, real_store: CertificateStore, make_account: Any, deliver: Any
) -> None:
    vector = real["vectors"][index]
    message = vector["message_json"]
    assert string_to_sign(message) == vector["string_to_sign"].encode()
    account = make_account("amazon_pay", allowed_topic_arns=[message["TopicArn"]])

    (accepted,) = (await verify(deliver(message), account, store=real_store)).accepted
    assert accepted.delivery_id == message["MessageId"]
    assert accepted.kind == "thin"
    assert accepted.verification.verifier == {"1": "sns-sha1", "2": "sns-sha256"}[message["SignatureVersion"]]
    assert accepted.verification.key_id == real["signing_cert_url"]
    assert accepted.object_ids == {"topic_arn": message["TopicArn"]}  # "Hello world" is no Amazon Pay shape


@pytest.mark.parametrize("index", range(4))
async def test_real_message_with_one_byte_changed_fails(
    index: int, real: Any, real_store: CertificateStore, make_account: Any, deliver: Any
) -> None:
    message = dict(real["vectors"][index]["message_json"], Message="Hello worle")
    account = make_account("amazon_pay", allowed_topic_arns=[message["TopicArn"]])
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(message), account, store=real_store)
    assert raised.value.code == "bad_signature"


def test_published_string_to_sign_unit_vector(real: Any) -> None:
    unit = real["string_to_sign_unit_vector"]
    assert string_to_sign(unit["message"]) == unit["expected_string_to_sign"].encode()


async def test_amazon_pay_notification_is_thin_with_ids(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    (accepted,) = (await verify(deliver(signed()), account, store=test_store)).accepted
    assert accepted.kind == "thin"
    assert accepted.delivery_id == "5d2e7a4c-1b3f-5e6a-9c8d-0f1e2d3c4b5a"
    assert accepted.object_ids == {
        "topic_arn": TOPIC,
        "object_type": "charge",
        "object_id": "S02-7331650-8246451-C068246",
        "charge_permission_id": "S02-7331650-8246451",
        "notification_id": "2b9c4f57-3c5a-4e7e-8d4c-1a2b3c4d5e6f",
        "notification_type": "STATE_CHANGE",
        "mock": "false",
    }


async def test_signature_version_1_with_subject(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed(version="1", Subject="Amazon Pay IPN")
    (accepted,) = (await verify(deliver(message), account, store=test_store)).accepted
    assert accepted.verification.verifier == "sns-sha1"


async def test_null_subject_is_left_out_of_the_canonical_string(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed(Subject=None)
    assert b"Subject" not in string_to_sign(message)
    assert (await verify(deliver(message), account, store=test_store)).accepted


async def test_subscription_confirmation_for_allowed_topic(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed("SubscriptionConfirmation")
    (accepted,) = (await verify(deliver(message), account, store=test_store)).accepted
    assert accepted.kind == "control"
    assert accepted.control == {
        "action": "confirm_subscription",
        "subscribe_url": message["SubscribeURL"],
        "topic_arn": TOPIC,
    }


async def test_subscription_confirmation_with_foreign_subscribe_url(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed("SubscriptionConfirmation", SubscribeURL="https://attacker.example/confirm")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(message), account, store=test_store)
    assert raised.value.code == "untrusted_subscribe_url"


async def test_unsubscribe_confirmation_is_logged(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    (accepted,) = (await verify(deliver(signed("UnsubscribeConfirmation")), account, store=test_store)).accepted
    assert (accepted.kind, accepted.control["action"]) == ("control", "log_unsubscribe")


async def test_topic_not_allowed(signed: Any, test_store: CertificateStore, make_account: Any, deliver: Any) -> None:
    account = make_account("amazon_pay", allowed_topic_arns=["arn:aws:sns:eu-west-1:1:other"])
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signed("SubscriptionConfirmation")), account, store=test_store)
    assert raised.value.code == "topic_not_allowed"


async def test_empty_allow_list_refuses_everything(
    signed: Any, test_store: CertificateStore, make_account: Any, deliver: Any
) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signed()), make_account("amazon_pay"), store=test_store)
    assert raised.value.code == "topic_not_allowed"


async def test_unsupported_signature_version(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(dict(signed(), SignatureVersion="3")), account, store=test_store)
    assert raised.value.code == "unsupported_signature_version"


async def test_untrusted_cert_url_is_refused_before_any_lookup(
    signed: Any, account: ResolvedAccount, deliver: Any
) -> None:
    store = CertificateStore()  # nothing seeded: a lookup would have to fetch
    message = signed(SigningCertURL="https://sns.eu-west-1.amazonaws.com.evil.com/cert.pem")
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(message), account, store=store)
    assert raised.value.code == "untrusted_cert_url"
    assert store.fetch_count == 0


async def test_message_signed_by_another_key(pki: Any, signed: Any, account: ResolvedAccount, deliver: Any) -> None:
    _, _, other_pem = pki.issue(("sns.amazonaws.com",))
    store = CertificateStore(preseeded={CERT_NAME: other_pem})
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(signed()), account, store=store)
    assert raised.value.code == "bad_signature"


async def test_certificate_not_valid_at_message_timestamp(pki: Any, account: ResolvedAccount, deliver: Any) -> None:
    key, _, pem = pki.issue(
        ("sns.amazonaws.com",),
        not_before=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2031, 1, 1, tzinfo=dt.UTC),
    )
    message = sign_sns(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": TOPIC,
            "Message": "{}",
            "Timestamp": "2025-06-01T12:00:00.000Z",
            "SignatureVersion": "2",
            "SigningCertURL": CERT_URL,
        },
        key,
    )
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(message), account, store=CertificateStore(preseeded={CERT_NAME: pem}))
    assert raised.value.code == "cert_not_valid"


async def test_body_that_is_not_json(
    test_store: CertificateStore, account: ResolvedAccount, make_delivery: Any
) -> None:
    with pytest.raises(MalformedDelivery) as raised:
        await verify(make_delivery("amazon_pay", b"Type=Notification", {}, RECEIVED), account, store=test_store)
    assert raised.value.code == "malformed_json"


async def test_missing_signed_field(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed()
    del message["MessageId"]
    with pytest.raises(MalformedDelivery) as raised:
        await verify(deliver(message), account, store=test_store)
    assert raised.value.code == "malformed_sns"


async def test_missing_signature(
    signed: Any, test_store: CertificateStore, account: ResolvedAccount, deliver: Any
) -> None:
    message = signed()
    del message["Signature"]
    with pytest.raises(SignatureError) as raised:
        await verify(deliver(message), account, store=test_store)
    assert raised.value.code == "missing_signature"
