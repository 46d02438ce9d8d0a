"""The rebuild diff and the progress line, without broker or S3."""

from __future__ import annotations

import io

from processors.recovery.rebuild_diff import Snapshot, diff
from processors.recovery.replay_progress import Progress

CAPTURED = Snapshot("captured", 1500, 1500, 0, "EUR")


def test_equal_states_give_no_difference() -> None:
    assert diff({"k": CAPTURED}, {"k": Snapshot("captured", 1500, 1500, 0, "EUR")}) == []


def test_a_differing_amount_is_named() -> None:
    [found] = diff({"k": CAPTURED}, {"k": Snapshot("captured", 1500, 1000, 0, "EUR")})
    assert found.fields == ("captured_amount",)
    assert "captured_amount live=1000 rebuilt=1500" in found.describe()


def test_a_payment_missing_on_the_live_stream_is_reported() -> None:
    [found] = diff({"k": CAPTURED}, {})
    assert (found.payment_key, found.live) == ("k", None)
    assert "NO live status event" in found.describe()


def test_plain_progress_lines_carry_counts_and_eta() -> None:
    out = io.StringIO()
    progress = Progress(out, total=4, unit="objects", tty=False, plain_interval_s=0)
    progress.advance(1, 250)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("replay  1/4 objects (25%)  250 records")
    assert "ETA " in line


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    progress = Progress(out, total=None, unit="offsets", tty=True)
    progress.interval_s = 0
    progress.advance(10, 10)
    progress.advance(10, 10)
    assert "\n" not in out.getvalue()
    assert out.getvalue().count("\r") == 2
