"""Fault scenarios under steady load: the pieces (private broker, load driver, fetcher process, status
follower) and THE closing check every scenario ends with.

The load is a provider's view: webhooks are offered at a steady rate, a delivery answered with anything
but 2xx (503 during an outage, a dropped connection) is retried a second later, re-signed, like Stripe
or SNS would. Stripe payments walk through three steps (created → requires_capture → succeeded), each
offered only once the previous one was acknowledged; every acknowledged step must be reflected in the
payment's status events (see :func:`unreflected` for what that means when steps overtake each other).
Amazon Pay IPNs are thin: each names a new charge whose state is set at the provider double first, and
must show up as a status event of that charge with that state (the evidence is then the fetch id).

The closing check (:func:`closing_check`):
* every acknowledged webhook is reflected in payments.status.v1 (records lost must be 0);
* per payment, one event content per (payment_key, sequence), sequences 1..n without gaps, and no two
  consecutive events with the same status and amounts (no real transition emitted twice). The same
  event (same deterministic id, same content) written twice after a crash is at-least-once delivery,
  which consumers absorb by id; it is counted and reported, not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition
from http_harness import SNS_ACCOUNT, STRIPE_SECRET, Deliveries, RunningIngest
from private_stack import load_stack
from processor_harness import Worker
from reliability_harness import LOAD_REPORTS, TALLY

from ingest.providers.signers import sign_stripe
from paystream.config import Settings
from paystream.kafka import make_consumer

ROOT = Path(__file__).resolve().parents[2]
FETCHER_SCRIPT = Path(__file__).with_name("rel_fetcher_process.py")
STRIPE_PATH = "/webhooks/stripe/main"
SNS_PATH = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"


# --- the local stack's services, private to one test ------------------------------------------------


# --- processes we SIGKILL ---------------------------------------------------------------------------


class FetcherProcess(Worker):
    """``run_fetcher`` in a subprocess (so it can be SIGKILLed), with ``settings.fetch`` as its options;
    kill / stop / log_tail are the processor worker's."""

    @classmethod
    def start(cls, settings: Settings, log_dir: Path, name: str = "fetcher") -> FetcherProcess:
        log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, str(FETCHER_SCRIPT), settings.model_dump_json()],
                stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(process, log_path)


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Step:
    """One webhook of the load: what to post, and how it must be reflected on the status topic."""

    payment_key: str
    delivery_id: str
    path: str
    body: bytes
    sign: Callable[[bytes], dict[str, str]]  # headers for one attempt (re-signed each time, as providers do)
    index: int = 0  # position in its payment's lifecycle
    reflected_as: str | None = None  # None: as the evidence of an event; else: a status of the payment
    attempts: int = 0


class StripeLifecycles:
    """Stripe payments, three steps each, the next offered once the previous was acknowledged."""

    STEPS = (
        ("payment_intent.created", "requires_payment_method", 0),
        ("payment_intent.amount_capturable_updated", "requires_capture", 0),
        ("payment_intent.succeeded", "succeeded", 2000),
    )

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.started = 0
        self.ready: deque[Step] = deque()

    def take(self) -> Step:
        if self.ready:
            return self.ready.popleft()
        self.started += 1
        return self.step(f"pi_{self.tag}{self.started:05d}", 0)

    def acked(self, step: Step) -> None:
        if step.index + 1 < len(self.STEPS):
            self.ready.append(self.step(step.payment_key.rsplit(":", 1)[1], step.index + 1))

    def step(self, intent: str, index: int) -> Step:
        event_type, status, received = self.STEPS[index]
        body = stripe_event(intent, event_type, status, index, received)
        return Step(f"stripe:main:payment_intent:{intent}", f"evt_{intent}_{index}", STRIPE_PATH, body,
                    stripe_headers, index)

    def lifecycle(self, intent: str) -> list[Step]:
        return [self.step(intent, index) for index in range(len(self.STEPS))]


def stripe_event(intent: str, event_type: str, status: str, index: int, received: int) -> bytes:
    return orjson.dumps({
        "id": f"evt_{intent}_{index}", "object": "event", "type": event_type, "created": 1714550000 + index,
        "data": {"object": {"id": intent, "object": "payment_intent", "amount": 2000, "amount_received": received,
                            "currency": "eur", "status": status, "created": 1714550000,
                            "latest_charge": f"ch_{intent}"}},
    })


def stripe_headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, int(time.time()))}


class Scripted:
    """A fixed list of steps, offered in order (e.g. every delivery three times, some out of order)."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = deque(steps)

    def take(self) -> Step:
        return self.steps.popleft()

    def acked(self, step: Step) -> None:
        return None

    def __len__(self) -> int:
        return len(self.steps)


class AmazonPayIpns:
    """One thin IPN per new charge; the charge (Authorized) is put at the provider double first."""

    def __init__(self, tag: str, deliveries: Deliveries, put_object: Callable[[str, dict[str, Any]], None]) -> None:
        self.tag = tag
        self.deliveries = deliveries
        self.put_object = put_object
        self.started = 0

    def take(self) -> Step:
        self.started += 1
        charge_id = f"S02-{self.tag}-{self.started:07d}"
        self.put_object(charge_id, amazon_charge(charge_id))
        message = self.deliveries.sns_message()
        message["Message"] = orjson.dumps({
            "ObjectType": "CHARGE", "ObjectId": charge_id, "ChargePermissionId": "S02-0000000-0000000",
            "NotificationType": "STATE_CHANGE", "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V1",
        }).decode()
        body, headers = self.deliveries.sns(message)
        # SNS retries send the very same signed message.
        return Step(f"amazon_pay:{SNS_ACCOUNT}:charge:{charge_id}", str(message["MessageId"]), SNS_PATH, body,
                    functools.partial(same_headers, headers), reflected_as="authorized")

    def acked(self, step: Step) -> None:
        return None


def same_headers(headers: dict[str, str], _body: bytes) -> dict[str, str]:
    return dict(headers)


def amazon_charge(charge_id: str) -> dict[str, Any]:
    return {"chargeId": charge_id, "chargeAmount": {"amount": "25.00", "currencyCode": "EUR"},
            "statusDetails": {"state": "Authorized", "lastUpdatedTimestamp": "20240501T100000Z"}}


@dataclass
class LoadStats:
    name: str
    rate: float
    duration_s: float
    offered: int = 0  # first attempts
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    acked: list[Step] = field(default_factory=list)
    refused: list[tuple[Step, int]] = field(default_factory=list)  # 4xx: a bug in a fault scenario
    unacknowledged: list[Step] = field(default_factory=list)  # still failing when the drain ended

    def describe(self) -> str:
        answers = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        return (f"{self.name}: {self.rate:.0f} webhooks/s offered for {self.duration_s:.0f} s; "
                f"{self.offered} webhooks, {self.attempts} requests ({answers}); {len(self.acked)} acknowledged")


async def drive(running: RunningIngest, source: StripeLifecycles | AmazonPayIpns | Scripted, *, name: str, rate: float,
                duration_s: float, retry_after_s: float = 1.0, drain_s: float = 120.0) -> LoadStats:
    """Offer webhooks at ``rate`` for ``duration_s``; then keep retrying the unacknowledged ones (at most
    ``drain_s``), like providers do. Returns what happened to every delivery."""
    stats = LoadStats(name, rate, duration_s)
    retries: deque[tuple[float, Step]] = deque()
    in_flight: set[asyncio.Task[None]] = set()
    url = f"http://127.0.0.1:{running.port}"
    timeout = aiohttp.ClientTimeout(total=30)

    async def attempt(session: aiohttp.ClientSession, step: Step) -> None:
        step.attempts += 1
        stats.attempts += 1
        try:
            async with session.post(url + step.path, data=step.body, headers=step.sign(step.body)) as reply:
                await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0  # no answer: the provider retries
        stats.statuses[status] += 1
        if 200 <= status < 300:
            stats.acked.append(step)
            source.acked(step)
        elif status in (0, 429, 500, 502, 503, 504):
            retries.append((time.monotonic() + retry_after_s, step))
        else:
            stats.refused.append((step, status))

    started = time.monotonic()
    interval = 1.0 / rate
    next_at = started
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            now = time.monotonic()
            loading = now - started < duration_s
            if not loading and not in_flight and not retries:
                break
            if now - started > duration_s + drain_s:
                stats.unacknowledged = [step for _, step in retries]
                break
            step: Step | None = None
            if retries and retries[0][0] <= now:
                step = retries.popleft()[1]
            elif loading and (not isinstance(source, Scripted) or source):
                step = source.take()
                stats.offered += 1
            if step is not None:
                task = asyncio.create_task(attempt(session, step))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            next_at = max(next_at + interval, now - 1.0)  # no catch-up burst after a stall
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    return stats


# --- the status topic -----------------------------------------------------------------------------


class StatusFollower:
    """Reads payments.status.v1 from the beginning, in the background, for the whole scenario."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[dict[str, Any]] = []
        self._consumer = make_consumer(settings, group_id=None, client_suffix="reliability-status")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusFollower:
        await self._consumer.start()
        topic = self.settings.topics.status
        partitions = [TopicPartition(topic, p) for p in range(self.settings.topics.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                self.events.extend(orjson.loads(record.value) for record in records)

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def wait_reflected(self, steps: Iterable[Step], *, timeout_s: float = 120.0,
                             alive: Callable[[], bool] = lambda: True) -> list[Step]:
        """Until every step is reflected (or the timeout / a dead process); returns those that are not."""
        wanted = list(steps)
        deadline = time.monotonic() + timeout_s
        missing = unreflected(wanted, self.events)
        while missing and time.monotonic() < deadline and alive():
            await asyncio.sleep(1.0)
            missing = unreflected(wanted, self.events)
        return missing


def unreflected(steps: Iterable[Step], events: list[dict[str, Any]]) -> list[Step]:
    """The steps not reflected by ``events``.

    A payment's steps go to different inbox partitions (the inbox key is the delivery id), so they may
    be normalized in any order; the join then ignores an earlier step that arrives after a later one (a
    stale observation: no event, by design). So a step is reflected when it, or a LATER acknowledged step
    of the same payment, is the evidence of a status event; the latest acknowledged step of every payment
    must itself be. Thin pushes are reflected by a status event of their object with the expected status.
    """
    wanted = list(steps)
    evidence: set[tuple[str, str]] = set()
    statuses: set[tuple[str, str | None]] = set()
    for event in events:
        data = event["data"]
        statuses.add((event["subject"], data["status"]))
        evidence.update((event["subject"], item) for item in data.get("evidence", ()))
    latest: dict[str, Step] = {}
    for step in wanted:
        if step.reflected_as is None and step.index >= latest.get(step.payment_key, step).index:
            latest[step.payment_key] = step
    missing = []
    for step in wanted:
        if step.reflected_as is not None:
            reflected = (step.payment_key, step.reflected_as) in statuses
        else:
            last = latest[step.payment_key]
            reflected = (step.payment_key, last.delivery_id) in evidence
        if not reflected:
            missing.append(step)
    return missing


@dataclass
class DuplicateReport:
    problems: list[str]  # the same (payment, sequence) with different content, gaps, repeated transitions
    re_emitted: int  # identical events (same id and content) written more than once

    def __bool__(self) -> bool:
        return bool(self.problems)


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["status"], data["amount"], data["captured_amount"], data["refunded_amount"])


def duplicates(events: list[dict[str, Any]]) -> DuplicateReport:
    problems: list[str] = []
    by_slot: dict[tuple[str, int], set[bytes]] = {}
    ids: Counter[str] = Counter()
    for event in events:
        content = {k: v for k, v in event.items() if k != "data"} | {
            "data": {k: v for k, v in event["data"].items() if k != "emitted_at"}}
        content.pop("time", None)
        by_slot.setdefault((event["subject"], event["data"]["sequence"]), set()).add(
            orjson.dumps(content, option=orjson.OPT_SORT_KEYS))
        ids[event["id"]] += 1
    problems += [f"{key} #{seq}: {len(contents)} different events" for (key, seq), contents in by_slot.items()
                 if len(contents) > 1]
    per_payment: dict[str, dict[int, dict[str, Any]]] = {}
    for event in events:
        per_payment.setdefault(event["subject"], {})[event["data"]["sequence"]] = event
    for key, by_sequence in per_payment.items():
        sequences = sorted(by_sequence)
        if sequences != list(range(1, len(sequences) + 1)):
            problems.append(f"{key}: sequences {sequences}")
        ordered = [summary(by_sequence[s]) for s in sequences]
        problems += [f"{key}: transition to {b} emitted twice" for a, b in itertools.pairwise(ordered) if a == b]
    return DuplicateReport(problems, sum(count - 1 for count in ids.values()))


def closing_check(stats: LoadStats, events: list[dict[str, Any]], missing: list[Step], *, faults: str,
                  injected: int = 1) -> None:
    """THE check every scenario ends with; also records the scenario's line for the suite summary."""
    report = duplicates(events)
    TALLY["records lost"] += len(missing)
    TALLY["webhooks acknowledged"] += len(stats.acked)
    LOAD_REPORTS.append(
        f"{stats.describe()}; faults: {faults}; lost: {len(missing)}; status events: {len(events)} "
        f"({report.re_emitted} re-emitted with the same id); duplicate transitions: {len(report.problems)}"
    )
    assert not stats.refused, f"deliveries refused during a fault scenario: {stats.refused[:5]}"
    assert not stats.unacknowledged, f"{len(stats.unacknowledged)} deliveries never acknowledged"
    assert not missing, f"{len(missing)} acknowledged webhooks not reflected, e.g. {missing[:3]}"
    assert not report, report.problems[:10]
    TALLY["faults survived"] += injected



# --- a pipeline under test ------------------------------------------------------------------------


async def start_ingest_for(stack: contextlib.AsyncExitStack, settings: Settings, pki: Any, folder: Path,
                           **http: Any) -> RunningIngest:
    """The real ingest server (http_harness) on ``settings``' broker and topics, ready to publish."""
    from http_harness import CERT_NAME, OBSERVATION_TOKEN, serve_ingest

    from ingest.providers.amazon_pay.certs import CertificateStore

    token_file = folder / "observation-token"
    token_file.write_text(OBSERVATION_TOKEN)
    running = await serve_ingest(stack, settings, token_file,
                                 certificates=CertificateStore(preseeded={CERT_NAME: pki.signing_pem}), **http)
    await running.wait_ready(timeout_s=90)
    return running


def worker_alive(*processes: Any) -> Callable[[], bool]:
    """For waits: false as soon as one of the processes (processor Worker / FetcherProcess) exited."""
    return lambda: all(p.process.poll() is None for p in processes)


# --- the fetcher's side: the provider double and an Amazon Pay account that reaches it ----------------

AMAZON_KEY_ID = "AGPHRELIABILITY0000KEYID"  # the public key id the double knows the test key by
FETCH_RATE_PER_S = 50.0
FETCH_BURST = 10
IN_FLIGHT = 4


def fetch_settings(settings: Settings, double_url: str, public_key_id: str, private_pem: Path) -> Settings:
    """``settings`` with the Amazon Pay account of the IPN load reaching the provider double, and fetcher
    options scaled to a short test (fast backoff and circuit reset; enough attempts to outlast a burst)."""
    from paystream.config import AccountConfig

    account = AccountConfig(
        api_base_url=f"{double_url}/amazon_pay", public_key_id=public_key_id, private_key=f"file:{private_pem}",
        api_region="eu", api_sandbox=True, fetch_rate_per_s=FETCH_RATE_PER_S, fetch_burst=FETCH_BURST,
    )
    fetch = settings.fetch.model_copy(update={
        "group_id": f"rel-fetch-{uuid.uuid4().hex[:8]}", "stripe_sweeps": (), "commit_interval_s": 0.2,
        "backoff_base_s": 0.2, "backoff_cap_s": 2.0, "max_attempts": 40, "circuit_reset_s": 2.0,
        "in_flight_per_provider": IN_FLIGHT, "shutdown_grace_s": 5.0,
    })
    return settings.model_copy(update={"accounts": {"amazon_pay": {SNS_ACCOUNT: account}}, "fetch": fetch})


# --- a private S3 (moto) ------------------------------------------------------------------------------


@dataclass
class PrivateS3:
    """A moto S3 server on its own port and folder, started with deploy/local/stack.py's ``start_moto``.

    ``freeze`` (SIGSTOP) makes S3 unavailable while keeping its memory (moto forgets everything when
    stopped): uploads time out, and may even land later — the nastier failure.
    """

    endpoint: str
    state: Path
    bucket: str = "paystream-reliability"
    service: Any = None

    async def start(self) -> None:
        self.service = await asyncio.to_thread(load_stack().start_moto, self.endpoint, self.state)
        await asyncio.to_thread(self.client().create_bucket, Bucket=self.bucket)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")  # moto takes any

    def _signal(self, signum: int) -> None:
        pid = self.service.pid() if self.service is not None else None
        assert pid is not None, "the private moto server is not running"
        os.kill(pid, signum)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.service is not None and self.service.pid() is not None:
            self.thaw()  # a stopped process cannot act on SIGTERM
            await asyncio.to_thread(self.service.stop)


async def warm_up(running: RunningIngest, source: StripeLifecycles | AmazonPayIpns, follower: StatusFollower,
                  alive: Callable[[], bool], *, timeout_s: float = 120.0) -> None:
    """One webhook through the whole pipeline before the load: faults are injected relative to a
    pipeline that is already flowing, however long the processes took to start on a busy machine."""
    step = source.take()
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            url = f"http://127.0.0.1:{running.port}{step.path}"
            async with session.post(url, data=step.body, headers=step.sign(step.body)) as reply:
                if reply.status == 200:
                    break
            assert time.monotonic() < deadline, "ingest never accepted the warm-up webhook"
            await asyncio.sleep(1.0)
    missing = await follower.wait_reflected([step], timeout_s=max(1.0, deadline - time.monotonic()), alive=alive)
    assert not missing, "the warm-up webhook never reached payments.status.v1"
