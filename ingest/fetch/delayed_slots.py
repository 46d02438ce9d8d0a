"""Slots of the fetcher's delay store (ingest/fetch/delayed.py): which key a request is held under, and which
of two requests for one slot is the newer one. Pure functions, shared by the live path and the load.

Why versions and not arrival. The processors' poll chain only listens to its latest link, and the fetcher
re-publishes a link's retry (429, 5xx, open circuit) on the requests topic, behind whatever the processors
wrote meanwhile. Kept by arrival, the retry of link *n* read after link *n+1* replaced it in the payment's
slot: link *n+1* was never fetched, link *n*'s result was ignored by the chain, and the payment was never
polled again (issue 18 #3a). So a stale slot keeps the request with the highest ``chain_version`` (and
within one link the latest retry); requests written before versions existed keep arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

from paystream.errors import NormalizationError
from schemas.envelopes import FetchRequest, from_rfc3339

STALE_SUFFIX = "|stale"


def store_key(request: FetchRequest) -> str:
    """One slot per payment for stale polls (the newest link holds it); its own key for anything else."""
    if request.reason == "stale":
        return f"{request.payment_key}{STALE_SUFFIX}"
    key = f"{request.payment_key}|{request.request_id}|{request.attempt}"
    # A retry is a new request (its own key): before the retry counter existed the fetcher raised `attempt`.
    return f"{key}|{request.retry}" if request.retry else key


def due_at(request: FetchRequest) -> float:
    """The request's not-before time as a POSIX timestamp."""
    try:
        return from_rfc3339(request.not_before).timestamp()
    except (TypeError, ValueError) as exc:
        raise NormalizationError(f"fetch request: bad not_before {request.not_before!r}",
                                 reason="malformed_envelope") from exc


def same_poll(a: FetchRequest, b: FetchRequest) -> bool:
    """A re-emitted request (same id, attempt, retry and time) is the poll already held, not a new one."""
    return (a.request_id, a.attempt, a.retry, a.not_before) == (b.request_id, b.attempt, b.retry, b.not_before)


def replaces(incoming: FetchRequest, current: FetchRequest) -> bool:
    """Whether ``incoming`` takes the slot that ``current`` holds.

    With a chain version on both, the higher version wins, and within one link (equal versions) the later
    retry; a tie goes to the later arrival (e.g. a link re-published while its circuit was open, waiting
    longer). Without a version on either side (records written before versions existed), the later arrival.
    """
    if incoming.chain_version is None or current.chain_version is None:
        return True
    return (incoming.chain_version, incoming.retry or 0) >= (current.chain_version, current.retry or 0)


@dataclass(slots=True)
class Loaded:
    """The winning record of one key while a store partition is read."""

    raw: bytes
    source_offset: int | None
    request: FetchRequest | None = None  # parsed when it had to be compared
    rewrite: bool = False  # a later record of the key lost to it: write it again, so compaction keeps it


def fold(latest: dict[str, Loaded], key: str, raw: bytes | None, source_offset: int | None) -> None:
    """One record of the store, read in log order, into the winners per key (a tombstone deletes): a stale
    slot keeps its newest link by :func:`replaces`, as on the live path. Compaction keeps only a key's last
    record, so a winner that is not the last is marked to be written again."""
    if raw is None:
        latest.pop(key, None)
        return
    current = latest.get(key)
    if current is not None and key.endswith(STALE_SUFFIX):
        # Parsed only when a key has more than one live record (after compaction, rarely).
        try:
            held = current.request or FetchRequest.from_bytes(current.raw)
            incoming = FetchRequest.from_bytes(raw)
        except NormalizationError:
            pass  # a malformed record cannot be ranked: the later one stands (and is reported at load)
        else:
            current.request = held
            if not replaces(incoming, held):
                current.rewrite = True
                return
            latest[key] = Loaded(raw, source_offset, incoming)
            return
    latest[key] = Loaded(raw, source_offset)


__all__ = ["STALE_SUFFIX", "Loaded", "due_at", "fold", "replaces", "same_poll", "store_key"]
