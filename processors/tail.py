"""``paystream tail``: follow ``payments.status.v1`` and print one readable line per status change.

What an operator or a newcomer watches::

    12:04:31.207  stripe:main:payment_intent:pi_3Q…   authorized → captured      10.00 EUR  cap 10.00  ref 0.00  push
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer

# ISO 4217 currencies without minor units; everything else shows two decimals.
_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-beginning", action="store_true",
                        help="print the whole retained stream first (default: only new events)")
    parser.add_argument("--payment", metavar="KEY", help="only this payment key (or a prefix of it)")
    parser.add_argument("--json", action="store_true", help="print the raw CloudEvents, one per line")
    parser.add_argument("--max-events", type=int, default=0, help="stop after this many events (0 = follow)")


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "-"
    if currency in _ZERO_DECIMAL:
        return f"{amount}"
    return f"{amount / 100:.2f}"


def format_event(event: Mapping[str, Any]) -> str:
    data = event.get("data", {})
    time = str(data.get("emitted_at") or event.get("time") or "")[11:23]
    previous = data.get("previous_status") or "∅"
    currency = data.get("currency") or ""
    return (
        f"{time:12}  {data.get('payment_key', event.get('subject', '?')):48}  "
        f"#{data.get('sequence', '?'):<3} {previous:>18} → {data.get('status', '?'):18}  "
        f"{money(data.get('amount'), currency):>10} {currency:3}  "
        f"cap {money(data.get('captured_amount'), currency):>9}  ref {money(data.get('refunded_amount'), currency):>9}"
        f"  {data.get('source', '?')}"
    )


async def follow(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    consumer = make_consumer(settings, group_id=None, client_suffix="tail")
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    printed = 0
    try:
        partitions = await _wait_for_partitions(settings, settings.topics.status, stop)
        if not partitions:
            return 0
        consumer.assign(partitions)
        if args.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        print(f"following {settings.topics.status} on {settings.kafka.bootstrap} (Ctrl-C to stop)", file=out,
              flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if args.payment and not str(event.get("subject", "")).startswith(args.payment):
                        continue
                    print(record.value.decode() if args.json else format_event(event), file=out, flush=True)
                    printed += 1
                    if args.max_events and printed >= args.max_events:
                        return 0
    finally:
        await consumer.stop()
    return 0


async def _wait_for_partitions(settings: Settings, topic: str, stop: asyncio.Event) -> list[TopicPartition]:
    """The topic's partitions, waiting for the topic to exist (a fresh stack may not have it yet)."""
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id=f"{settings.kafka.client_id}-tail")
    await admin.start()
    try:
        while not stop.is_set():
            described = await admin.describe_topics([topic])
            partitions = [p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]]
            if partitions:
                return [TopicPartition(topic, p) for p in sorted(partitions)]
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return []


def main(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(follow(settings, args))
