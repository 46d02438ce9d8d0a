"""No secret ever leaves a process: every process runs with sentinel secrets through normal traffic and every
error path the test can reach, and nothing it writes anywhere contains a sentinel in any form.

The processes are the real ones, started the way an operator starts them (``python -m paystream.cli
<command>``, debug JSON logs, configuration from ``PAYSTREAM_*`` variables and a TOML file whose secrets are
``env:`` / ``file:`` references), on the real broker, with a moto S3 server of the test's own (stopped and
restarted for the S3 outage) and the provider double (tests/provider_double) as the provider APIs.

Sentinels (secret_sentinels.py): webhook secrets of Stripe (two, as during a rotation), Standard Webhooks and
Adyen, the Amazon Pay private keys (PEM) of two accounts, the Stripe API keys of two accounts and the Mollie
API key, two observation tokens, the S3 credentials (AWS_* variables) and the Kafka SASL password (set, but
unused without a SASL broker: it reaches the settings, not the wire).

Traffic: signed deliveries of every provider, an Amazon Pay IPN and a Mollie hint (both fetched), checkout
observations that register polls. Error paths: bad and stale signatures, a rotated secret, unknown routes
and accounts, malformed and oversized bodies, wrong and missing bearer tokens, schema violations, a wrong
method, an ingest without Kafka (503), unknown provider words and garbage on the inbox (processor DLQ), a
malformed fetch request (fetcher DLQ), provider answers 401 (wrong API key, unknown Amazon Pay key) and 500,
an unreachable provider host, S3 down while the archiver uploads and while it starts.

Looked at: every byte each process wrote to stdout/stderr (start to stop), each process's /metrics and
probe answers, every HTTP answer body, every record (key, value, header names and values) of every topic of
the run (internal and changelog topics included, aborted transactions included), and every archived object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fault_harness import AMAZON_KEY_ID, PrivateS3
from http_harness import ALLOWED_TOPIC, CERT_NAME, Deliveries, free_port, make_test_pki
from processor_harness import drop_topics, fresh_settings
from provider_double.server import Answer, ProviderDouble
from reliability_harness import TALLY
from secret_sentinels import Finding, Scanner, Secret, Sentinels, accounts_toml, printable

from ingest.providers.signers import mollie_hint, sign_stripe
from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer, make_producer
from processors.recovery.archive_format import decode_object

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0


# --- the processes ----------------------------------------------------------------------------------


@dataclass
class Process:
    """One ``paystream <command>`` child; everything it prints goes to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int  # where it serves /healthz, /readyz, /metrics
    stopped: bool = False  # by the test, on purpose

    @classmethod
    def start(cls, name: str, command: list[str], env: dict[str, str], folder: Path, port: int) -> Process:
        log = folder / f"{name}.log"
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                [sys.executable, "-m", "paystream.cli", "--log-level", "debug", "--log-format", "json", *command],
                stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
            )
        return cls(name, popen, log, port)

    def output(self) -> bytes:
        return self.log.read_bytes()

    def tail(self) -> str:
        return self.output()[-3000:].decode(errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    lines.append(entry)
        return lines

    def stop(self) -> int:
        self.stopped = True
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(90)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(30)
        return self.popen.returncode


@dataclass
class Collected:
    """Everything the processes handed to the outside world, by where it was seen."""

    blobs: list[tuple[str, bytes]] = field(default_factory=list)
    replies: list[tuple[str, int, bytes]] = field(default_factory=list)  # what was sent, status, body

    def add(self, where: str, data: bytes) -> None:
        self.blobs.append((where, data))


async def http(session: aiohttp.ClientSession, method: str, url: str, collected: Collected, label: str,
               body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    async with session.request(method, url, data=body, headers=headers or {}) as reply:
        payload = await reply.read()
    collected.replies.append((label, reply.status, payload))
    collected.add(f"HTTP {reply.status} answer to {label}", payload + str(dict(reply.headers)).encode())
    return reply.status


async def wait_until(condition: Callable[[], Any], what: str, processes: list[Process],
                     timeout_s: float = READY_TIMEOUT_S, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        for process in processes:
            assert process.stopped or process.popen.poll() is None, (
                f"{process.name} exited while waiting for {what}\n{process.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in processes)
            raise AssertionError(f"gave up waiting for {what}: {detail()}\n{tails}")
        await asyncio.sleep(0.3)


async def answers(session: aiohttp.ClientSession, url: str, status: int = 200) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(url) as reply:
            return reply.status == status
    return False


# --- the run's configuration ------------------------------------------------------------------------


def environment(settings: Settings, sentinels: Sentinels, folder: Path, toml: Path, app_id: str,
                s3: PrivateS3) -> dict[str, str]:
    """The processes' whole environment: nothing of the test runner's PAYSTREAM_* / AWS_* leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYSTREAM_", "AWS_"))}
    topics = settings.topics
    env.update({
        "PAYSTREAM_CONFIG_FILE": str(toml),
        "PAYSTREAM_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "PAYSTREAM_KAFKA__CLIENT_ID": f"leak-{sentinels.tag}",
        **{f"PAYSTREAM_TOPICS__{name.upper()}": getattr(topics, name) for name in (
            "inbox", "fetch_requests", "fetch_results", "status", "state", "dlq", "fetch_cursors", "fetch_delayed")},
        "PAYSTREAM_TOPICS__PARTITIONS": str(topics.partitions),
        "PAYSTREAM_S3__ENDPOINT_URL": s3.endpoint,
        "PAYSTREAM_S3__BUCKET": s3.bucket,
        "PAYSTREAM_S3__REGION": "us-east-1",
        "PAYSTREAM_SNS__CERT_DIR": str(folder / "sns"),
        "PAYSTREAM_PROCESSOR__APP_ID": app_id,
        "PAYSTREAM_PROCESSOR__SESSION_TIMEOUT_S": "8",
        "PAYSTREAM_FETCH__GROUP_ID": f"leak-fetch-{sentinels.tag}",
        "PAYSTREAM_FETCH__MAX_ATTEMPTS": "3",
        "PAYSTREAM_FETCH__BACKOFF_BASE_S": "0.1",
        "PAYSTREAM_FETCH__BACKOFF_CAP_S": "0.5",
        "PAYSTREAM_FETCH__COMMIT_INTERVAL_S": "0.2",
        "PAYSTREAM_FETCH__SHUTDOWN_GRACE_S": "5",
        **sentinels.environment(folder),
    })
    return env


def per_process(env: dict[str, str], folder: Path, name: str, port: int) -> dict[str, str]:
    return {**env, "PAYSTREAM_STATE_DIR": str(folder / f"state-{name}"), "PAYSTREAM_METRICS_PORT": str(port)}


# --- the traffic ------------------------------------------------------------------------------------


@dataclass
class Expected:
    """What the traffic must produce downstream (so the error paths are known to have run)."""

    status_subjects: set[str] = field(default_factory=set)


async def drive(session: aiohttp.ClientSession, base: str, sentinels: Sentinels, deliveries: Deliveries,
                double: ProviderDouble, collected: Collected) -> Expected:
    expected = Expected()

    async def post(label: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        return await http(session, "POST", base + path, collected, label, body, headers)

    async def must(status: int, label: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        got = await post(label, path, body, headers)
        assert got == status, (label, got, collected.replies[-1][2][:300])

    # Stripe: the current and the rotated secret, then every way a signature fails. The first event carries
    # the canary in its metadata: payload, not a secret, so it MUST show up in the inbox and the archive.
    for secret in (sentinels.stripe_webhook, sentinels.stripe_webhook_next):
        event = orjson.loads(deliveries.stripe_event())
        event["data"]["object"]["metadata"] = {"note": sentinels.canary}
        body, headers = deliveries.stripe(orjson.dumps(event), secret=secret)
        await must(200, "stripe signed", "/webhooks/stripe/main", body, headers)
        event = orjson.loads(body)
        expected.status_subjects.add(f"stripe:main:payment_intent:{event['data']['object']['id']}")
    body, headers = deliveries.stripe(secret="whsec_not_the_configured_one")
    await must(401, "stripe bad signature", "/webhooks/stripe/main", body, headers)
    body, headers = deliveries.stripe(secret=sentinels.stripe_webhook, age_s=3600)
    await must(401, "stripe stale", "/webhooks/stripe/main", body, headers)
    await must(401, "stripe unsigned", "/webhooks/stripe/main", body, {"Content-Type": "application/json"})
    await must(401, "stripe garbled header", "/webhooks/stripe/main", body, {"Stripe-Signature": "t=x,v1=@@"})
    unknown = orjson.dumps({"id": f"evt_{uuid.uuid4().hex[:20]}", "object": "event",
                            "type": "payment_intent.teleported", "created": int(time.time()),
                            "data": {"object": {"id": "pi_x", "object": "payment_intent"}}})
    await must(200, "stripe unknown event type (DLQ)", "/webhooks/stripe/main", unknown,
               {"Stripe-Signature": sign_stripe(unknown, sentinels.stripe_webhook, int(time.time()))})
    garbage = b"{not json"
    await post("stripe signed garbage", "/webhooks/stripe/main", garbage,
               {"Stripe-Signature": sign_stripe(garbage, sentinels.stripe_webhook, int(time.time()))})

    # Standard Webhooks and Adyen: good, bad, stale; an Adyen batch with one forged item.
    body, headers = deliveries.standard(secret=sentinels.standard_secret)
    await must(200, "standard signed", "/webhooks/standard/main", body, headers)
    expected.status_subjects.add(f"standard:main:payment:{orjson.loads(body)['data']['id']}")
    body, headers = deliveries.standard(secret="whsec_" + "QUJD" * 8)
    await must(401, "standard bad signature", "/webhooks/standard/main", body, headers)
    body, headers = deliveries.standard(secret=sentinels.standard_secret, age_s=3600)
    await must(401, "standard stale", "/webhooks/standard/main", body, headers)
    good_item = deliveries.adyen_item(key=sentinels.adyen_hex)
    body, headers = deliveries.adyen([good_item, deliveries.adyen_item(key="00" * 32)])
    await must(200, "adyen batch with a forged item", "/webhooks/adyen/main", body, headers)
    body, headers = deliveries.adyen([deliveries.adyen_item(key="11" * 32)])
    await post("adyen forged", "/webhooks/adyen/main", body, headers)
    await post("adyen malformed", "/webhooks/adyen/main", b"[[[", {"Content-Type": "application/json"})

    # Amazon Pay: a signed thin IPN (fetched with the sentinel key), a tampered one, a foreign topic.
    message = deliveries.sns_message()
    charge = orjson.loads(str(message["Message"]))["ObjectId"]
    double.set_object("amazon_pay", "charge", charge, {
        "chargeId": charge, "chargeAmount": {"amount": "25.00", "currencyCode": "EUR"},
        "statusDetails": {"state": "Authorized", "lastUpdatedTimestamp": "20240501T100000Z"}})
    body, headers = deliveries.sns(message)
    await must(200, "sns ipn", "/webhooks/amazon_pay/eu-main", body, headers)
    expected.status_subjects.add(f"amazon_pay:eu-main:charge:{charge}")
    tampered = orjson.loads(body)
    tampered["Message"] = str(tampered["Message"]).replace("CHARGE", "REFUND")
    await must(401, "sns tampered", "/webhooks/amazon_pay/eu-main", orjson.dumps(tampered), headers)
    body, headers = deliveries.sns(deliveries.sns_message(topic="arn:aws:sns:us-east-1:999999999999:other"))
    await must(401, "sns foreign topic", "/webhooks/amazon_pay/eu-main", body, headers)

    # Mollie: a hint (fetched; the first answers are 500s), and too many of them.
    double.set_object("mollie", "payment", "tr_leakhint", {
        "resource": "payment", "id": "tr_leakhint", "mode": "test", "status": "paid",
        "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2026-01-01T10:00:00+00:00",
        "paidAt": "2026-01-01T10:01:00+00:00"})
    double.script("mollie", Answer(status=500), Answer(status=500))
    await must(200, "mollie hint", "/webhooks/mollie/main", mollie_hint("tr_leakhint"),
               {"Content-Type": "application/x-www-form-urlencoded"})
    expected.status_subjects.add("mollie:main:payment:tr_leakhint")

    # Routes, methods, sizes.
    await must(404, "unknown account", "/webhooks/stripe/nobody", b"{}", {})
    await must(404, "unknown provider", "/webhooks/paypal/main", b"{}", {})
    await must(404, "unknown route", "/admin", b"{}", {})
    assert await http(session, "PUT", base + "/webhooks/stripe/main", collected, "wrong method") == 405
    await must(413, "oversized", "/webhooks/stripe/main", b"x" * (1024 * 1024 + 10), {})

    # Observations: a registered poll per fetch outcome, then every refusal.
    bearer = {"Content-Type": "application/json", "Authorization": f"Bearer {sentinels.observation_token}"}
    bearer_file = {**bearer, "Authorization": f"Bearer {sentinels.observation_token_file}"}
    double.set_object("stripe", "payment_intent", "pi_leakpoll", {
        "id": "pi_leakpoll", "object": "payment_intent", "amount": 2000, "amount_received": 2000, "currency": "eur",
        "status": "succeeded", "created": 1714550000})
    polls = [("stripe", "main", "payment_intent", "pi_leakpoll"),
             ("stripe", "revoked", "payment_intent", "pi_leakrevoked"),
             ("amazon_pay", "eu-wrongkey", "charge", "S02-LEAK-WRONGKEY"),
             ("mollie", "down", "payment", "tr_leakdown")]
    for provider, account, object_type, object_id in polls:
        body = orjson.dumps({"provider": provider, "account": account, "object_type": object_type,
                             "object_id": object_id, "request_id": uuid.uuid4().hex, "register_poll": True})
        await must(202, f"register poll {provider}/{account}", "/v1/observations", body, bearer_file)
    expected.status_subjects.add("stripe:main:payment_intent:pi_leakpoll")
    sync = deliveries.observation(account="main")
    await must(202, "sync observation", "/v1/observations", sync, bearer)
    wrong = {**bearer, "Authorization": "Bearer not-the-token"}
    await must(401, "observation wrong token", "/v1/observations", sync, wrong)
    await must(401, "observation no token", "/v1/observations", sync, {"Content-Type": "application/json"})
    await must(400, "observation malformed", "/v1/observations", b"{", bearer)
    await must(400, "observation schema violation", "/v1/observations", b'{"provider": "stripe"}', bearer)
    await post("observation unknown account", "/v1/observations", deliveries.observation(account="nobody"), bearer)
    await post("observation unknown word (DLQ)", "/v1/observations",
               deliveries.observation(account="main", state={"provider_status": "teleported"}), bearer)
    return expected


async def inject_garbage(settings: Settings) -> None:
    """Records only a broken or hostile producer would write: the processor and the fetcher dead-letter them."""
    producer = make_producer(settings, client_suffix="leak-garbage")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.inbox, b"\x00garbage that is no envelope", key=b"stripe:main:x")
        await producer.send_and_wait(settings.topics.fetch_requests, b"{\"not\": \"a fetch request\"}",
                                     key=b"stripe:main:payment_intent:pi_x")
    finally:
        await producer.stop()


# --- reading what was written -------------------------------------------------------------------------


async def run_topics(settings: Settings, app_id: str) -> list[str]:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id="leak-list")
    await admin.start()
    try:
        prefix = settings.topics.inbox.split(".", 1)[0] + "."
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix) or app_id in t)
    finally:
        await admin.close()


async def _records(settings: Settings, topic: str, *, committed_only: bool) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now (``committed_only=False``: aborted transactions too)."""
    isolation = "read_committed" if committed_only else "read_uncommitted"
    consumer = make_consumer(settings, group_id=None, client_suffix="leak-read", isolation_level=isolation)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(position >= ends[tp] for position, tp in zip(positions, partitions, strict=True)):
                break
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    return await _records(settings, topic, committed_only=False)


async def committed_count(settings: Settings, topic: str) -> int:
    return len(await _records(settings, topic, committed_only=True))


async def status_subjects(settings: Settings) -> set[str]:
    return {orjson.loads(r.value)["subject"] for r in await _records(settings, settings.topics.status,
                                                                    committed_only=True)}


def archive_objects(s3: PrivateS3) -> list[tuple[str, bytes]]:
    client = s3.client()
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
            for item in page.get("Contents", [])]
    return [(key, client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()) for key in keys]


# --- the test -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def provider_double(sentinels: Sentinels) -> AsyncIterator[ProviderDouble]:
    double = ProviderDouble()
    double.add_amazon_key(AMAZON_KEY_ID, sentinels.amazon_public_pem)
    # The real keys: a request with the revoked Stripe key gets 401, like Stripe's own API.
    double.api_keys.update({"stripe": sentinels.stripe_api_key, "mollie": sentinels.mollie_api_key})
    await double.start()
    try:
        yield double
    finally:
        await double.stop()


async def test_no_secret_reaches_logs_metrics_topics_the_archive_or_http_answers(
    base_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    sentinels = Sentinels.generate()
    scanner = Scanner(sentinels.all())
    collected = Collected()
    pki = make_test_pki()
    deliveries = Deliveries(pki)
    (tmp_path / "sns").mkdir()
    (tmp_path / "sns" / CERT_NAME).write_bytes(pki.signing_pem)
    settings = await fresh_settings(base_settings, partitions=2, tag="z")
    app_id = f"ps-test-{uuid.uuid4().hex[:10]}"
    s3 = PrivateS3(f"http://127.0.0.1:{free_port()}", tmp_path / "moto", bucket="paystream-leak")
    processes: list[Process] = []

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(drop_topics, settings, app_id)
        await s3.start()
        stack.push_async_callback(s3.stop)
        double = await stack.enter_async_context(provider_double(sentinels))
        toml = tmp_path / "paystream.toml"
        toml.write_text(accounts_toml(tmp_path, double_url=double.url, closed_url=f"http://127.0.0.1:{free_port()}",
                                      allowed_topic=ALLOWED_TOPIC, amazon_key_id=AMAZON_KEY_ID))
        env = environment(settings, sentinels, tmp_path, toml, app_id, s3)

        def start(name: str, command: list[str], port: int, **extra: str) -> Process:
            process = Process.start(name, command, {**per_process(env, tmp_path, name, port), **extra}, tmp_path, port)
            processes.append(process)
            stack.callback(process.stop)
            return process

        ingest_port = free_port()
        ingest = start("ingest", ["ingest", "--port", str(ingest_port)], ingest_port)
        processor = start("processor", ["process"], free_port())
        fetcher = start("fetcher", ["fetch"], free_port())
        archiver = start("archiver", ["archive"], free_port())
        # An ingest whose Kafka is gone: deliveries get 503, nothing is lost (the provider retries).
        lonely_port = free_port()
        lonely = start("ingest-without-kafka", ["ingest", "--port", str(lonely_port)], lonely_port,
                       PAYSTREAM_KAFKA__BOOTSTRAP=f"127.0.0.1:{free_port()}", PAYSTREAM_KAFKA__SEND_TIMEOUT_S="1")

        session = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        for process in (ingest, processor, fetcher, archiver):
            url = f"http://127.0.0.1:{process.port}/readyz"

            async def ready(url: str = url) -> bool:
                return await answers(session, url)

            await wait_until(ready, f"{process.name} ready", processes)
        lonely_alive = f"http://127.0.0.1:{lonely_port}/healthz"
        await wait_until(lambda: answers(session, lonely_alive), "the ingest without Kafka", processes)

        expected = await drive(session, f"http://127.0.0.1:{ingest_port}", sentinels, deliveries, double, collected)
        body, headers = deliveries.stripe(secret=sentinels.stripe_webhook)
        assert await http(session, "POST", f"http://127.0.0.1:{lonely_port}/webhooks/stripe/main", collected,
                          "stripe without kafka", body, headers) == 503
        await http(session, "GET", f"http://127.0.0.1:{lonely_port}/readyz", collected, "readyz without kafka")
        await inject_garbage(settings)

        missing: list[str] = []

        async def downstream_done() -> bool:
            missing[:] = [f"status events of {sorted(expected.status_subjects - await status_subjects(settings))}"]
            missing.append(f"dead letters: {await committed_count(settings, settings.topics.dlq)} of 4")
            missing.append(f"fetch results: {await committed_count(settings, settings.topics.fetch_results)} of 5")
            missing.append(f"provider answers: {[(r.provider, r.status) for r in double.requests]}")
            return (expected.status_subjects <= await status_subjects(settings)
                    and await committed_count(settings, settings.topics.dlq) >= 4
                    and double.count("stripe", status=401) >= 1 and double.count("amazon_pay", status=401) >= 1
                    and double.count("mollie", status=500) >= 2
                    and await committed_count(settings, settings.topics.fetch_results) >= 5)

        await wait_until(downstream_done, "status events, dead letters and fetch outcomes", processes,
                         detail=lambda: "\n".join(missing))

        for process in (ingest, processor, fetcher, archiver, lonely):
            for path in ("/metrics", "/no-such-page"):
                await http(session, "GET", f"http://127.0.0.1:{process.port}{path}", collected,
                           f"GET {path} of {process.name}")

        # S3 goes away: the archiver's last upload fails, a new archiver waits for S3, then archives all.
        await s3.stop()
        assert archiver.stop() == 0, archiver.tail()
        again = start("archiver-after-outage", ["archive"], free_port())
        await wait_until(lambda: _logged(again, "archive_s3_unreachable"), "the archiver waiting for S3", processes)
        waited = again  # the one that saw the outage, even if the harness's race below makes it start again
        await s3.start()
        # moto forgets its buckets when stopped and the harness creates the bucket right after the server is up:
        # an archiver that looked in between found no bucket and refused to start (exit 2, a configuration
        # error, rightly). That is the harness's race, not an outage: start it once more.
        await wait_until(lambda: _started_or_exited(again), "the archiver after the outage to start or exit", processes)
        if again.popen.poll() == 2 and "does not exist" in again.tail():
            again.stop()  # its output is still scanned with every other process's
            again = start("archiver-after-outage-2", ["archive"], free_port())
        await wait_until(lambda: _logged(again, "archiver_started"), "the archiver after the outage", processes)
        await http(session, "GET", f"http://127.0.0.1:{again.port}/metrics", collected, "GET /metrics of archiver 2")
        assert again.stop() == 0, again.tail()
        for process in processes:
            process.stop()

        for key, data in archive_objects(s3):
            collected.add(f"s3 object {key}", data)
            if key.endswith(".gz"):
                collected.add(f"s3 object {key} unzipped", gzip.decompress(data))
                for record in decode_object(data):
                    collected.add(f"s3 {key} record {record.offset}", b"".join(
                        [record.key or b"", record.value or b""] + [n.encode() + v for n, v in record.headers]))
        topics = {topic: await read_topic(settings, topic) for topic in await run_topics(settings, app_id)}
        for topic, records in topics.items():
            for record in records:
                where = f"kafka {topic}/{record.partition}/{record.offset}"
                headers = b"".join(name.encode() + b"=" + bytes(value or b"") for name, value in record.headers or ())
                collected.add(where, (record.key or b"") + b"|" + (record.value or b"") + b"|" + headers)
        for process in processes:
            collected.add(f"output of {process.name}", process.output())
        # What the processes keep on disk (RocksDB state, scratch files), as stored.
        for path in sorted(tmp_path.glob("state-*/**/*")):
            if path.is_file():
                collected.add(f"disk {path.relative_to(tmp_path)}", path.read_bytes())

    # What was looked at holds the payloads: the canary sent in a webhook body is found where payloads go (the
    # inbox envelope keeps the body base64-encoded; the archived records decoded), so a secret would be too.
    canary = Scanner([Secret("canary", sentinels.canary)])
    seen = [finding.where for where, data in collected.blobs for finding in canary.scan(where, data)]
    assert any(where.startswith(f"kafka {settings.topics.inbox}/") for where in seen), seen
    assert any(where.startswith("s3 ") and " record " in where for where in seen), seen

    # The scanner finds every form it looks for (else a clean result would mean nothing).
    planted = [
        (b"pem file " + (tmp_path / "amazon-pay.pem").read_bytes(), "amazon pay private key"),
        (b"xx" + base64.b64encode(b"~" + sentinels.stripe_api_key.encode() + b"!") + b"yy", "stripe api key"),
        (sentinels.standard_key.hex().encode(), "standard webhooks secret"),
        (bytes.fromhex(sentinels.adyen_hex).hex().encode(), "adyen hmac key"),
        (sentinels.amazon_der_wrong[100:160].hex().upper().encode(), "amazon pay private key (2nd account)"),
    ]
    for data, secret in planted:
        assert secret in {f.secret for f in Scanner(sentinels.all()).scan("planted", data)}, secret

    # Every path ran (the assertions a clean scan stands on).
    statuses = {status for _, status, _ in collected.replies}
    assert {200, 202, 400, 401, 404, 405, 413, 503} <= statuses, statuses
    reasons = {line.get("reason") for line in _entries(ingest, "delivery_rejected")}
    assert {"bad_signature", "stale_timestamp", "bad_token", "missing_token"} <= reasons, reasons
    assert _entries(archiver, "archive_upload_failed") and _entries(waited, "archive_s3_unreachable")
    assert {line["status"] for line in _entries(fetcher, "fetch_client_error")} >= {401}
    dead = topics[settings.topics.dlq]
    assert {settings.topics.inbox, settings.topics.status, settings.topics.state, settings.topics.fetch_results,
            settings.topics.fetch_delayed} <= set(topics)
    assert any(app_id in topic and "changelog" in topic for topic in topics), sorted(topics)
    assert len(dead) >= 4 and all(any(n == "paystream-error-message" for n, _ in r.headers) for r in dead)
    assert all(_entries(p, e) for p, e in ((ingest, "ingest_started"), (fetcher, "fetcher_started"),
                                           (processor, "processor_starting"), (again, "archiver_started")))

    findings: list[Finding] = []
    for where, data in collected.blobs:
        findings += scanner.scan(where, data)
    TALLY["secret sentinels"] = len(sentinels.all())
    TALLY["bytes scanned for secrets"] += sum(scanner.scanned.values())
    for where in scanner.scanned:
        kind = "process output" if where.startswith("output of") else where.split(" ")[0]
        TALLY[f"places scanned for secrets: {kind}"] += 1
    TALLY["secret leaks found"] += len(findings)
    assert findings == [], "\n".join(f"{finding}: {printable(_context(collected, finding))}" for finding in findings)


def _entries(process: Process, event: str) -> list[dict[str, Any]]:
    return process.logged(event)


async def _logged(process: Process, event: str) -> bool:
    return bool(process.logged(event))


async def _started_or_exited(process: Process) -> bool:
    return bool(process.logged("archiver_started")) or process.popen.poll() is not None


def _context(collected: Collected, finding: Finding) -> bytes:
    return next(data for where, data in collected.blobs if where == finding.where)


@pytest.mark.parametrize(("name", "toml"), [
    ("unreadable PEM file",
     "[accounts.amazon_pay.x]\npublic_key_id = \"K\"\nprivate_key = \"file:{folder}/bad.pem\"\n"),
    ("missing secret variable", "[accounts.stripe.x]\napi_key = \"env:LEAK_NOT_SET\"\n"),
], ids=["unreadable-pem", "missing-secret-variable"])
async def test_start_up_configuration_errors_name_the_problem_not_the_secret(
    base_settings: Settings, kafka_bootstrap: str, tmp_path: Path, name: str, toml: str
) -> None:
    sentinels = Sentinels.generate()
    # A PEM file broken halfway: its intact lines are real key material.
    lines = sentinels.amazon_pem.splitlines()
    (tmp_path / "bad.pem").write_text("\n".join([*lines[:10], "!!broken!!", *lines[10:]]))
    (tmp_path / "paystream.toml").write_text(toml.format(folder=tmp_path))
    settings = await fresh_settings(base_settings, partitions=1, tag="z")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAYSTREAM_", "AWS_"))}
    topics = {f"PAYSTREAM_TOPICS__{field.upper()}": getattr(settings.topics, field) for field in (
        "inbox", "fetch_requests", "fetch_results", "status", "state", "dlq", "fetch_cursors", "fetch_delayed")}
    run_env = {**base, **sentinels.environment(tmp_path), **topics, "PAYSTREAM_TOPICS__PARTITIONS": "1",
               "PAYSTREAM_CONFIG_FILE": str(tmp_path / "paystream.toml"),
               "PAYSTREAM_KAFKA__BOOTSTRAP": settings.kafka.bootstrap}
    try:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "paystream.cli", "fetch"], cwd=ROOT, env=run_env,
            capture_output=True, timeout=120, check=False)
    finally:
        await drop_topics(settings)

    assert result.returncode != 0, name
    assert b"ConfigurationError" in result.stderr, result.stderr[-800:]
    assert Scanner(sentinels.all()).scan(name, result.stdout + result.stderr) == []


@pytest.mark.parametrize("where", ["toml", "env"])
def test_a_mistakenly_inline_secret_is_not_echoed_by_the_configuration_error(tmp_path: Path, where: str) -> None:
    sentinels = Sentinels.generate()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAYSTREAM_", "AWS_"))}
    if where == "toml":
        (tmp_path / "paystream.toml").write_text(f'[accounts.stripe.x]\nsecrets = ["{sentinels.stripe_webhook}"]\n')
        env = {**base, "PAYSTREAM_CONFIG_FILE": str(tmp_path / "paystream.toml")}
    else:
        env = {**base, "PAYSTREAM_OBSERVATION_TOKENS": orjson.dumps([sentinels.observation_token]).decode()}
    result = subprocess.run([sys.executable, "-m", "paystream.cli", "ingest"], cwd=ROOT, env=env,
                            capture_output=True, timeout=120, check=False)

    assert result.returncode == 2
    assert b"never inline" in result.stderr
    assert Scanner(sentinels.all()).scan(where, result.stdout + result.stderr) == []
