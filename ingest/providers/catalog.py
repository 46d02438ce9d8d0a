"""Provider catalogs: every event type, event code, notification or resource a provider documents, each with
its decision — kept as data (``ingest/providers/{provider}/catalog.json``), one reviewable table per provider.

A catalog file::

    {
      "provider": "stripe",
      "entry_kind": "event type",                      # what an entry names, for messages and the docs
      "sources": ["stripe-python 16.1.0 ..."],         # where the provider publishes its list
      "entries": {
        "payment_intent.succeeded": {"outcome": "status", "why": "..."},
        "customer.created": {"outcome": "ignore", "why": "..."}
      }
    }

Outcomes (what the provider's parser does with an entry):

* ``status`` — a payment status (the parser maps the provider's words explicitly);
* ``capture`` / ``refund`` / ``dispute`` — an amount movement by its own id, with its own state;
* ``agreement`` — an agreement (stored payment method, mandate, Charge Permission) status;
* ``risk`` — a risk signal on the payment (the status does not change);
* ``fetch`` — a thin notification: the parser names the object the fetcher gets;
* ``ignore`` — deliberately no observation; counted (``paystream_events_ignored_total``), never dead-lettered.

An entry the catalog does not know is a provider's new word: :class:`UnknownProviderStatus` (the DLQ, with an
alert that names it). A catalog that fails to load stops the process at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast, get_args

from paystream.errors import ConfigurationError, UnknownProviderStatus
from paystream.metrics import EVENTS_IGNORED

Outcome = Literal["status", "capture", "refund", "dispute", "agreement", "risk", "fetch", "ignore"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
PROVIDERS_DIR = Path(__file__).parent
# False while a caller only asks what a record is about (the routing of a record to its payment): the entries
# ignored are counted once, where the record is processed.
_COUNTING: ContextVar[bool] = ContextVar("catalog_counting", default=True)


def count_ignored(provider: str, name: str) -> None:
    """Count one record ignored on purpose (``paystream_events_ignored_total``), unless :func:`silent`."""
    if _COUNTING.get():
        EVENTS_IGNORED.labels(provider, name).inc()


@contextmanager
def silent() -> Iterator[None]:
    """Parse without counting ignored entries."""
    token = _COUNTING.set(False)
    try:
        yield
    finally:
        _COUNTING.reset(token)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    outcome: Outcome
    why: str


@dataclass(frozen=True, slots=True)
class Catalog:
    provider: str
    entry_kind: str
    sources: tuple[str, ...]
    entries: Mapping[str, Entry]

    def entry(self, name: str) -> Entry:
        """The decision for ``name``; a name the catalog does not know raises :class:`UnknownProviderStatus`."""
        found = self.entries.get(name)
        if found is None:
            raise UnknownProviderStatus(f"{self.provider}: {self.entry_kind} {name!r} is not in the catalog",
                                        provider=self.provider, word=name, reason="unknown_event_type")
        return found

    def ignored(self, name: str) -> bool:
        """True (and counted) when the catalog ignores ``name`` on purpose; raises for an unknown name."""
        if self.entry(name).outcome != "ignore":
            return False
        count_ignored(self.provider, name)
        return True

    def names(self, *outcomes: Outcome) -> list[str]:
        """The entries with one of ``outcomes`` (every entry when none is given), sorted."""
        return sorted(name for name, entry in self.entries.items() if not outcomes or entry.outcome in outcomes)


def catalog_from_document(document: Mapping[str, Any], where: str) -> Catalog:
    """Build and check a catalog from its parsed JSON. Raises :class:`ConfigurationError` when invalid."""
    provider = document.get("provider")
    entry_kind = document.get("entry_kind")
    sources = document.get("sources")
    raw_entries = document.get("entries")
    if not isinstance(provider, str) or not isinstance(entry_kind, str):
        raise ConfigurationError(f"{where}: 'provider' and 'entry_kind' must be strings")
    if not isinstance(sources, list) or not sources or not all(isinstance(item, str) for item in sources):
        raise ConfigurationError(f"{where}: 'sources' must name where the provider publishes its list")
    if not isinstance(raw_entries, dict) or not raw_entries:
        raise ConfigurationError(f"{where}: 'entries' must be a non-empty object")
    entries: dict[str, Entry] = {}
    for name, spec in raw_entries.items():
        if not isinstance(spec, dict) or spec.get("outcome") not in OUTCOMES:
            raise ConfigurationError(f"{where}: {name!r} needs an outcome, one of {sorted(OUTCOMES)}")
        why = spec.get("why")
        if not isinstance(why, str) or not why.strip():
            raise ConfigurationError(f"{where}: {name!r} needs a 'why'")
        entries[name] = Entry(name, cast(Outcome, spec["outcome"]), why)
    return Catalog(provider, entry_kind, tuple(sources), entries)


@cache
def load_catalog(provider: str) -> Catalog:
    """``ingest/providers/{provider}/catalog.json``, loaded and checked once."""
    path = PROVIDERS_DIR / provider / "catalog.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the {provider} catalog {path}: {exc}") from exc
    catalog = catalog_from_document(document, str(path))
    if catalog.provider != provider:
        raise ConfigurationError(f"{path}: names provider {catalog.provider!r}, not {provider!r}")
    return catalog


# --- the catalogs as documentation (docs/providers.md) ---------------------------------------------------
CATALOG_PROVIDERS = ("stripe", "adyen", "amazon_pay", "mollie")


def markdown_table(catalog: Catalog) -> str:
    """One provider's catalog as a Markdown table: entry, outcome, why (a test keeps docs/providers.md equal)."""
    lines = [f"| {catalog.entry_kind} | outcome | why |", "|---|---|---|"]
    for name in sorted(catalog.entries):
        entry = catalog.entries[name]
        lines.append(f"| `{name}` | {entry.outcome} | {entry.why.replace('|', '/')} |")
    return "\n".join(lines)


def with_tables(document: str) -> str:
    """``document`` with each ``<!-- catalog:{provider} -->`` … ``<!-- /catalog:{provider} -->`` block rendered
    from the provider's catalog."""
    for provider in CATALOG_PROVIDERS:
        start, end = f"<!-- catalog:{provider} -->", f"<!-- /catalog:{provider} -->"
        head, found, rest = document.partition(start)
        if not found or end not in rest:
            raise ConfigurationError(f"the document has no {start} … {end} block")
        document = f"{head}{start}\n{markdown_table(load_catalog(provider))}\n{end}{rest.partition(end)[2]}"
    return document


if __name__ == "__main__":  # python -m ingest.providers.catalog docs/providers.md: render the tables in place
    import sys

    target = Path(sys.argv[1])
    target.write_text(with_tables(target.read_text(encoding="utf-8")), encoding="utf-8")
