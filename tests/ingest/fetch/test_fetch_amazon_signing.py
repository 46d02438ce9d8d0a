"""Amazon Pay API v2 request signing, checked by the provider double's independent verifier."""

from __future__ import annotations

import aiohttp
import pytest
from fetch_helpers import AmazonKeys
from provider_double.server import ProviderDouble

from ingest.fetch.http import new_session
from ingest.providers.amazon_pay.client import AmazonPayClient
from ingest.providers.amazon_pay.signing import (
    AmazonPaySigner,
    canonical_query,
    canonical_request,
    load_private_key,
    mode_path_prefix,
    region_host,
)


def _signer(keys: AmazonKeys, key_id: str | None = None) -> AmazonPaySigner:
    return AmazonPaySigner(
        public_key_id=key_id or keys.public_key_id,
        private_key=load_private_key(keys.private_pem_path.read_text()),
        region="eu",
    )


def test_canonical_query_matches_the_official_php_sdk_vector() -> None:
    # amzn/amazon-pay-api-sdk-php, tests/unit/ClientTest.php (testCreateCanonicalQuery),
    # commit 032dd125e6147b812883119bed54b5f13c12d2a5; array parameters given already flattened.
    params = {
        "chargePermissionId": "P03-0772540-6944847",
        "chargeReferenceId": "chargeReferenceId-1",
        "chargeTotal": "100.50",
        "currencyCode": "JPY",
        "amount": "100.50",
        "softDescriptor": "chargeTest-1",
        "metadata.1": "shoe sale",
        "metadata.2": "Information about order",
        "merchantNote": "",
        "customInformation": "Information about order",
        "merchantStoreName": "Name of Store",
        "merchantOrderId": "Order 123",
    }
    assert canonical_query(params) == (
        "amount=100.50&chargePermissionId=P03-0772540-6944847&chargeReferenceId=chargeReferenceId-1"
        "&chargeTotal=100.50&currencyCode=JPY&customInformation=Information%20about%20order"
        "&merchantOrderId=Order%20123&merchantStoreName=Name%20of%20Store&metadata.1=shoe%20sale"
        "&metadata.2=Information%20about%20order&softDescriptor=chargeTest-1"
    )


def test_canonical_request_lays_out_headers_like_the_official_sdks() -> None:
    # Layout of amzn/amazon-pay-api-sdk-java RequestSignerTest (canonicalRequest), which the PHP SDK's
    # createSignature builds the same way: header block, blank line, signed names, payload hash.
    canonical = canonical_request(
        "POST",
        "/sandbox/v2/in-store/refund",
        {},
        {
            "accept": "application/json",
            "content-type": "application/json",
            "x-amz-pay-date": "20180524T223710Z",
            "x-amz-pay-host": "pay-api.amazon.eu",
            "x-amz-pay-region": "EU",
        },
        b"payload",
    )
    assert canonical == (
        "POST\n/sandbox/v2/in-store/refund\n\n"
        "accept:application/json\ncontent-type:application/json\nx-amz-pay-date:20180524T223710Z\n"
        "x-amz-pay-host:pay-api.amazon.eu\nx-amz-pay-region:EU\n\n"
        "accept;content-type;x-amz-pay-date;x-amz-pay-host;x-amz-pay-region\n"
        "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5"
    )


def test_sandbox_and_live_path_rule_follows_the_official_php_sdk() -> None:
    # amzn/amazon-pay-api-sdk-php tests/unit/ClientTest.php testCreateServiceURL and
    # testCreateServiceURLForUnifiedEndpoint (commit 032dd125e6147b812883119bed54b5f13c12d2a5).
    assert mode_path_prefix("ABC123DEF456XYZ789IJK000", sandbox=True) == "/sandbox"
    assert mode_path_prefix("ABC123DEF456XYZ789IJK000", sandbox=False) == "/live"
    assert mode_path_prefix("LIVE-XXXXXXXXXXXXXXXXXXXXXXXX", sandbox=True) == ""
    assert mode_path_prefix("SANDBOX-XXXXXXXXXXXXXXXXXXXXXXXX", sandbox=False) == ""


def test_region_hosts() -> None:
    assert region_host("eu") == "pay-api.amazon.eu"
    assert region_host("na") == "pay-api.amazon.com"
    assert region_host("us") == "pay-api.amazon.com"
    assert region_host("jp") == "pay-api.amazon.jp"


async def test_signed_get_charge_is_accepted_by_the_independent_verifier(
    double: ProviderDouble, amazon_keys: AmazonKeys
) -> None:
    double.set_object("amazon_pay", "charge", "S02-1234567-1234567-C000001", {"chargeId": "S02-1"})
    client = AmazonPayClient(
        new_session(max_connections=2, timeout_s=5),
        _signer(amazon_keys),
        sandbox=True,
        base_url=f"{double.url}/amazon_pay",
    )
    try:
        reply = await client.fetch("charge", "S02-1234567-1234567-C000001")
    finally:
        await client.close()
    assert reply.status == 200
    assert double.requests[-1].signature == "ok"
    assert double.requests[-1].mode == "sandbox"


@pytest.mark.parametrize(
    ("object_type", "collection"), [("refund", "refunds"), ("charge_permission", "chargePermissions")]
)
async def test_get_refund_and_charge_permission_paths(
    double: ProviderDouble, amazon_keys: AmazonKeys, object_type: str, collection: str
) -> None:
    double.set_object("amazon_pay", object_type, "P01-1", {"id": "P01-1"})
    client = AmazonPayClient(
        new_session(max_connections=2, timeout_s=5),
        _signer(amazon_keys),
        sandbox=False,
        base_url=f"{double.url}/amazon_pay",
    )
    try:
        reply = await client.fetch(object_type, "P01-1")
    finally:
        await client.close()
    assert reply.status == 200
    assert double.requests[-1].path == f"/amazon_pay/live/v2/{collection}/P01-1"
    assert double.requests[-1].signature == "ok"


async def _send(url: str, headers: dict[str, str], *, method: str = "GET", body: bytes = b"") -> int:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, data=body) as r:
        return r.status


async def test_tampered_signed_header_is_rejected(double: ProviderDouble, amazon_keys: AmazonKeys) -> None:
    double.set_object("amazon_pay", "charge", "S02-9", {"chargeId": "S02-9"})
    path = "/amazon_pay/sandbox/v2/charges/S02-9"
    headers = _signer(amazon_keys).sign("GET", "127.0.0.1", path)
    assert await _send(double.url + path, headers) == 200  # the untouched request passes
    headers["x-amz-pay-region"] = "na"
    assert await _send(double.url + path, headers) == 401
    assert double.requests[-1].signature == "bad_signature"


async def test_tampered_body_is_rejected(double: ProviderDouble, amazon_keys: AmazonKeys) -> None:
    path = "/amazon_pay/sandbox/v2/charges/S02-9/capture"
    headers = _signer(amazon_keys).sign("POST", "127.0.0.1", path, payload=b'{"captureAmount":"10.00"}')
    await _send(double.url + path, headers, method="POST", body=b'{"captureAmount":"10.00"}')
    assert double.requests[-1].signature == "ok"
    await _send(double.url + path, headers, method="POST", body=b'{"captureAmount":"99.00"}')
    assert double.requests[-1].signature == "bad_signature"
    assert double.requests[-1].status == 401


async def test_unknown_public_key_id_is_rejected(double: ProviderDouble, amazon_keys: AmazonKeys) -> None:
    path = "/amazon_pay/sandbox/v2/charges/S02-9"
    headers = _signer(amazon_keys, key_id="SOMEONE-ELSES-KEY").sign("GET", "127.0.0.1", path)
    assert await _send(double.url + path, headers) == 401
    assert double.requests[-1].signature == "unknown_public_key_id"
