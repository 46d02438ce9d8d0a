"""SigningCertURL rules and the certificate store, against a local HTTPS server playing SNS.

The server holds a TLS certificate for sns.us-east-1.amazonaws.com issued by the test CA; the store
reaches it through an injected resolver (that host → 127.0.0.1:<port>) and trusts the test CA, so the
URL, TLS hostname verification and every rule are the production ones.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ingest.providers.amazon_pay.certs import CertificateStore, CertificateUnavailable, validate_sns_url
from ingest.providers.amazon_pay.sns import confirm_subscription
from paystream.errors import ConfigurationError, InfrastructureError, SignatureError

HOST = "sns.us-east-1.amazonaws.com"
GOOD = f"https://{HOST}/SimpleNotificationService-good.pem"


@dataclass
class SnsServer:
    port: int
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server_tls(pki: Any) -> ssl.SSLContext:
    return pki.server_context(HOST)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wrong_name_pem(pki: Any) -> bytes:
    return pki.issue(("example.com",))[2]  # type: ignore[no-any-return]


@pytest.fixture
async def sns_server(server_tls: ssl.SSLContext, wrong_name_pem: bytes, sns_signer: Any) -> AsyncIterator[SnsServer]:
    server = SnsServer(port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        server.requests.append(request.path_qs)
        name = request.path.lstrip("/")
        if name == "SimpleNotificationService-good.pem":
            return web.Response(body=sns_signer[1])
        if name == "redirect.pem":
            raise web.HTTPFound("/SimpleNotificationService-good.pem")
        if name == "big.pem":
            return web.Response(body=b"A" * (100 * 1024))
        if name == "big-chunked.pem":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"B" * 10_000)
            await response.write_eof()
            return response
        if name == "wrong-name.pem":
            return web.Response(body=wrong_name_pem)
        if name == "unavailable.pem":
            return web.Response(status=503)
        if request.path == "/" and request.query.get("Action") == "ConfirmSubscription":
            return web.Response(text="<ConfirmSubscriptionResponse/>")
        if request.path == "/moved":
            raise web.HTTPFound("/")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    await runner.cleanup()


@pytest.fixture
async def store(
    pki: Any, sns_server: SnsServer, resolver_factory: Callable[..., Any]
) -> AsyncIterator[CertificateStore]:
    store = CertificateStore(ssl_context=pki.client_context(), resolver=resolver_factory({HOST: sns_server.port}))
    yield store
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_cert_urls_are_accepted(url: str) -> None:
    assert validate_sns_url(url, code="untrusted_cert_url", require_pem=True) == url


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-bb75.pem", id="http"),
        pytest.param("https://foo.amazonaws.com/bar.pem", id="not-sns-host"),
        pytest.param("https://sni.us-east-1.amazonaws.com/SimpleNotificationService-bb75.pem", id="sni"),
        pytest.param("https://sns.us-east-1.example.com/SimpleNotificationService-bb75.pem", id="foreign-domain"),
        pytest.param("https://sns.us-east-1.amazonaws.com.evil.com/cert.pem", id="look-alike-suffix"),
        pytest.param("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bb75.exe", id="exe"),
        pytest.param("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bb75", id="not-pem"),
        pytest.param("https://sns.us-east-1.amazonaws.com/x.pem?y=1", id="query"),
        pytest.param("https://sns.us-east-1.amazonaws.com@evil.com/cert.pem", id="userinfo-host-trick"),
        pytest.param("https://evil.com@sns.us-east-1.amazonaws.com/cert.pem", id="userinfo"),
        pytest.param("https://sns.us-east-1.amazonaws.com\\@evil.com/cert.pem", id="backslash"),
        pytest.param("https://sns.us-east-1.amazonaws.com\n.evil.com/cert.pem", id="newline"),
        pytest.param("https://54.239.28.85/SimpleNotificationService-bb75.pem", id="ipv4-literal"),
        pytest.param("https://[2600:1f18::1]/SimpleNotificationService-bb75.pem", id="ipv6-literal"),
        pytest.param("https://sns.us-east-1.amazonaws.com:8443/cert.pem", id="port"),
        pytest.param("https://sns.us-east-1.amazonaws.com:99999/cert.pem", id="bad-port"),
        pytest.param("https://sns.us-east-1.amazonaws.com./cert.pem", id="trailing-dot"),
        pytest.param("https://sns.us.amazonaws.com/cert.pem", id="short-region"),
    ],
)
async def test_untrusted_cert_url_is_refused_before_any_fetch(
    url: str, store: CertificateStore, sns_server: SnsServer
) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(url)
    assert raised.value.code == "untrusted_cert_url"
    assert store.fetch_count == 0
    assert sns_server.requests == []


async def test_certificate_is_fetched_once_and_cached(store: CertificateStore, sns_server: SnsServer) -> None:
    first, second = await asyncio.gather(store.get(GOOD), store.get(GOOD))
    third = await store.get(GOOD)
    assert first is second is third
    assert sns_server.requests == ["/SimpleNotificationService-good.pem"]


async def test_redirect_is_refused(store: CertificateStore, sns_server: SnsServer) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(f"https://{HOST}/redirect.pem")
    assert raised.value.code == "cert_rejected"
    assert sns_server.requests == ["/redirect.pem"]  # the target was never requested


async def test_oversized_certificate_is_refused(store: CertificateStore) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(f"https://{HOST}/big.pem")
    assert raised.value.code == "cert_rejected"


async def test_oversized_chunked_certificate_is_refused(store: CertificateStore) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(f"https://{HOST}/big-chunked.pem")
    assert raised.value.code == "cert_rejected"


async def test_certificate_for_another_name_is_refused(store: CertificateStore) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(f"https://{HOST}/wrong-name.pem")
    assert raised.value.code == "cert_rejected"


async def test_missing_certificate_is_refused(store: CertificateStore) -> None:
    with pytest.raises(SignatureError) as raised:
        await store.get(f"https://{HOST}/SimpleNotificationService-gone.pem")
    assert raised.value.code == "cert_rejected"


async def test_server_error_is_transient(store: CertificateStore) -> None:
    with pytest.raises(CertificateUnavailable) as raised:
        await store.get(f"https://{HOST}/unavailable.pem")
    assert raised.value.code == "cert_fetch_failed"


async def test_tls_server_not_trusted_is_transient(sns_server: SnsServer, resolver_factory: Callable[..., Any]) -> None:
    store = CertificateStore(resolver=resolver_factory({HOST: sns_server.port}))  # system trust store only
    try:
        with pytest.raises(CertificateUnavailable):
            await store.get(GOOD)
    finally:
        await store.close()
    assert sns_server.requests == []


async def test_preseeded_directory_avoids_fetching(sns_signer: Any, tmp_path: Path) -> None:
    (tmp_path / "SimpleNotificationService-good.pem").write_bytes(sns_signer[1])
    store = CertificateStore(preseed_dir=tmp_path)
    certificate = await store.get(GOOD)
    assert certificate.public_key() == sns_signer[0].public_key()
    assert store.fetch_count == 0


def test_invalid_preseeded_certificate_is_a_configuration_error(wrong_name_pem: bytes, tmp_path: Path) -> None:
    (tmp_path / "SimpleNotificationService-wrong.pem").write_bytes(wrong_name_pem)
    with pytest.raises(ConfigurationError):
        CertificateStore(preseed_dir=tmp_path)


@pytest.fixture
async def session(
    pki: Any, sns_server: SnsServer, resolver_factory: Callable[..., Any]
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=pki.client_context(), resolver=resolver_factory({HOST: sns_server.port}))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def test_confirm_subscription_gets_the_url(session: aiohttp.ClientSession, sns_server: SnsServer) -> None:
    url = f"https://{HOST}/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc"
    await confirm_subscription(url, session)
    assert sns_server.requests == ["/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc"]


async def test_confirm_subscription_does_not_follow_redirects(
    session: aiohttp.ClientSession, sns_server: SnsServer
) -> None:
    with pytest.raises(InfrastructureError):
        await confirm_subscription(f"https://{HOST}/moved", session)
    assert sns_server.requests == ["/moved"]


async def test_confirm_subscription_refuses_foreign_url(session: aiohttp.ClientSession, sns_server: SnsServer) -> None:
    with pytest.raises(SignatureError) as raised:
        await confirm_subscription("https://attacker.example/?Action=ConfirmSubscription", session)
    assert raised.value.code == "untrusted_subscribe_url"
    assert sns_server.requests == []
