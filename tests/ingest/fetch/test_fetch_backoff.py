"""Exponential backoff with full jitter."""

from __future__ import annotations

from ingest.fetch.backoff import full_jitter_delay


def test_ceiling_doubles_per_attempt() -> None:
    delays = [full_jitter_delay(n, base_s=1.0, cap_s=300.0, uniform=lambda: 1.0) for n in (1, 2, 3, 4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_ceiling_is_capped() -> None:
    assert full_jitter_delay(30, base_s=1.0, cap_s=300.0, uniform=lambda: 1.0) == 300.0


def test_delay_is_drawn_from_zero_up() -> None:
    assert full_jitter_delay(5, base_s=1.0, cap_s=300.0, uniform=lambda: 0.0) == 0.0
    assert full_jitter_delay(5, base_s=1.0, cap_s=300.0, uniform=lambda: 0.25) == 4.0
