"""Helpers of the reliability suite: hostile-input bookkeeping, raw HTTP, fresh topics, the suite tally.

Fault-injection helpers (private broker, load, status checks) are in fault_harness.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from http_harness import CERT_NAME, SNS_HOST, HarnessPki, Reply, RunningIngest, SnsHost, read_inbox, read_reply
from prometheus_client import REGISTRY

from paystream.config import Settings
from paystream.kafka import ensure_topics

# What the suite did, printed at the end of the run (conftest.pytest_terminal_summary): the numbers the
# closing note of the issue asks for.
TALLY: Counter[str] = Counter()
LOAD_REPORTS: list[str] = []

# Every status a refused request may get from ingest (DESIGN §4.1, plus 405 for other methods, 408 for a
# body not received in time and 429 for Mollie hints over the rate). 503 is not in it: it means a
# delivery passed verification and only Kafka was missing.
REFUSALS = frozenset({400, 401, 404, 405, 408, 413, 429})


async def fresh_topic_settings(base: Settings, *, partitions: int) -> Settings:
    """``base`` with topic names no other test uses, already created on the broker."""
    tag = uuid.uuid4().hex[:10]
    topics = base.topics.model_copy(update={
        "inbox": f"r{tag}.payments.inbox.v1",
        "fetch_requests": f"r{tag}.payments.fetch.requests.v1",
        "fetch_results": f"r{tag}.payments.fetch.results.v1",
        "status": f"r{tag}.payments.status.v1",
        "state": f"r{tag}.payments.state.v1",
        "dlq": f"r{tag}.payments.dlq.v1",
        "fetch_cursors": f"r{tag}.payments.fetch.cursors.v1",
        "fetch_delayed": f"r{tag}.payments.fetch.delayed.v1",
        "partitions": partitions,
    })
    settings = base.model_copy(update={"topics": topics})
    await ensure_topics(settings)
    return settings


def rejections_sum() -> float:
    """``paystream_ingest_rejections_total`` over every label (a refusal adds at least one)."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == "paystream_ingest_rejections_total"
    )


@dataclass
class HostileTarget:
    """One ingest server shared by a hostile-input module, and the inbox keys it may legitimately hold."""

    running: RunningIngest
    sns: SnsHost  # the loopback stand-in for sns.us-east-1.amazonaws.com the server reaches
    accepted_keys: set[bytes] = field(default_factory=set)

    @property
    def port(self) -> int:
        return self.running.port

    async def refused(self, path: str, body: bytes, headers: Mapping[str, str], *,
                      statuses: frozenset[int] = REFUSALS) -> Reply:
        """POST through aiohttp; assert a refusal status, a JSON error body and the rejection metric."""
        before = rejections_sum()
        reply = await self.running.post(path, body, headers)
        assert_refused(reply, before, statuses)
        return reply

    async def refused_raw(self, request: bytes, *, statuses: frozenset[int] = REFUSALS) -> Reply:
        """Send exact request bytes on a fresh connection; same assertions as :meth:`refused`."""
        before = rejections_sum()
        reply = await raw_exchange(self.port, request)
        assert_refused(reply, before, statuses)
        return reply

    async def assert_inbox_holds_only_accepted(self) -> None:
        """The module's closing check: nothing refused was published (read on the real broker)."""
        keys = [key for key, _ in await read_inbox(self.running.settings)]
        assert set(keys) <= self.accepted_keys, f"refused input reached the inbox: {set(keys) - self.accepted_keys}"


def assert_refused(reply: Reply, rejections_before: float, statuses: frozenset[int]) -> None:
    TALLY["hostile inputs tried"] += 1
    assert reply.status in statuses, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    payload = reply.json()
    assert set(payload) == {"error", "detail"}, payload
    assert rejections_sum() >= rejections_before + 1, "refused without counting a rejection"


def http_request(path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes = b"", *,
                 method: bytes = b"POST", content_length: bool = True) -> bytes:
    """The bytes of one HTTP/1.1 request (``Connection: close``); header bytes are sent exactly as given."""
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def raw_exchange(port: int, request: bytes, timeout_s: float = 30.0) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(read_reply(reader), timeout=timeout_s)
    finally:
        writer.close()


# --- the SNS stand-in -------------------------------------------------------------------------------

REDIRECTING_CERT = "redirect-to-the-real-certificate.pem"
FOLLOWED = "followed=1"  # in the query of every redirect target: a request carrying it means one was followed


@asynccontextmanager
async def serve_sns_stand_in(pki: HarnessPki) -> AsyncIterator[SnsHost]:
    """Like ``http_harness.serve_sns_host`` (HTTPS, the test CA, every GET recorded) plus redirects.

    ``/{REDIRECTING_CERT}`` answers 302 to the REAL signing certificate, and a ConfirmSubscription URL
    with ``redirect=1`` answers 302 to another confirmation: a client that followed either would be
    seen asking for a URL with ``followed=1`` (and, for the certificate, would then verify the forgery).
    """
    host = SnsHost(port=0, ssl_context=pki.client_context())

    async def serve(request: web.Request) -> web.Response:
        host.requests.append(request.path_qs)
        if request.path == f"/{REDIRECTING_CERT}":
            raise web.HTTPFound(f"https://{SNS_HOST}/{CERT_NAME}?{FOLLOWED}")
        if request.path == f"/{CERT_NAME}":
            return web.Response(body=pki.signing_pem, content_type="application/x-pem-file")
        if request.query.get("Action") == "ConfirmSubscription":
            if request.query.get("redirect") == "1":
                raise web.HTTPFound(f"https://{SNS_HOST}/?Action=ConfirmSubscription&{FOLLOWED}")
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
