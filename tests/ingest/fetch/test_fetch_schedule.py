"""The polling backoff schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.fetch.schedule import next_poll_at

T0 = datetime(2024, 5, 1, tzinfo=UTC)
MAX_AGE = timedelta(days=30)


def _offsets(count: int) -> list[timedelta]:
    offsets = []
    for polls in range(count):
        due = next_poll_at(T0, polls, first_seen_at=T0, max_age=MAX_AGE)
        assert due is not None
        offsets.append(due - T0)
    return offsets


def test_default_steps_then_daily() -> None:
    minutes = [int(o.total_seconds() // 60) for o in _offsets(8)]
    assert minutes == [1, 6, 21, 81, 441, 1881, 1881 + 1440, 1881 + 2 * 1440]


def test_polling_stops_at_max_age() -> None:
    assert next_poll_at(T0, 40, first_seen_at=T0, max_age=MAX_AGE) is None


def test_news_restarts_the_schedule() -> None:
    news = T0 + timedelta(days=2)
    assert next_poll_at(news, 0, first_seen_at=T0, max_age=MAX_AGE) == news + timedelta(minutes=1)
