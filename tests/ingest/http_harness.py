"""Harness for the HTTP-level ingest tests (fixtures in conftest.py): the real uvicorn server, in-process.

:func:`serve_ingest` runs :class:`ingest.app.IngestApp` behind the production uvicorn configuration
(``ingest.server.uvicorn_config``: httptools, its timeouts and limits) on the test's event loop, with
accounts for every provider built directly (no environment), and hands back a :class:`RunningIngest`
with an aiohttp client. :func:`serve_sns_host` is a local HTTPS server playing
``sns.us-east-1.amazonaws.com`` with a certificate from a CA the tests create; the SNS certificate store
and the subscription confirmer reach it through an injected resolver and ssl context, so every URL rule
stays as in production.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
import uvicorn
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiokafka import TopicPartition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from pydantic import SecretStr

from ingest.accounts import AccountBook
from ingest.app import IngestApp
from ingest.delivery import ResolvedAccount
from ingest.providers.amazon_pay.certs import CertificateStore
from ingest.providers.signers import adyen_batch, mollie_hint, sign_adyen_item, sign_sns, sign_standard, sign_stripe
from ingest.server import uvicorn_config
from ingest.subscriptions import SubscriptionHandler
from paystream.config import AccountConfig, Settings
from paystream.kafka import make_consumer
from schemas.envelopes import InboxEnvelope

ACCOUNT = "main"
SNS_ACCOUNT = "eu-main"
SNS_HOST = "sns.us-east-1.amazonaws.com"
ALLOWED_TOPIC = "arn:aws:sns:us-east-1:123456789012:paystream-ipn"
FOREIGN_TOPIC = "arn:aws:sns:us-east-1:999999999999:someone-else"
CERT_NAME = "SimpleNotificationService-paystreamtest.pem"
CERT_URL = f"https://{SNS_HOST}/{CERT_NAME}"
STRIPE_SECRET = "whsec_stripe_http_test_secret"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-http-test-key!").decode()
ADYEN_HEX_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
OBSERVATION_TOKEN = "observation-token-for-http-tests"
HINT_BURST = 3
HINT_RATE_PER_S = 0.001  # effectively no refill during a test: the burst is all a test gets


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def harness_accounts() -> AccountBook:
    """One account per provider (Mollie's hint bucket small enough to flood in a test)."""

    def account(provider: str, name: str, secrets_: tuple[str, ...] = (), **config: Any) -> ResolvedAccount:
        return ResolvedAccount(provider, name, AccountConfig(**config), tuple(SecretStr(s) for s in secrets_))

    book = [
        account("stripe", ACCOUNT, (STRIPE_SECRET,)),
        account("standard", ACCOUNT, (STANDARD_SECRET,)),
        account("adyen", ACCOUNT, (ADYEN_HEX_KEY,)),
        account("mollie", ACCOUNT, hint_burst=HINT_BURST, hint_rate_per_s=HINT_RATE_PER_S),
        account("amazon_pay", SNS_ACCOUNT, allowed_topic_arns=[ALLOWED_TOPIC]),
    ]
    return AccountBook({(a.provider, a.name): a for a in book})


# --- a throwaway PKI standing in for Amazon's ---------------------------------------------------------


@dataclass(frozen=True)
class HarnessPki:
    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    signing_key: rsa.RSAPrivateKey  # signs SNS messages
    signing_pem: bytes  # its certificate, issued for sns.amazonaws.com

    def issue(self, name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        return key, cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        pem = self.ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return ssl.create_default_context(cadata=pem)

    def server_context(self, name: str) -> ssl.SSLContext:
        key, cert_pem = self.issue(name)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as scratch:
            Path(scratch, "cert.pem").write_bytes(cert_pem)
            Path(scratch, "key.pem").write_bytes(key_pem)
            context.load_cert_chain(Path(scratch, "cert.pem"), Path(scratch, "key.pem"))
        return context


def make_test_pki() -> HarnessPki:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paystream HTTP test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    unsigned = HarnessPki(ca_key, ca_cert, ca_key, b"")
    signing_key, signing_pem = unsigned.issue("sns.amazonaws.com")
    return HarnessPki(ca_key, ca_cert, signing_key, signing_pem)


class LoopbackResolver(AbstractResolver):
    """Resolves the chosen host names to 127.0.0.1:<port>; anything else fails (tests never leave the box)."""

    def __init__(self, targets: Mapping[str, int]) -> None:
        self.targets = dict(targets)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.targets:
            raise OSError(f"test resolver: {host} is not a test host")
        return [ResolveResult(hostname=host, host="127.0.0.1", port=self.targets[host], family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


@dataclass
class SnsHost:
    """The local HTTPS stand-in for sns.<region>.amazonaws.com, with what it was asked."""

    port: int
    ssl_context: ssl.SSLContext  # for clients: trusts the test CA only
    requests: list[str] = field(default_factory=list)  # path + query of every GET
    confirm_status: int = 200

    def resolver(self) -> LoopbackResolver:
        return LoopbackResolver({SNS_HOST: self.port})

    def certificate_store(self) -> CertificateStore:
        return CertificateStore(ssl_context=self.ssl_context, resolver=self.resolver(), timeout_s=5.0)

    def subscription_handler(self) -> SubscriptionHandler:
        return LoopbackSubscriptionHandler(self)

    def confirmations(self) -> list[str]:
        return [path for path in self.requests if "Action=ConfirmSubscription" in path]


class LoopbackSubscriptionHandler(SubscriptionHandler):
    """SubscriptionHandler whose HTTP client reaches :class:`SnsHost` (resolver + test CA).

    SubscriptionHandler has no injection point for its client yet, so this overrides ``_client``.
    """

    def __init__(self, host: SnsHost) -> None:
        super().__init__(timeout_s=5.0)
        self._host = host

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._host.ssl_context, resolver=self._host.resolver())
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session


@asynccontextmanager
async def serve_sns_host(pki: HarnessPki) -> AsyncIterator[SnsHost]:
    """An HTTPS server on loopback with a certificate for sns.us-east-1.amazonaws.com from the test CA."""
    host = SnsHost(port=0, ssl_context=pki.client_context())

    async def serve(request: web.Request) -> web.Response:
        host.requests.append(request.path_qs)
        if request.path == f"/{CERT_NAME}":
            return web.Response(body=pki.signing_pem, content_type="application/x-pem-file")
        if request.query.get("Action") == "ConfirmSubscription":
            return web.Response(status=host.confirm_status, text="<ConfirmSubscriptionResponse/>")
        return web.Response(status=404)

    application = web.Application()
    application.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(SNS_HOST))
    await site.start()
    host.port = runner.addresses[0][1]
    try:
        yield host
    finally:
        await runner.cleanup()


# --- deliveries -----------------------------------------------------------------------------------


class Deliveries:
    """Signed (or deliberately broken) request bodies and headers for every provider."""

    def __init__(self, pki: HarnessPki) -> None:
        self._pki = pki

    def stripe_event(self, *, padding: int = 0) -> bytes:
        event = {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {"id": f"pi_{uuid.uuid4().hex[:24]}", "object": "payment_intent",
                                "amount": 1999, "currency": "eur", "status": "succeeded",
                                "metadata": {"note": "x" * padding}}},
        }
        return orjson.dumps(event)

    def stripe(self, body: bytes | None = None, *, age_s: int = 0, secret: str = STRIPE_SECRET
               ) -> tuple[bytes, dict[str, str]]:
        body = self.stripe_event() if body is None else body
        header = sign_stripe(body, secret, int(time.time()) - age_s)
        return body, {"Content-Type": "application/json", "Stripe-Signature": header}

    def standard(self, *, age_s: int = 0, secret: str = STANDARD_SECRET) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps({"type": "payment.succeeded", "timestamp": "2026-01-01T00:00:00Z",
                             "data": {"id": f"pay_{uuid.uuid4().hex[:12]}"}})
        headers = sign_standard(body, secret, f"msg_{uuid.uuid4().hex}", int(time.time()) - age_s)
        return body, {"Content-Type": "application/json", **headers}

    def adyen_item(self, *, key: str = ADYEN_HEX_KEY, event_code: str = "AUTHORISATION") -> dict[str, object]:
        item = {
            "pspReference": uuid.uuid4().hex[:16].upper(),
            "merchantAccountCode": "PaystreamTest",
            "merchantReference": f"order-{uuid.uuid4().hex[:8]}",
            "amount": {"value": 1999, "currency": "EUR"},
            "eventCode": event_code,
            "success": "true",
            "eventDate": "2026-01-01T00:00:00+01:00",
        }
        return sign_adyen_item(item, key)

    def adyen(self, items: list[dict[str, object]]) -> tuple[bytes, dict[str, str]]:
        return adyen_batch(items), {"Content-Type": "application/json"}

    def mollie(self, resource_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        resource_id = resource_id or f"tr_{uuid.uuid4().hex[:10]}"
        return mollie_hint(resource_id), {"Content-Type": "application/x-www-form-urlencoded"}

    def sns_message(self, message_type: str = "Notification", *, topic: str = ALLOWED_TOPIC) -> dict[str, object]:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message: dict[str, object] = {
            "Type": message_type,
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Timestamp": stamp,
            "SignatureVersion": "2",
            "SigningCertURL": CERT_URL,
        }
        if message_type == "Notification":
            message["Message"] = orjson.dumps({
                "ObjectType": "CHARGE", "ObjectId": f"S02-{uuid.uuid4().hex[:7]}-{uuid.uuid4().hex[:7]}",
                "ChargePermissionId": "S02-1234567-7654321", "NotificationType": "STATE_CHANGE",
                "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V1",
            }).decode()
            message["UnsubscribeURL"] = f"https://{SNS_HOST}/?Action=Unsubscribe&SubscriptionArn={topic}:1"
        else:
            token = secrets.token_hex(32)
            message["Message"] = f"You have chosen to subscribe to the topic {topic}."
            message["Token"] = token
            message["SubscribeURL"] = f"https://{SNS_HOST}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"
        return message

    def sns(self, message: dict[str, object] | None = None) -> tuple[bytes, dict[str, str]]:
        message = self.sns_message() if message is None else message
        signed = sign_sns(message, self._pki.signing_key)
        headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": str(message["Type"]),
                   "x-amz-sns-message-id": str(message["MessageId"]), "x-amz-sns-topic-arn": str(message["TopicArn"])}
        return orjson.dumps(signed), headers

    def observation(self, **overrides: object) -> bytes:
        request: dict[str, object] = {
            "provider": "stripe", "account": ACCOUNT, "object_type": "payment_intent",
            "object_id": f"pi_{uuid.uuid4().hex[:24]}", "request_id": f"req-{uuid.uuid4().hex}",
            "state": {"provider_status": "succeeded", "amount": 1999, "currency": "EUR"},
        }
        request.update(overrides)
        return orjson.dumps(request)


# --- the server -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class RunningIngest:
    app: IngestApp
    settings: Settings
    port: int
    client: aiohttp.ClientSession

    async def request(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
                      ) -> Reply:
        async with self.client.request(method, f"http://127.0.0.1:{self.port}{path}", data=body,
                                       headers=dict(headers or {})) as response:
            payload = await response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, payload)

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("POST", path, body, headers)

    def bearer(self) -> dict[str, str]:
        """Headers of an authenticated ``POST /v1/observations``."""
        return {"Content-Type": "application/json", "Authorization": f"Bearer {OBSERVATION_TOKEN}"}

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.app.publisher.ready:
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest publisher not ready within {timeout_s}s")
            await asyncio.sleep(0.1)


StartIngest = Callable[..., Awaitable[RunningIngest]]


async def serve_ingest(stack: AsyncExitStack, settings: Settings, token_file: Path, *,
                       certificates: CertificateStore | None = None,
                       subscriptions: SubscriptionHandler | None = None, **http: Any) -> RunningIngest:
    """Start IngestApp under the production uvicorn config (httptools) on a free port; ``stack`` stops it.

    ``http`` overrides fields of ``settings.http`` (e.g. ``body_timeout_s``, ``max_body_bytes``).
    """
    settings = settings.model_copy(update={
        "observation_tokens": [f"file:{token_file}"],
        "http": settings.http.model_copy(update=http),
    })
    app = IngestApp(settings, accounts=harness_accounts(), certificates=certificates)
    if subscriptions is not None:
        app.subscriptions = subscriptions
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(settings, host="127.0.0.1", port=port, workers=1)
    config.app, config.factory = app, False  # the instance under test instead of the env factory
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)
        sock.close()

    stack.push_async_callback(stop)
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        await asyncio.sleep(0.02)
    # An idle connection is dropped by the client before the server's keep-alive timeout closes it: reused at
    # the moment the server closes it, a request fails with "Server disconnected" (what real senders avoid
    # the same way).
    connector = aiohttp.TCPConnector(keepalive_timeout=settings.http.keepalive_timeout_s / 2)
    client = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
    stack.push_async_callback(client.close)
    return RunningIngest(app, settings, port, client)


# --- observing the outcome --------------------------------------------------------------------------


def counter_value(name: str, **labels: str) -> float:
    """The current value of one labelled sample in the process registry (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejections_total(reason: str, provider: str | None = None) -> float:
    """``paystream_ingest_rejections_total`` for ``reason``, summed over providers unless one is named."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "paystream_ingest_rejections_total" and sample.labels.get("reason") == reason
                    and (provider is None or sample.labels.get("provider") == provider)):
                total += sample.value
    return total


@dataclass
class RejectionTrail:
    """What a rejection leaves behind besides the reply: log lines and the rejection counter."""

    reason: str
    provider: str | None
    before: float
    logs: list[dict[str, Any]] = field(default_factory=list)
    after: float = 0.0


@contextmanager
def rejection_trail(reason: str, provider: str | None = None) -> Iterator[RejectionTrail]:
    trail = RejectionTrail(reason, provider, rejections_total(reason, provider))
    with structlog.testing.capture_logs() as logs:
        trail.logs = logs
        yield trail
    trail.after = rejections_total(reason, provider)


def assert_rejected(reply: Reply, trail: RejectionTrail, status: int) -> None:
    """Status, a JSON ``{"error", "detail"}`` body naming the reason, a warning log line, the counter +1."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    payload = reply.json()
    assert set(payload) == {"error", "detail"}
    assert payload["error"] == trail.reason
    assert isinstance(payload["detail"], str) and payload["detail"]
    logged = [entry for entry in trail.logs if entry.get("reason") == trail.reason]
    assert logged, f"no log line with reason={trail.reason}: {trail.logs}"
    assert logged[0]["log_level"] == "warning"
    assert trail.after == trail.before + 1


async def post_rejected(running: RunningIngest, path: str, body: bytes, headers: Mapping[str, str], *,
                        status: int, reason: str, provider: str | None = None) -> Reply:
    """POST, and assert the reply and the trail of a rejection (see :func:`assert_rejected`)."""
    with rejection_trail(reason, provider) as trail:
        reply = await running.post(path, body, headers)
    assert_rejected(reply, trail, status)
    return reply


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split()[1]), headers, body)


def request_head(path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_inbox(settings: Settings, timeout_s: float = 30.0) -> list[tuple[bytes, InboxEnvelope]]:
    """Every record on the test's inbox topic, as (key, envelope)."""
    topic = settings.topics.inbox
    partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    consumer = make_consumer(settings, group_id=None, client_suffix="http-test-reader")
    await consumer.start()
    records: list[tuple[bytes, InboxEnvelope]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout_s}s")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend((record.key, InboxEnvelope.from_bytes(record.value)) for record in batch)
    finally:
        await consumer.stop()
    return records
