"""The whole pipeline on the real broker, for the processor end-to-end tests: ingest (uvicorn, in-process),
the fetcher (``run_fetcher``, in-process) against the provider double, and the processor worker
(a subprocess, processor_harness).

Nothing here builds deliveries: the payloads come from ``make run``'s demo traffic
(deploy/local/demo_traffic.py), signed with the secrets of the ingest harness's accounts
(tests/ingest/http_harness.py) through a :class:`demo_material.DemoMaterial` holding those secrets;
SNS envelopes are signed by the harness's ``Deliveries`` with its test CA. The ingest server, the
Amazon Pay fetch account and the status follower are the reliability suite's (tests/reliability).
Every topic is the pipeline's own (processor_harness.fresh_settings: the state topic and the fetcher's
delayed-request store included).
"""

from __future__ import annotations

import asyncio
import sys
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
for _folder in (TESTS, TESTS / "ingest", TESTS / "reliability", TESTS.parent / "deploy" / "local"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))  # appended: the repo's real packages stay first

import demo_material  # noqa: E402 - needs the sys.path entries above
import demo_traffic as demo_traffic  # noqa: E402 - re-exported: the demo's payload builders
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from fault_harness import AMAZON_KEY_ID, StatusFollower, fetch_settings, start_ingest_for  # noqa: E402
from http_harness import (  # noqa: E402
    ACCOUNT,
    ADYEN_HEX_KEY,
    OBSERVATION_TOKEN,
    SNS_ACCOUNT,
    STANDARD_SECRET,
    STRIPE_SECRET,
    Deliveries,
    RunningIngest,
    make_test_pki,
)
from jsonschema import Draft202012Validator, FormatChecker  # noqa: E402
from processor_harness import (  # noqa: E402
    Worker,
    drop_topics,
    fresh_settings,
    processor_settings,
    read_all,
    start_worker,
    wait_drained,
)
from provider_double.server import ProviderDouble  # noqa: E402

from ingest.fetch.service import run_fetcher  # noqa: E402
from paystream.config import AccountConfig, ProviderName, Settings  # noqa: E402
from processors.settings import ProcessorSettings  # noqa: E402
from schemas.event import load_schema  # noqa: E402

# The demo's Standard Webhooks sender and ours speak the same event types.
STANDARD_STATUS_MAP: dict[str, str] = tomllib.loads(demo_material.CONFIG.read_text())[
    "accounts"]["standard"]["demo"]["status_map"]
# Stale-payment polls start after an hour: the status events under test are those the pushes, hints,
# thin-push fetches and sync observations cause, not a timer's.
NO_STALE_POLLS = [3600]


def harness_material(folder: Path) -> demo_material.DemoMaterial:
    """The demo's builders signing with the ingest harness's secrets (SNS goes through ``Deliveries``)."""
    env = {
        "PAYSTREAM_DEMO_STRIPE_WHSEC": STRIPE_SECRET,
        "PAYSTREAM_DEMO_ADYEN_HMAC_KEY": ADYEN_HEX_KEY,
        "PAYSTREAM_DEMO_STANDARD_SECRET": STANDARD_SECRET,
        "PAYSTREAM_DEMO_OBSERVATION_TOKEN": OBSERVATION_TOKEN,
    }
    unused = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return demo_material.DemoMaterial(env, folder / "unused.pem", unused)


def account_of(provider: str) -> str:
    """The harness's account name per provider (the demo's builders address account ``demo``)."""
    return SNS_ACCOUNT if provider == "amazon_pay" else ACCOUNT


@dataclass
class Pipeline:
    settings: Settings  # topics and the accounts the processor and the fetcher use
    conf: ProcessorSettings
    ingest: RunningIngest
    double: ProviderDouble
    worker: Worker
    follower: StatusFollower
    deliveries: Deliveries
    material: demo_material.DemoMaterial

    async def post(self, delivery: demo_traffic.Delivery) -> None:
        """POST over HTTP as the provider would, to the harness account of the delivery's provider."""
        path = delivery.path
        if path.startswith("/webhooks/"):
            path = f"/webhooks/{delivery.provider}/{account_of(delivery.provider)}"
        await self.post_raw(path, delivery.body, delivery.headers)

    async def post_raw(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        reply = await self.ingest.post(path, body, headers)
        assert 200 <= reply.status < 300, (path, reply.status, reply.body[:300])

    def events_for(self, payment_key: str) -> list[dict[str, Any]]:
        return sorted((e for e in self.follower.events if e["subject"] == payment_key),
                      key=lambda e: e["data"]["sequence"])

    async def wait_events(self, payment_key: str, count: int, *, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Until ``payment_key`` has at least ``count`` status events (or the timeout / a dead worker)."""
        deadline = time.monotonic() + timeout_s
        while len(self.events_for(payment_key)) < count:
            if time.monotonic() > deadline or self.worker.process.poll() is not None:
                raise AssertionError(
                    f"{payment_key}: {len(self.events_for(payment_key))} status events, waited for {count}\n"
                    + self.worker.log_tail())
            await asyncio.sleep(0.2)
        return self.events_for(payment_key)

    async def settle(self) -> None:
        """Until the worker has committed everything on its input topics: a late or extra event shows now."""
        assert self.worker.process.poll() is None, f"the processor exited\n{self.worker.log_tail()}"
        topics = self.settings.topics
        lag = await wait_drained(self.settings, self.conf,
                                 [topics.inbox, topics.fetch_results, self.conf.inputs_topic()])
        assert not lag, lag + "\n" + self.worker.log_tail()
        written = len(await read_all(self.settings, topics.status))
        deadline = time.monotonic() + 30
        while len(self.follower.events) < written and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(self.follower.events) == written, (len(self.follower.events), written)


def _amazon_key(folder: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "amazon-pay-private.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public


def _accounts(settings: Settings, double_url: str, folder: Path) -> dict[ProviderName, dict[str, AccountConfig]]:
    """The fetch accounts (Amazon Pay as the reliability suite has it; Mollie) and the Standard map."""
    mollie_key = folder / "mollie-api-key"
    mollie_key.write_text("test_e2e_mollie_key")
    mollie = AccountConfig(api_base_url=f"{double_url}/mollie", api_key=f"file:{mollie_key}",
                           fetch_rate_per_s=50.0, fetch_burst=10)
    return {**settings.accounts, "mollie": {ACCOUNT: mollie},
            "standard": {ACCOUNT: AccountConfig(status_map=STANDARD_STATUS_MAP)}}


@asynccontextmanager
async def running_pipeline(base: Settings, folder: Path, *, partitions: int = 3) -> AsyncIterator[Pipeline]:
    """Fresh topics; ingest, provider double, fetcher and one processor worker, all running and ready."""
    pki = make_test_pki()
    topics = await fresh_settings(base, partitions=partitions, tag="e")
    async with AsyncExitStack() as stack:
        double = ProviderDouble()
        private_pem, public_pem = _amazon_key(folder)
        double.add_amazon_key(AMAZON_KEY_ID, public_pem)
        await double.start()
        stack.push_async_callback(double.stop)
        settings = fetch_settings(topics, double.url, AMAZON_KEY_ID, private_pem)
        settings = settings.model_copy(update={"accounts": _accounts(settings, double.url, folder)})

        conf = processor_settings(poll_schedule_s=NO_STALE_POLLS)
        stack.push_async_callback(drop_topics, settings, conf.app_id)  # the last thing done
        worker = start_worker(settings, conf, folder)
        stack.callback(_stopped, worker)
        stop_fetching = asyncio.Event()
        fetcher = asyncio.create_task(run_fetcher(settings, stop_fetching))
        stack.push_async_callback(_stop_fetcher, fetcher, stop_fetching)
        ingest = await start_ingest_for(stack, settings, pki, folder)
        follower = await stack.enter_async_context(StatusFollower(settings))
        yield Pipeline(settings, conf, ingest, double, worker, follower, Deliveries(pki), harness_material(folder))


def _stopped(worker: Worker) -> None:
    code = worker.stop()
    assert code == 0, f"processor worker exited with {code}\n{worker.log_tail()}"


async def _stop_fetcher(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 60)


async def tell_stories(pipeline: Pipeline, stories: dict[str, Any]) -> dict[str, Any]:
    """Run every story (``story(pipeline, run id) -> {payment key: expected events}``) at once, then settle the
    pipeline (a late or extra event of any story shows then): each story's expectations, or how it failed."""
    run = uuid.uuid4().hex[:8].upper()
    names = list(stories)
    results = await asyncio.gather(*(stories[name](pipeline, f"{run}{n}") for n, name in enumerate(names)),
                                   return_exceptions=True)
    await pipeline.settle()
    return dict(zip(names, results, strict=True))


EVENT_SCHEMA = Draft202012Validator(load_schema("payment-status-event"), format_checker=FormatChecker())
"""The published event schema with its formats checked: every event an end-to-end test looks at passes it."""


def told_events(pipeline: Pipeline, told: dict[str, Any], name: str,
                seen: Callable[[dict[str, Any]], Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The status events of each payment of one told story (:func:`tell_stories`), once checked against what the
    story expected: ``seen`` of each event in order, sequences numbered from 1, every event valid by the schema."""
    expected = told[name]
    if isinstance(expected, BaseException):
        raise expected
    checked = []
    for key, wanted in expected.items():
        events = pipeline.events_for(key)
        assert [seen(event) for event in events] == wanted, (key, [event["data"] for event in events])
        assert [event["data"]["sequence"] for event in events] == list(range(1, len(wanted) + 1))
        for event in events:
            EVENT_SCHEMA.validate(event)
        checked.append((key, events))
    return checked
