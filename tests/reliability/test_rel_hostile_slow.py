"""Slow and greedy clients: a trickled body gets 408; a trickled or endless request head must not hold a
connection (or memory) forever.

uvicorn with its httptools parser bounds neither how long the request line and headers may take nor how
large they grow (``timeout_keep_alive`` runs only between requests; ``h11_max_incomplete_event_size`` is
h11-only). ``ingest.http_protocol.GuardedHttpToolsProtocol`` adds both (``HttpSettings.header_timeout_s``,
``max_head_bytes``); these tests hold it to that. The server under test has short timeouts
(``HTTP_OVERRIDES``) and the tests allow several times as long.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from http_harness import ACCOUNT, SNS_ACCOUNT, read_reply, request_head
from reliability_harness import HostileTarget, rejections_sum

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

HTTP_OVERRIDES = {"body_timeout_s": 1.0, "keepalive_timeout_s": 1.0, "header_timeout_s": 1.0}
# Far longer than any timeout of the server under test: reaching it means "no timeout at all".
GIVE_UP_S = 6.0
STRIPE = f"/webhooks/stripe/{ACCOUNT}"
SNS = f"/webhooks/amazon_pay/{SNS_ACCOUNT}"
OBSERVATIONS = "/v1/observations"
JSON = {"Content-Type": "application/json"}


async def _trickled_body_reply(target: HostileTarget, path: str, headers: dict[str, str]) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)

    async def trickle() -> None:
        for _ in range(10_000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    before = rejections_sum()
    writer.write(request_head(path, {**headers, "Content-Length": "4096"}))
    trickler = asyncio.create_task(trickle())
    try:
        reply = await asyncio.wait_for(read_reply(reader), timeout=30)
    finally:
        trickler.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await trickler
        writer.close()
    assert rejections_sum() >= before + 1
    assert reply.headers.get("connection") == "close"
    return reply.status, reply.json()["error"]


async def test_trickled_observation_body_is_408(hostile_target: HostileTarget) -> None:
    assert await _trickled_body_reply(hostile_target, OBSERVATIONS, hostile_target.running.bearer()) == (
        408, "request_timeout")


async def test_trickled_sns_body_is_408(hostile_target: HostileTarget) -> None:
    assert await _trickled_body_reply(hostile_target, SNS, {"Content-Type": "text/plain"}) == (408, "request_timeout")


async def test_declared_body_that_never_comes_is_408(hostile_target: HostileTarget) -> None:
    before = rejections_sum()
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
    try:
        writer.write(request_head(STRIPE, {**JSON, "Content-Length": "100"}))
        reply = await asyncio.wait_for(read_reply(reader), timeout=30)
    finally:
        writer.close()

    assert (reply.status, reply.json()["error"]) == (408, "request_timeout")
    assert rejections_sum() >= before + 1


async def test_many_trickling_clients_do_not_starve_a_prompt_one(hostile_target: HostileTarget) -> None:
    """200 connections dribbling headers; a well-behaved request on a new connection is still served."""
    writers = []
    try:
        for _ in range(200):
            _, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
            writer.write(b"POST " + STRIPE.encode() + b" HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            writers.append(writer)
        for writer in writers:
            writer.write(b"a")
        reply = await hostile_target.running.get("/healthz")
        assert reply.status == 200
        reply = await hostile_target.refused(STRIPE, b"{}", JSON)
        assert reply.status == 401
    finally:
        for writer in writers:
            writer.close()


async def _closed_or_answered_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(65536), timeout=seconds)  # b"" (closed) or a reply
    except TimeoutError:
        return False
    return True


async def test_connection_that_never_sends_a_byte_is_closed(hostile_target: HostileTarget) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
    try:
        assert await _closed_or_answered_within(reader, GIVE_UP_S)
    finally:
        writer.close()


async def test_trickled_request_headers_are_cut_off(hostile_target: HostileTarget) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
    writer.write(b"POST " + STRIPE.encode() + b" HTTP/1.1\r\nHost: a\r\n")

    async def trickle() -> None:
        for index in range(10_000):
            writer.write(b"X-%d: b\r\n" % index)
            await writer.drain()
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    try:
        assert await _closed_or_answered_within(reader, GIVE_UP_S)
    finally:
        trickler.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await trickler
        writer.close()


async def test_endless_header_is_refused_before_16_mib_arrive(hostile_target: HostileTarget) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile_target.port)
    writer.write(b"POST " + STRIPE.encode() + b" HTTP/1.1\r\nHost: a\r\nX-Big: ")
    sent, limit = 0, 16 * 1024 * 1024
    answered = asyncio.create_task(reader.read(65536))
    try:
        with contextlib.suppress(ConnectionError):
            while sent < limit and not answered.done():
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
                await asyncio.sleep(0)
        assert sent < limit, f"the server took {sent} bytes of one header without answering"
    finally:
        answered.cancel()
        writer.close()


async def test_nothing_refused_reached_the_inbox(hostile_target: HostileTarget) -> None:
    await hostile_target.assert_inbox_holds_only_accepted()
    assert hostile_target.accepted_keys == set()
