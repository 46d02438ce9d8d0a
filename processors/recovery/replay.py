"""``paystream replay``: put archived deliveries back into the inbox, marked as replays.

A replayed record is the original inbox envelope with ``replay`` set (when, and where it came from),
republished to ``payments.inbox.v1`` under the SAME Kafka key (so it lands in the same partition as the
original) and with the same record headers. The processors do NOT dedupe replays by delivery id — a replay
must re-apply after the processor state was lost — and turn them into ``source=replay`` observations; an
already-applied one is a no-op all the same, because the join collapses identical content: replaying a
range twice emits nothing the second time. The original verification result is kept; ``--reverify`` checks
the signature again against the current secrets first (see :mod:`processors.recovery.replay_reverify`).

Records that are themselves replays are skipped unless ``--include-replays``: the original is in the
same archive, so replaying the copy again would only add noise.

Time ranges are half-open ``[since, until)`` on the Kafka record timestamp (what the archive's hour
folders use). A dry run also says whether the range reaches past retention: records older than the
bucket's lifecycle rule (or the inbox topic's retention, replaying from Kafka) are gone
(:mod:`processors.recovery.archive_retention`). Exit codes: 0 done, 1 a dependency failed (S3, Kafka), 2 bad
arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO

import orjson
from aiokafka.errors import KafkaError

from paystream.config import PROVIDERS, Settings
from paystream.errors import ConfigurationError, InfrastructureError, NormalizationError
from paystream.kafka import make_producer
from paystream.metrics import REPLAYED_RECORDS
from processors.recovery.archive_format import ArchivedRecord
from processors.recovery.archive_retention import RetentionNote, archive_retention_note, retention_note
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.replay_progress import Progress
from processors.recovery.replay_reverify import Reverifier, ReverifyFailed
from processors.recovery.replay_source import ArchiveSource, KafkaSource, RecordSource
from schemas.envelopes import InboxEnvelope, ReplayMark, to_rfc3339
from schemas.observation import payment_key

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_IN_FLIGHT = 5000  # sends awaited in batches: fast, and memory stays bounded


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """RFC 3339 / ISO 8601 (naive = UTC), a date, ``now``, or an age such as ``90m``, ``6h``, ``2d``."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time "
            "(use RFC 3339 like 2025-01-31T12:00:00Z, a date, 'now' or an age like 6h)"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be more than 0 records per second")
    return value


def add_time_range_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_moment, help="start of the time range (inclusive)")
    parser.add_argument("--until", type=parse_moment, help="end of the time range (exclusive)")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=("s3", "kafka"), default="s3",
                        help="read the S3 archive (default) or the inbox topic itself, from --since on")
    add_time_range_arguments(parser)
    parser.add_argument("--provider", action="append", choices=PROVIDERS, default=[],
                        help="only this provider (repeatable)")
    parser.add_argument("--account", action="append", default=[], help="only this account (repeatable)")
    parser.add_argument("--payment-key", action="append", default=[],
                        help="only this payment, provider:account:object_type:object_id (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="publish nothing; count what would be republished by provider and kind")
    parser.add_argument("--rate", type=_rate, help="republish at most this many records per second")
    parser.add_argument("--reverify", action="store_true",
                        help="check each signature again against current secrets (no timestamp tolerance)")
    parser.add_argument("--include-replays", action="store_true",
                        help="also replay records that were themselves replays")
    parser.add_argument("--bucket", help="archive bucket (default: the configured PAYSTREAM_S3__BUCKET)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    source: Literal["s3", "kafka"] = "s3"
    since: datetime | None = None
    until: datetime | None = None
    providers: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    payment_keys: frozenset[str] = frozenset()
    dry_run: bool = False
    rate: float | None = None
    reverify: bool = False
    include_replays: bool = False
    bucket: str | None = None
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReplayOptions:
        options = cls(
            source=args.source, since=args.since, until=args.until, providers=frozenset(args.provider),
            accounts=frozenset(args.account), payment_keys=frozenset(args.payment_key), dry_run=args.dry_run,
            rate=args.rate, reverify=args.reverify, include_replays=args.include_replays, bucket=args.bucket,
            progress=not args.no_progress,
        )
        options.validate()
        return options

    def validate(self) -> None:
        check_time_range(self.since, self.until)
        unknown = sorted(self.providers - set(PROVIDERS))
        if unknown:
            raise ConfigurationError(f"unknown provider {', '.join(unknown)} (known: {', '.join(PROVIDERS)})")
        if self.rate is not None and self.rate <= 0:
            raise ConfigurationError("--rate must be more than 0 records per second")
        for key in self.payment_keys:
            if key.count(":") < 3:
                raise ConfigurationError(
                    f"payment key {key!r} is not provider:account:object_type:object_id"
                )


def check_time_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ConfigurationError(
            f"the time range is empty or reversed: --since {to_rfc3339(since)} is not before "
            f"--until {to_rfc3339(until)}"
        )


@dataclass(slots=True)
class ReplaySummary:
    source: str
    dry_run: bool
    read: int = 0
    outside_range: int = 0
    filtered: int = 0
    already_replays: int = 0
    malformed: int = 0
    reverify_failed: Counter[str] = field(default_factory=Counter)
    by_provider_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    retention: RetentionNote | None = None  # dry runs: what the range lost to retention

    @property
    def selected(self) -> int:
        """Republished (or, in a dry run, that would have been)."""
        return sum(self.by_provider_kind.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dry_run": self.dry_run, "read": self.read, "selected": self.selected,
            "republished": 0 if self.dry_run else self.selected, "outside_range": self.outside_range,
            "filtered": self.filtered, "already_replays": self.already_replays, "malformed": self.malformed,
            "reverify_failed": dict(self.reverify_failed),
            "by_provider_kind": [
                {"provider": p, "kind": k, "records": n}
                for (p, k), n in sorted(self.by_provider_kind.items())
            ],
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.read / self.elapsed_s, 1) if self.elapsed_s else None,
            "retention": self.retention.to_dict() if self.retention else None,
        }

    def render(self) -> str:
        verb = "would republish" if self.dry_run else "republished"
        lines = [
            f"replay from {self.source}{' (dry run)' if self.dry_run else ''}",
            f"  read {self.read} records in {self.elapsed_s:.1f} s"
            f" ({self.read / self.elapsed_s if self.elapsed_s else 0:.0f} records/s)",
            f"  {verb} {self.selected}",
            f"  skipped: {self.outside_range} outside the time range, {self.filtered} by filter, "
            f"{self.already_replays} already replays, {self.malformed} malformed",
        ]
        if self.retention is not None:
            lines.append(f"  {self.retention.render()}")
        if self.reverify_failed:
            failures = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reverify_failed.items()))
            lines.append(f"  failed re-verification (not republished): {failures}")
        if self.by_provider_kind:
            lines.append("  by provider and kind:")
            lines += [f"    {p:<12} {k:<6} {n:>9}" for (p, k), n in sorted(self.by_provider_kind.items())]
        return "\n".join(lines)


class _Pacer:
    """At most ``rate`` sends per second, smoothly (no bursts after a pause)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now) + self.interval


def _select(record: ArchivedRecord, options: ReplayOptions, summary: ReplaySummary) -> InboxEnvelope | None:
    """The envelope when the record passes every filter; otherwise count why not."""
    stamp = record.timestamp
    if (options.since and stamp < options.since) or (options.until and stamp >= options.until):
        summary.outside_range += 1
        return None
    try:
        if record.value is None:
            raise NormalizationError("inbox record without a value")
        envelope = InboxEnvelope.from_bytes(record.value)
    except NormalizationError:
        summary.malformed += 1
        return None
    if envelope.replay is not None and not options.include_replays:
        summary.already_replays += 1
        return None
    if (options.providers and envelope.provider not in options.providers) or (
        options.accounts and envelope.account not in options.accounts
    ):
        summary.filtered += 1
        return None
    if options.payment_keys:
        ids = envelope.object_ids
        object_type, object_id = ids.get("object_type", ""), ids.get("object_id", "")
        key = payment_key(envelope.provider, envelope.account, object_type, object_id)
        if key not in options.payment_keys:
            summary.filtered += 1
            return None
    return envelope


def open_source(
    settings: Settings, topic: str, options: ReplayOptions, store: ArchiveStore | None = None
) -> RecordSource:
    if options.source == "kafka":
        return KafkaSource(settings, topic, options.since, options.until)
    store = store or ArchiveStore(settings.s3, bucket=options.bucket)
    return ArchiveSource(store, topic, options.since, options.until)


async def replay(
    settings: Settings,
    options: ReplayOptions,
    *,
    stream: TextIO | None = None,
    store: ArchiveStore | None = None,
) -> ReplaySummary:
    """Replay the inbox records ``options`` select; returns what was done. ``store`` overrides the S3 client."""
    options.validate()
    topic = settings.topics.inbox
    source = open_source(settings, topic, options, store)
    summary = ReplaySummary(source.description, options.dry_run)
    reverifier = Reverifier(settings) if options.reverify else None
    # Bulk work: a longer linger fills batches (throughput over latency); acks=all and idempotence stay.
    producer = None if options.dry_run else make_producer(settings, client_suffix="replay", linger_ms=50)
    started = time.monotonic()
    progress: Progress | None = None
    try:
        total = await source.plan()
        if options.dry_run:
            summary.retention = await _retention(settings, source, options)
        progress = Progress(stream or sys.stderr, total=total, unit=source.unit, enabled=options.progress)
        if producer is not None:
            await producer.start()
        pacer = _Pacer(options.rate)
        in_flight: list[tuple[asyncio.Future[Any], str]] = []
        async for chunk in source.chunks():
            replayed_at = to_rfc3339(datetime.now(UTC))
            for record, origin in chunk.records:
                summary.read += 1
                envelope = _select(record, options, summary)
                if envelope is None:
                    continue
                verification, reverified = envelope.verification, False
                if reverifier is not None:
                    try:
                        verification, reverified = await reverifier.reverify(envelope), True
                    except ReverifyFailed as exc:
                        summary.reverify_failed[exc.reason] += 1
                        continue
                summary.by_provider_kind[envelope.provider, envelope.kind] += 1
                if producer is None:
                    continue
                await pacer.wait()
                mark = ReplayMark(replayed_at=replayed_at, origin=origin, reverified=reverified)
                value = marked(record.value or b"", mark, verification)
                sent = await producer.send(topic, value, key=record.key, headers=list(record.headers) or None)
                in_flight.append((sent, envelope.provider))
                if len(in_flight) >= _IN_FLIGHT:
                    await _settle(in_flight)
            progress.advance(chunk.units, len(chunk.records))
        await _settle(in_flight)
    finally:
        summary.elapsed_s = time.monotonic() - started
        if progress is not None:
            progress.close()
        if producer is not None:
            await producer.stop()
        await source.close()
    return summary


async def _retention(settings: Settings, source: RecordSource, options: ReplayOptions) -> RetentionNote:
    now = datetime.now(UTC)
    if isinstance(source, ArchiveSource):
        return await asyncio.to_thread(
            archive_retention_note, source.store, options.since, options.until, settings.s3.retention_days, now
        )
    retention_ms = settings.topics.inbox_retention_ms
    days = None if retention_ms < 0 else retention_ms / 86_400_000
    return retention_note(options.since, options.until, days, f"retention.ms of {settings.topics.inbox} (configured)",
                          now)


def marked(value: bytes, mark: ReplayMark, verification: Mapping[str, Any]) -> bytes:
    """The original envelope JSON with ``replay`` (and the verification) set; every other field as it was.

    Patching the JSON keeps fields this version does not know, and is several times faster than
    ``InboxEnvelope.to_bytes`` (``dataclasses.asdict`` deep-copies) — it dominated replay time.
    """
    record = orjson.loads(value)
    record["replay"] = {"replayed_at": mark.replayed_at, "origin": mark.origin, "reverified": mark.reverified}
    record["verification"] = dict(verification)
    return orjson.dumps(record)


async def _settle(in_flight: list[tuple[asyncio.Future[Any], str]]) -> None:
    """Wait for acks=all on every send so far (raises if any failed: the replay stops, loudly)."""
    await asyncio.gather(*(sent for sent, _ in in_flight))
    for _, provider in in_flight:
        REPLAYED_RECORDS.labels(provider).inc()
    in_flight.clear()


def fail(command: str, message: str, code: int) -> int:
    print(f"paystream {command}: error: {message}", file=sys.stderr)
    return code


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream replay`` subcommand (arguments from :func:`add_replay_arguments`)."""
    try:
        options = ReplayOptions.from_args(args)
        summary = asyncio.run(replay(settings, options))
    except ConfigurationError as exc:
        return fail("replay", str(exc), 2)
    except (InfrastructureError, KafkaError, OSError) as exc:
        return fail("replay", f"{type(exc).__name__}: {exc}", 1)
    print(orjson.dumps(summary.to_dict()).decode() if args.json else summary.render())
    return 0
