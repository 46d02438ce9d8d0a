"""``paystream rebuild``: re-derive every payment's state from the S3 archive, and diff it with the live one.

The rebuild runs the same pure code the processors run — :class:`processors.normalize.Normalizer` for
inbox envelopes and fetch results, then :func:`schemas.join.apply` per payment key — but in this
process, over the archive, writing nothing: it cannot disturb the live processors, their consumer
groups or their tables. Because the join is a function of the SET of observations, reading the archive
in any order gives the state the processors should have reached.

Records that are replays are skipped (the original delivery is in the archive too), thin pushes and
hints contribute nothing (their fetch results, archived as well, carry the status), and records the
processors would dead-letter are counted by reason.

``--through-processors`` rebuilds with the real processor app instead, on temporary topics under a fresh
application id (see :mod:`processors.recovery.rebuild_processors`): slower, and it needs the broker, but it checks
the whole processor, not only its pure core.

``--diff`` compares with the last event per payment on ``payments.status.v1`` (see
:mod:`processors.recovery.rebuild_diff`). Use the whole archive for a diff (no ``--since``): a partial archive
rebuilds partial states. Exit codes: 0 no differences, 4 differences found, 1 a dependency failed,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Literal, TextIO

import orjson
from aiokafka.errors import KafkaError

from paystream.config import PROVIDERS, Settings
from paystream.errors import ConfigurationError, InfrastructureError, NormalizationError
from processors.normalize import Normalizer, Unparseable
from processors.payment_inputs import ObservationInput, PaymentInput
from processors.recovery.archive_format import ArchivedRecord
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.rebuild_diff import RebuildReport, Snapshot, diff, read_live_status
from processors.recovery.rebuild_processors import rebuild_through_processors
from processors.recovery.replay import add_time_range_arguments, check_time_range, fail
from processors.recovery.replay_progress import Progress
from processors.recovery.replay_source import ArchiveSource
from schemas.envelopes import FetchResult, InboxEnvelope
from schemas.join import PaymentState, apply

DIFFERENCES_FOUND = 4  # 3 is the CLI's "not implemented yet"


def add_rebuild_arguments(parser: argparse.ArgumentParser) -> None:
    add_time_range_arguments(parser)
    parser.add_argument("--provider", action="append", choices=PROVIDERS, default=[],
                        help="only payments of this provider (repeatable)")
    parser.add_argument("--account", action="append", default=[], help="only payments of this account")
    parser.add_argument("--diff", action="store_true",
                        help="compare with the last event per payment on the live status topic")
    parser.add_argument("--through-processors", action="store_true",
                        help="run the real processor worker instead of the pure core in this process: on "
                             "temporary topics rebuild-<stamp>.* under a fresh app id paystream-rebuild-<stamp> "
                             "(own consumer group, internal topic and changelog, all deleted afterwards); never "
                             "touches the live processor; slower, and needs the broker")
    parser.add_argument("--keep", action="store_true",
                        help="with --through-processors: keep the temporary topics (rebuild-<stamp>.*, "
                             "paystream-rebuild-<stamp>-payment-inputs, changelog__paystream-rebuild-<stamp>--*) "
                             "and the consumer group for inspection; the report lists the topics")
    parser.add_argument("--bucket", help="archive bucket (default: the configured PAYSTREAM_S3__BUCKET)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")


class StateBuilder:
    """Archived records in, payment states out: the processors' pure core, without Kafka."""

    def __init__(self, settings: Settings, providers: frozenset[str] = frozenset(),
                 accounts: frozenset[str] = frozenset()) -> None:
        self.normalizer = Normalizer(settings)
        self.providers = providers
        self.accounts = accounts
        self.states: dict[str, PaymentState] = {}
        self.records = 0
        self.observations = 0
        self.skipped: Counter[str] = Counter()  # why a record gave no observation

    def add(self, what: Literal["inbox", "fetch_result"], record: ArchivedRecord) -> None:
        self.records += 1
        try:
            if record.value is None:
                raise NormalizationError("record without a value", reason="malformed_envelope")
            if what == "inbox":
                envelope = InboxEnvelope.from_bytes(record.value)
                if envelope.replay is not None:
                    self.skipped["replay_copy"] += 1
                    return
                if not self.wanted(envelope.provider, envelope.account):
                    self.skipped["filtered"] += 1
                    return
                found = observations(self.normalizer.inbox(envelope, datetime.now(UTC)))
            else:
                result = FetchResult.from_bytes(record.value)
                if not self.wanted(result.provider, result.account):
                    self.skipped["filtered"] += 1
                    return
                inputs = self.normalizer.fetch_result(result)
                if isinstance(inputs, Unparseable):
                    raise inputs.error
                found = observations(inputs)
            for item in found:
                obs = item.observation
                self.states[obs.payment_key] = apply(self.states.get(obs.payment_key), obs)
                self.observations += 1
            if not found:
                self.skipped["no_observation"] += 1  # thin push, hint, failed fetch
        except NormalizationError as exc:
            self.skipped[f"dlq:{exc.reason}"] += 1

    def wanted(self, provider: str, account: str) -> bool:
        return (not self.providers or provider in self.providers) and (
            not self.accounts or account in self.accounts
        )

    def snapshots(self) -> dict[str, Snapshot]:
        return {key: snap for key, state in self.states.items() if (snap := Snapshot.from_state(state))}


async def rebuild(
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    providers: frozenset[str] = frozenset(),
    accounts: frozenset[str] = frozenset(),
    with_diff: bool = False,
    store: ArchiveStore | None = None,
    progress_stream: TextIO | None = None,
    show_progress: bool = True,
) -> RebuildReport:
    check_time_range(since, until)
    store = store or ArchiveStore(settings.s3)
    builder = StateBuilder(settings, providers, accounts)
    sources: list[tuple[Literal["inbox", "fetch_result"], ArchiveSource]] = [
        ("inbox", ArchiveSource(store, settings.topics.inbox, since, until)),
        ("fetch_result", ArchiveSource(store, settings.topics.fetch_results, since, until)),
    ]
    total = sum([await source.plan() for _, source in sources])
    progress = Progress(progress_stream or sys.stderr, total=total, unit="objects", label="rebuild",
                        enabled=show_progress)
    try:
        for what, source in sources:
            async for chunk in source.chunks():
                for record, _origin in chunk.records:
                    if (since and record.timestamp < since) or (until and record.timestamp >= until):
                        continue
                    builder.add(what, record)
                progress.advance(chunk.units, len(chunk.records))
    finally:
        progress.close()
    rebuilt = builder.snapshots()
    report = RebuildReport(
        f"s3://{store.bucket}/{store.prefix}", builder.records, builder.observations, builder.skipped, rebuilt,
        by_status=Counter(snap.status for snap in rebuilt.values()),
    )
    if with_diff:
        live = await read_live_status(settings)
        if providers or accounts:
            live = {k: v for k, v in live.items() if builder.wanted(*k.split(":", 2)[:2])}
        report.live_payments = len(live)
        report.differences = diff(rebuilt, live)
    return report


def run_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream rebuild`` subcommand (arguments from :func:`add_rebuild_arguments`)."""
    if args.keep and not args.through_processors:
        return fail("rebuild", "--keep only applies to --through-processors", 2)
    if args.bucket:
        settings = settings.model_copy(update={"s3": settings.s3.model_copy(update={"bucket": args.bucket})})
    common = {"since": args.since, "until": args.until, "providers": frozenset(args.provider),
              "accounts": frozenset(args.account), "with_diff": args.diff, "show_progress": not args.no_progress}
    try:
        if args.through_processors:
            report = asyncio.run(rebuild_through_processors(settings, keep=args.keep, **common))
        else:
            report = asyncio.run(rebuild(settings, **common))
    except ConfigurationError as exc:
        return fail("rebuild", str(exc), 2)
    except (InfrastructureError, KafkaError, OSError) as exc:
        return fail("rebuild", f"{type(exc).__name__}: {exc}", 1)
    print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() if args.json else report.render())
    return DIFFERENCES_FOUND if report.differences else 0


def observations(inputs: list[PaymentInput]) -> list[ObservationInput]:
    """The observations among what normalize made of a record (fetch requests and polled markers carry none)."""
    return [item for item in inputs if isinstance(item, ObservationInput)]
