"""Small helpers shared by the provider parsers (``ingest/providers/*/parse.py``).

Every failure is a :class:`NormalizationError` (the record goes to the DLQ unchanged) or, for a provider
word without an explicit mapping, an :class:`UnknownProviderStatus`: parsers never guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import orjson

from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.status import Source

T = TypeVar("T")

# ISO 4217 minor-unit exponents that are not 2. Amounts given as decimal strings ("14.00") are turned
# into integers in minor units with the currency's own exponent.
_EXPONENTS: Mapping[str, int] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
         "XAF", "XOF", "XPF"),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


@dataclass(frozen=True, slots=True)
class Stamp:
    """The per-record facts every observation of one parse call shares."""

    account: str
    source: Source
    evidence_id: str
    observed_at: datetime


def load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NormalizationError(f"{what}: body is not JSON: {exc}", reason="malformed_body") from exc
    if not isinstance(value, dict):
        raise NormalizationError(f"{what}: body is not a JSON object", reason="malformed_body")
    return value


def field_of(obj: Mapping[str, Any], name: str, kind: type[T], what: str) -> T:
    """A required field of a given JSON type."""
    value = obj.get(name)
    if type(value) is kind:  # JSON gives exact types: the common case, without the checks below
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise NormalizationError(f"{what}: field {name!r} missing or not a {kind.__name__}", reason="malformed_body")
    return value


def optional_field(obj: Mapping[str, Any], name: str, kind: type[T], what: str) -> T | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is kind:
        return value
    return field_of(obj, name, kind, what)


def object_at(obj: Mapping[str, Any], name: str, what: str) -> dict[str, Any]:
    return field_of(obj, name, dict, what)


def lookup(mapping: Mapping[Any, T], word: Any, provider: str, what: str) -> T:
    """The explicit mapping of a provider word; an unmapped word is an error, never a guess."""
    try:
        return mapping[word]
    except (KeyError, TypeError):
        raise UnknownProviderStatus(f"{provider}: no mapping for {what} {word!r}", provider=provider,
                                    word=f"{what}:{word}") from None


def minor_units(value: str | int | float, currency: str, what: str) -> int:
    """A decimal amount ("14.00", 14.5) in minor units of ``currency``; exact or an error."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    try:
        decimal = Decimal(str(value))
    except InvalidOperation as exc:
        raise NormalizationError(f"{what}: amount {value!r} is not a number", reason="malformed_body") from exc
    scaled = decimal.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise NormalizationError(
            f"{what}: amount {value!r} has more decimals than {currency} allows", reason="malformed_body"
        )
    return int(scaled)


def iso_time(text: Any, what: str) -> datetime:
    """An ISO 8601 / RFC 3339 time as an aware UTC datetime."""
    if not isinstance(text, str):
        raise NormalizationError(f"{what}: time {text!r} is not a string", reason="malformed_body")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise NormalizationError(f"{what}: bad time {text!r}", reason="malformed_body") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def unix_time(value: Any, what: str) -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise NormalizationError(f"{what}: time {value!r} is not unix seconds", reason="malformed_body")
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """An object a thin push or hint names: what the fetcher must get from the provider's API."""

    object_type: str
    object_id: str
