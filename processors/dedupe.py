"""The dedupe ledger's entries: delivery key → first-seen time (unix seconds, as ASCII bytes).

An entry older than the TTL no longer counts (explicit timestamp check) and is deleted by a periodic
sweep, so the ledger stays bounded by the deliveries of one TTL window (on disk with RocksDB).
"""

from __future__ import annotations


def entry(now_s: float) -> bytes:
    return f"{now_s:.3f}".encode()


def seen_at(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # unreadable entries are treated as absent (and swept)


def is_duplicate(value: bytes | None, now_s: float, ttl_s: float) -> bool:
    first = seen_at(value)
    return first is not None and now_s - first < ttl_s


def is_expired(value: bytes | None, now_s: float, ttl_s: float) -> bool:
    return not is_duplicate(value, now_s, ttl_s)
