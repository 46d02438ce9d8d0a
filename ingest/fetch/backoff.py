"""Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter_delay(
    attempt: int, *, base_s: float, cap_s: float, uniform: Callable[[], float] = random.random
) -> float:
    """A delay drawn uniformly from [0, min(cap, base * 2^(attempt-1))): retries spread out instead of
    arriving at the recovering provider in lock-step."""
    ceiling = min(cap_s, base_s * (1 << min(62, max(0, attempt - 1))))
    return uniform() * ceiling
