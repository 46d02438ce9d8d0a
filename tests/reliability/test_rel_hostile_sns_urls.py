"""SNS certificate and subscribe URLs that try to make ingest reach another host: refused before any fetch.

Every message here is correctly signed with the test key, so the URL is the only thing wrong with it.
The server's certificate store and subscription confirmer can reach only the loopback stand-in for
sns.us-east-1.amazonaws.com, which records every request: "before any fetch" means it saw nothing.
"""

from __future__ import annotations

import pytest
from http_harness import CERT_NAME, SNS_ACCOUNT, SNS_HOST, Deliveries, counter_value
from reliability_harness import FOLLOWED, REDIRECTING_CERT, HostileTarget

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
PEM = "SimpleNotificationService-0123456789abcdef.pem"

# Hosts that are not sns.<region>.amazonaws.com(.cn), however they are dressed up.
FOREIGN_HOSTS = [
    ("http", f"http://{SNS_HOST}/{PEM}"),
    ("suffix look-alike", f"https://{SNS_HOST}.evil.example/{PEM}"),
    ("cn suffix look-alike", f"https://{SNS_HOST}.cn.evil.example/{PEM}"),
    ("wrong tld", f"https://sns.us-east-1.amazonaws.co/{PEM}"),
    ("dash for dot", f"https://sns-us-east-1.amazonaws.com/{PEM}"),
    ("host in the path", f"https://evil.example/{SNS_HOST}/{PEM}"),
    ("userinfo before a foreign host", f"https://{SNS_HOST}@evil.example/{PEM}"),
    ("port-looking userinfo", f"https://{SNS_HOST}:443@evil.example/{PEM}"),
    ("userinfo before the right host", f"https://evil.example@{SNS_HOST}/{PEM}"),
    ("user and password", f"https://user:secret@{SNS_HOST}/{PEM}"),
    ("other port", f"https://{SNS_HOST}:8443/{PEM}"),
    ("IPv4 literal", f"https://127.0.0.1/{PEM}"),
    ("IPv6 literal", f"https://[::1]/{PEM}"),
    ("decimal IPv4", f"https://2130706433/{PEM}"),
    ("hex IPv4", f"https://0x7f000001/{PEM}"),
    ("metadata service", "https://169.254.169.254/latest/meta-data/iam.pem"),
    ("backslash", f"https://{SNS_HOST}\\@evil.example/{PEM}"),
    ("encoded slash in the host", f"https://{SNS_HOST}%2F@evil.example/{PEM}"),
    ("encoded dot in the host", f"https://{SNS_HOST}%2eevil.example/{PEM}"),
    ("Cyrillic s", f"https://\u0455ns.us-east-1.amazonaws.com/{PEM}"),
    ("punycode look-alike", f"https://xn--ns-gdb.us-east-1.amazonaws.com/{PEM}"),
    ("trailing dot", f"https://{SNS_HOST}./{PEM}"),
    ("scheme-relative", f"//{SNS_HOST}/{PEM}"),
    ("file scheme", "file:///etc/ssl/private/key.pem"),
    ("space in the host", f"https://{SNS_HOST} .evil.example/{PEM}"),
    ("tab in the host", f"https://{SNS_HOST}\t.evil.example/{PEM}"),
    ("leading space", f" https://{SNS_HOST}/{PEM}"),
    ("empty", ""),
]
# Right host, but not a certificate file.
NOT_A_CERTIFICATE = [
    ("not .pem", f"https://{SNS_HOST}/{PEM[:-4]}.txt"),
    ("query after .pem", f"https://{SNS_HOST}/{PEM}?.evil.example"),
    ("fragment after .pem", f"https://{SNS_HOST}/{PEM}#@evil.example"),
]
# Hosts the pattern AWS publishes (sns.<3+ characters>.amazonaws.com) lets through although they are not
# SNS: legacy S3 endpoints serve any bucket named "sns" at sns.<endpoint>.amazonaws.com over HTTPS, and
# nothing but the URL decides whether a fetched certificate is trusted (see the report / README note).
S3_BUCKET_HOSTS = [
    ("S3 legacy us-east-1 endpoint", f"https://sns.s3-external-1.amazonaws.com/{PEM}"),
    ("S3 transfer acceleration", f"https://sns.s3-accelerate.amazonaws.com/{PEM}"),
    ("S3 legacy regional endpoint", f"https://sns.s3-us-west-2.amazonaws.com/{PEM}"),
]


async def _refused_without_fetch(target: HostileTarget, body: bytes, headers: dict[str, str], reason: str) -> None:
    seen = list(target.sns.requests)
    reply = await target.refused(SNS, body, headers)
    assert (reply.status, reply.json()["error"]) == (401, reason)
    assert target.sns.requests == seen, "the URL was fetched"


@pytest.mark.parametrize(("trick", "url"), FOREIGN_HOSTS + NOT_A_CERTIFICATE, ids=lambda v: str(v)[:40])
async def test_signing_cert_url_off_the_sns_host_is_401_before_any_fetch(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, trick: str, url: str
) -> None:
    message = rel_deliveries.sns_message()
    message["SigningCertURL"] = url
    body, headers = rel_deliveries.sns(message)

    await _refused_without_fetch(hostile_target, body, headers, "untrusted_cert_url")


@pytest.mark.parametrize(("trick", "url"), S3_BUCKET_HOSTS, ids=lambda v: str(v)[:40])
async def test_signing_cert_url_on_an_s3_bucket_host_is_401_before_any_fetch(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, trick: str, url: str
) -> None:
    message = rel_deliveries.sns_message()
    message["SigningCertURL"] = url
    body, headers = rel_deliveries.sns(message)

    await _refused_without_fetch(hostile_target, body, headers, "untrusted_cert_url")


@pytest.mark.parametrize(("trick", "url"), FOREIGN_HOSTS, ids=lambda v: str(v)[:40])
async def test_subscribe_url_off_the_sns_host_is_401_and_never_requested(
    hostile_target: HostileTarget, rel_deliveries: Deliveries, trick: str, url: str
) -> None:
    message = rel_deliveries.sns_message("SubscriptionConfirmation")
    message["SubscribeURL"] = url.replace(PEM, "?Action=ConfirmSubscription&Token=t") if url else url
    body, headers = rel_deliveries.sns(message)
    confirmations = hostile_target.sns.confirmations()
    failed = counter_value("paystream_sns_subscription_confirmations_total", outcome="failed")

    reply = await hostile_target.refused(SNS, body, headers)

    assert (reply.status, reply.json()["error"]) == (401, "untrusted_subscribe_url")
    assert hostile_target.sns.confirmations() == confirmations
    assert counter_value("paystream_sns_subscription_confirmations_total", outcome="failed") == failed


async def test_signing_cert_url_that_redirects_to_the_real_certificate_is_not_followed(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    """Following this redirect would fetch the genuine certificate and VERIFY the message."""
    message = rel_deliveries.sns_message()
    message["SigningCertURL"] = f"https://{SNS_HOST}/{REDIRECTING_CERT}"
    body, headers = rel_deliveries.sns(message)

    reply = await hostile_target.refused(SNS, body, headers)

    assert (reply.status, reply.json()["error"]) == (401, "cert_rejected")
    assert f"/{REDIRECTING_CERT}" in hostile_target.sns.requests
    assert not [path for path in hostile_target.sns.requests if FOLLOWED in path]


async def test_subscribe_url_that_redirects_is_not_followed(
    hostile_target: HostileTarget, rel_deliveries: Deliveries
) -> None:
    message = rel_deliveries.sns_message("SubscriptionConfirmation")
    message["SubscribeURL"] = str(message["SubscribeURL"]) + "&redirect=1"
    body, headers = rel_deliveries.sns(message)

    # Not confirmed: 503 so that SNS sends the confirmation again (nothing is published either way).
    reply = await hostile_target.refused(SNS, body, headers, statuses=frozenset({503}))

    assert reply.json()["error"] == "dependency_unavailable"
    assert [path for path in hostile_target.sns.confirmations() if "redirect=1" in path]
    assert not [path for path in hostile_target.sns.requests if FOLLOWED in path]


async def test_the_genuine_certificate_is_the_only_one_ever_fetched(hostile_target: HostileTarget) -> None:
    fetched = {path for path in hostile_target.sns.requests if "Action=" not in path}
    assert fetched <= {f"/{CERT_NAME}", f"/{REDIRECTING_CERT}"}


async def test_nothing_refused_reached_the_inbox(hostile_target: HostileTarget) -> None:
    await hostile_target.assert_inbox_holds_only_accepted()
    assert hostile_target.accepted_keys == set()
