"""Progress for long replays and rebuilds: a redrawn line with ETA on a terminal, plain lines otherwise.

Written by hand rather than with tqdm: one line of state, and no new dependency.
"""

from __future__ import annotations

import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``advance(units, records)`` as work is done; ``total`` (in ``unit``s) may be unknown (None)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        total: int | None,
        unit: str,
        label: str = "replay",
        tty: bool | None = None,
        enabled: bool = True,
        plain_interval_s: float = 5.0,
    ) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.enabled = enabled
        # On a terminal the line is redrawn ~10 times a second; in a log, one line every few seconds.
        self.interval_s = 0.1 if self.tty else plain_interval_s
        self.started = time.monotonic()
        self.last_render = self.started
        self.done = 0
        self.records = 0

    def advance(self, units: int = 0, records: int = 0) -> None:
        self.done += units
        self.records += records
        now = time.monotonic()
        if self.enabled and now - self.last_render >= self.interval_s:
            self.last_render = now
            self._render(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.records / elapsed
        parts = [self.label]
        if self.total:
            share = min(self.done / self.total, 1.0)
            parts.append(f"{self.done}/{self.total} {self.unit} ({share:.0%})")
        else:
            parts.append(f"{self.done} {self.unit}")
        parts.append(f"{self.records} records, {rate:.0f} records/s")
        if self.total and self.done:
            remaining = elapsed * (self.total - self.done) / self.done
            parts.append(f"ETA {_clock(remaining)}")
        return "  ".join(parts)

    def _render(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
