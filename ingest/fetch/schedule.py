"""The polling schedule for non-terminal payments with no news (for the processors' scheduler).

Default per provider: 1 m, 5 m, 15 m, 1 h, 6 h, 24 h after the last news, then daily, until the payment is
``max_age`` old; never auto-failed: past ``max_age`` it simply stops being polled (and the freshness
metric shows it). The scheduler should publish a fetch request when a poll is *due* (not-before = now):
the fetcher keeps waiting requests in memory, and a request waiting for hours would hold its partition's
committed offset back for hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

DEFAULT_STEPS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(hours=24),
)
THEN_EVERY = timedelta(days=1)


def next_poll_at(
    last_news_at: datetime,
    polls_since_news: int,
    *,
    first_seen_at: datetime,
    max_age: timedelta,
    steps: Sequence[timedelta] = DEFAULT_STEPS,
) -> datetime | None:
    """When to poll next, given how many polls found nothing new since the last news; None = stop."""
    if polls_since_news < len(steps):
        due = last_news_at + sum(steps[: polls_since_news + 1], timedelta())
    else:
        due = last_news_at + sum(steps, timedelta()) + THEN_EVERY * (polls_since_news - len(steps) + 1)
    return due if due - first_seen_at <= max_age else None
