"""How long the archive keeps raw deliveries: one S3 lifecycle rule, checked at start and by replay.

``paystream archive --apply-lifecycle`` writes the rule :data:`RULE_ID` (objects under the archive prefix
expire ``s3.retention_days`` after upload; on a versioned bucket, superseded versions
:data:`NONCURRENT_DAYS` later) and keeps every other rule of the bucket as it was. Running it again with
the same setting changes nothing. The archiver itself never writes lifecycle rules (it does not need
s3:PutLifecycleConfiguration): at start it reads the bucket's rules and warns when none expires the whole
archive, or one expires it sooner than configured (``paystream_archive_retention_days``). Why about 13
months: docs/operations.md, "Data protection".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from paystream.errors import ConfigurationError
from paystream.logs import get_logger
from paystream.metrics import ARCHIVE_RETENTION_DAYS
from processors.recovery.archive_store import ArchiveStore, Lifecycle
from schemas.envelopes import to_rfc3339

log = get_logger(__name__)

RULE_ID = "paystream-archive-retention"
NONCURRENT_DAYS = 30


def rule_prefix(prefix: str) -> str:
    """The lifecycle filter prefix covering every archive object (the whole bucket for an empty prefix)."""
    base = prefix.strip("/")
    return f"{base}/" if base else ""


def retention_rule(prefix: str, days: int) -> dict[str, Any]:
    return {
        "ID": RULE_ID,
        "Filter": {"Prefix": rule_prefix(prefix)},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        # A versioned bucket keeps an expired object as a noncurrent version: that one goes too.
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
    }


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    rule: dict[str, Any]
    previous: dict[str, Any] | None  # our rule as it was (None: there was none)
    kept: int  # other rules of the bucket, left as they were
    changed: bool


def _same_rule(a: dict[str, Any], b: dict[str, Any]) -> bool:
    fields = ("ID", "Status", "Expiration", "NoncurrentVersionExpiration")
    return all(a.get(name) == b.get(name) for name in fields) and _filter_prefix(a) == _filter_prefix(b)


def apply_lifecycle(store: ArchiveStore, days: int) -> LifecycleChange:
    """Make the bucket expire archive objects after ``days``; idempotent, other rules kept."""
    current = store.lifecycle()
    ours = retention_rule(store.prefix, days)
    previous = next((rule for rule in current.rules if rule.get("ID") == RULE_ID), None)
    others = [rule for rule in current.rules if rule.get("ID") != RULE_ID]
    if previous is not None and _same_rule(previous, ours):
        return LifecycleChange(ours, previous, len(others), changed=False)
    store.put_lifecycle(Lifecycle([*others, ours], current.transition_default_minimum_object_size))
    log.info("archive_lifecycle_applied", bucket=store.bucket, prefix=rule_prefix(store.prefix), days=days,
             previous_days=(previous or {}).get("Expiration", {}).get("Days"), other_rules=len(others))
    return LifecycleChange(ours, previous, len(others), changed=True)


def _filter_prefix(rule: dict[str, Any]) -> str | None:
    """The prefix a rule applies to when it applies to EVERY object under it; None for rules that also
    filter by tags or object size (they may skip archive objects)."""
    if "Filter" not in rule:
        prefix = rule.get("Prefix", "")  # the legacy form, without a Filter
        return prefix if isinstance(prefix, str) else None
    selection = rule["Filter"] or {}
    if set(selection) - {"Prefix"}:
        return None
    prefix = selection.get("Prefix", "")
    return prefix if isinstance(prefix, str) else None


def effective_retention_days(rules: list[dict[str, Any]], prefix: str) -> int | None:
    """The shortest expiry (days after upload) among the enabled rules covering the whole archive prefix."""
    covering = rule_prefix(prefix)
    found = []
    for rule in rules:
        days = (rule.get("Expiration") or {}).get("Days")
        applies_to = _filter_prefix(rule)
        if rule.get("Status") == "Enabled" and days and applies_to is not None and covering.startswith(applies_to):
            found.append(int(days))
    return min(found) if found else None


@dataclass(frozen=True, slots=True)
class RetentionCheck:
    configured_days: int
    bucket_days: int | None  # None: no rule expires the archive, or it could not be read
    readable: bool = True


def check_retention(store: ArchiveStore, configured_days: int) -> RetentionCheck:
    """At archiver start: warn when the bucket keeps the archive forever or expires it too soon.

    An unreadable lifecycle (no s3:GetLifecycleConfiguration) is a warning too, not a refusal: the
    archive is still safe to write. S3 being unreachable propagates (the caller waits for it).
    """
    context = {"bucket": store.bucket, "prefix": rule_prefix(store.prefix), "configured_days": configured_days}
    try:
        rules = store.lifecycle().rules
    except ConfigurationError as exc:
        ARCHIVE_RETENTION_DAYS.set(-1)
        log.warning("archive_retention_unknown", error=str(exc), **context)
        return RetentionCheck(configured_days, None, readable=False)
    days = effective_retention_days(rules, store.prefix)
    ARCHIVE_RETENTION_DAYS.set(days or 0)
    if days is None:
        log.warning("archive_retention_missing", fix="run `paystream archive --apply-lifecycle`",
                    detail="no enabled lifecycle rule expires the archive: raw payment data is kept forever",
                    **context)
    elif days < configured_days:
        log.warning("archive_retention_shorter", bucket_days=days,
                    detail="the bucket expires archive objects before the configured retention: replays and "
                           "rebuilds cannot reach back as far as documented", **context)
    else:
        log.info("archive_retention_checked", bucket_days=days, **context)
    return RetentionCheck(configured_days, days)


Past = Literal["none", "partly", "entirely"]


@dataclass(frozen=True, slots=True)
class RetentionNote:
    """What a replay's time range has lost to retention (``replay --dry-run`` prints it)."""

    source: str  # where the retention comes from, e.g. "the bucket's lifecycle rule"
    days: float | None  # None: nothing expires
    cutoff: datetime | None  # records older than this are gone
    past: Past

    def render(self) -> str:
        if self.cutoff is None or self.past == "none":
            kept = "kept without expiry" if self.days is None else f"kept {self.days:g} days"
            return f"retention: the range is within retention ({kept}, {self.source})"
        share = "the WHOLE range is" if self.past == "entirely" else "the range is PARTLY"
        return (f"retention: {share} past retention: records before {to_rfc3339(self.cutoff)} are gone "
                f"({self.source}: {self.days:g} days) and cannot be replayed")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "days": self.days, "past": self.past,
                "cutoff": to_rfc3339(self.cutoff) if self.cutoff else None}


def retention_note(since: datetime | None, until: datetime | None, days: float | None, source: str,
                   now: datetime) -> RetentionNote:
    """Whether ``[since, until)`` reaches before ``now - days`` (an open start reaches back forever)."""
    if days is None:
        return RetentionNote(source, None, None, "none")
    cutoff = now - timedelta(days=days)
    past: Past = "none"
    if until is not None and until <= cutoff:
        past = "entirely"
    elif since is None or since < cutoff:
        past = "partly"
    return RetentionNote(source, days, cutoff, past)


def archive_retention_note(store: ArchiveStore, since: datetime | None, until: datetime | None,
                           configured_days: int, now: datetime) -> RetentionNote:
    """From the bucket's own rule; the configured retention when the rule cannot be read."""
    try:
        days = effective_retention_days(store.lifecycle().rules, store.prefix)
    except ConfigurationError:
        return retention_note(since, until, configured_days,
                              "configured PAYSTREAM_S3__RETENTION_DAYS (the bucket's lifecycle was unreadable)", now)
    return retention_note(since, until, days, f"lifecycle rule of s3://{store.bucket}", now)
