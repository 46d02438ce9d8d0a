"""A toy fulfillment service on paystream's payment-status stream: the worked example of docs/consumers.md.

It follows ``payments.status.v1`` with :class:`paystream.consume.Follower` (a first start bootstraps from
``payments.state.v1``) and decides per order (fulfillment_rules.py): release the order when its payment may
ship, hold it on a risk signal or an open dispute, reverse it on a refund or a lost dispute, cancel it when
the payment failed or was canceled, and say when an authorisation must be captured before it lapses.

Decisions go to a SQLite file (default ``.local/fulfillment/orders.sqlite3``) together with each payment's
applied ``(epoch, sequence)`` in ONE transaction per event, and the follower commits its Kafka offsets only
after that: a crash (SIGKILL included) at any point re-reads at most the events since the last offset commit,
and those are at or below the stored positions, so they are dropped. An order is released at most once.

Each decision is printed as one line prefixed ``[fulfillment]`` once it is committed; a stats line follows
at exit (Ctrl-C or SIGTERM). Kafka connection and topic names come from the usual PAYSTREAM_* settings.

    python deploy/local/fulfillment_example.py [--db PATH] [--group ID] [--capture-window-h H] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # fulfillment_rules, and the repo's packages

from fulfillment_rules import Decision, Order, capture_notice, decide, order_id_of  # noqa: E402

from paystream.config import load_settings  # noqa: E402
from paystream.consume import Follower, Gap, InvalidEvent, Origin, Position, StatusEvent  # noqa: E402
from paystream.errors import InfrastructureError  # noqa: E402
from paystream.logs import configure  # noqa: E402

PREFIX = "[fulfillment]"
DEFAULT_DB = Path(".local/fulfillment/orders.sqlite3")
DEFAULT_GROUP = "paystream-fulfillment-example"
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    n INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, action TEXT NOT NULL, why TEXT NOT NULL,
    payment_key TEXT NOT NULL, event_id TEXT NOT NULL, position TEXT NOT NULL, origin TEXT NOT NULL,
    decided_at TEXT NOT NULL, UNIQUE (order_id, action, event_id));
CREATE TABLE IF NOT EXISTS positions (payment_key TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
                                      sequence INTEGER NOT NULL);
"""


def _dump(order: Order) -> str:
    body = dataclasses.asdict(order)
    expires = order.authorization_expires_at
    body["authorization_expires_at"] = None if expires is None else expires.isoformat()
    return orjson.dumps(body).decode()


def _load(text: str) -> Order:
    body: dict[str, Any] = orjson.loads(text)
    expires = body["authorization_expires_at"]
    body["authorization_expires_at"] = None if expires is None else datetime.fromisoformat(expires)
    return Order(**body)


class FulfillmentService:
    """The handler and the durable position store of the follower, on one SQLite connection: what the
    handler decides and the position :meth:`put` stores commit together."""

    durable = True

    def __init__(self, db_path: Path, capture_window: timedelta, out: TextIO = sys.stdout) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path)
        self.db.execute("PRAGMA journal_mode=WAL")  # a killed process loses no committed transaction
        self.db.executescript(SCHEMA)
        self.capture_window = capture_window
        self.out = out
        self.pending: list[str] = []  # lines of the open transaction, printed once it commits
        self.decided = 0

    async def get(self, payment_key: str) -> Position | None:
        row = self.db.execute("SELECT epoch, sequence FROM positions WHERE payment_key = ?",
                              (payment_key,)).fetchone()
        return None if row is None else Position(row[0], row[1])

    async def handle(self, event: StatusEvent, origin: Origin) -> None:
        order_id = event.payment_key if event.is_agreement else order_id_of(event)
        row = self.db.execute("SELECT body FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        order, decisions = decide(None if row is None else _load(row[0]), event, datetime.now(UTC),
                                  self.capture_window)
        self._save(order)
        for decision in decisions:
            self._record(order, decision, event.payment_key, event.id, str(event.position), origin,
                         f"#{event.position} {event.status}")

    async def put(self, payment_key: str, position: Position) -> None:
        self.db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (payment_key) DO UPDATE SET "
                        "epoch = excluded.epoch, sequence = excluded.sequence", (payment_key, *position))
        self._commit()

    def sweep(self, now: datetime) -> None:
        """Authorisations about to lapse without news (no event arrives as time passes). It runs between
        events: :meth:`handle` and :meth:`put` never await anything, so no sweep lands inside an event's
        transaction."""
        rows = self.db.execute("SELECT body FROM orders WHERE json_extract(body, '$.status') = 'authorized' "
                               "AND json_extract(body, '$.capture_noticed') = 0").fetchall()
        for (body,) in rows:
            notice = capture_notice(_load(body), now, self.capture_window)
            if notice is not None:
                order, decision = notice
                self._save(order)
                self._record(order, decision, order.payment_key, f"sweep:{now:%Y-%m-%d}", "-", "sweep", "")
        self._commit()

    def gap(self, gap: Gap) -> None:
        print(f"{PREFIX} gap         {gap.payment_key}: {gap.missing} event(s) never seen between "
              f"{gap.after} and {gap.got} ({gap.cause})", file=self.out, flush=True)

    def invalid(self, error: InvalidEvent) -> None:
        print(f"{PREFIX} skipped an invalid record: {error}", file=self.out, flush=True)

    def _save(self, order: Order) -> None:
        self.db.execute("INSERT INTO orders VALUES (?, ?) ON CONFLICT (order_id) DO UPDATE SET body = excluded.body",
                        (order.order_id, _dump(order)))

    def _record(self, order: Order, decision: Decision, payment_key: str, event_id: str, position: str,
                origin: str, what: str) -> None:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO decisions (order_id, action, why, payment_key, event_id, position, origin, "
            "decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (order.order_id, decision.action, decision.why, payment_key, event_id, position, origin,
             datetime.now(UTC).isoformat()))
        if cursor.rowcount:
            note = " (from the snapshot)" if origin == "state" else ""
            self.pending.append(f"{PREFIX} {decision.action:<15} {order.order_id:<32} {payment_key} {what}"
                                f"{note}: {decision.why}")

    def _commit(self) -> None:
        self.db.commit()
        self.decided += len(self.pending)
        for line in self.pending:
            print(line, file=self.out, flush=True)
        self.pending.clear()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help=f"the SQLite file of orders, decisions and applied positions (default: {DEFAULT_DB})")
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help=f"the Kafka consumer group that keeps the position (default: {DEFAULT_GROUP})")
    parser.add_argument("--capture-window-h", type=float, default=24.0,
                        help="warn when an uncaptured authorisation lapses within this many hours (default: 24)")
    parser.add_argument("--commit-interval-s", type=float, default=1.0,
                        help="how often the consumer group's offsets are committed (default: 1)")
    parser.add_argument("--sweep-s", type=float, default=60.0,
                        help="how often authorisations about to lapse are looked for (default: 60)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning",
                        help="paystream's own log lines, on stderr (default: warning)")


async def serve(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    settings = load_settings()
    service = FulfillmentService(args.db, timedelta(hours=args.capture_window_h), out)
    follower = Follower(settings, service.handle, group_id=args.group, store=service, on_gap=service.gap,
                        on_invalid=service.invalid, commit_interval_s=args.commit_interval_s,
                        client_suffix="fulfillment-example")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    async def announce_and_sweep() -> None:
        await follower.ready.wait()
        how = (f"bootstrapped from {settings.topics.state} ({follower.stats.snapshot_documents} documents)"
               if follower.stats.bootstrapped else "resumed from the committed offsets")
        print(f"{PREFIX} following {settings.topics.status} as group {args.group}, {how}; start offsets "
              f"{follower.start_offsets}", file=out, flush=True)
        while True:
            service.sweep(datetime.now(UTC))
            await asyncio.sleep(args.sweep_s)

    helper = asyncio.create_task(announce_and_sweep())
    try:
        await follower.run(stop)
    except InfrastructureError as exc:
        print(f"{PREFIX} {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        helper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await helper
        stats = follower.stats
        print(f"{PREFIX} stats bootstrapped={stats.bootstrapped} snapshot_documents={stats.snapshot_documents} "
              f"events_read={stats.events_read} applied={stats.applied} duplicates_dropped={stats.duplicates} "
              f"gaps={stats.gaps} missing_events={stats.missing_events} stale_epochs={stats.stale_epochs} "
              f"invalid={stats.invalid} decisions={service.decided} offset_commits={stats.offset_commits}",
              file=out, flush=True)
        service.db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fulfillment_example.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n    python")[0] if __doc__ else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure(args.log_level, "console", process="fulfillment-example")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
