"""docs/providers.md shows every provider catalog as it is (issue 17: "a per-provider table in the docs that a
test keeps equal to the catalog data"), and the catalog loader refuses a malformed catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.providers.catalog import CATALOG_PROVIDERS, catalog_from_document, load_catalog, markdown_table, with_tables
from paystream.errors import ConfigurationError, UnknownProviderStatus

DOC = Path(__file__).resolve().parents[3] / "docs" / "providers.md"


def test_the_provider_docs_show_every_catalog_as_it_is() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert with_tables(text) == text, "run: python -m ingest.providers.catalog docs/providers.md"


@pytest.mark.parametrize("provider", CATALOG_PROVIDERS)
def test_every_entry_of_the_catalog_has_its_row(provider: str) -> None:
    catalog = load_catalog(provider)
    table = markdown_table(catalog)
    assert len(table.splitlines()) == len(catalog.entries) + 2
    for name, entry in catalog.entries.items():
        assert f"| `{name}` | {entry.outcome} |" in table


def test_a_changed_catalog_would_show_as_a_different_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    tampered = text.replace("| ignore |", "| status |", 1)
    assert with_tables(tampered) != tampered


def document(**entries: Any) -> dict[str, Any]:
    return {"provider": "x", "entry_kind": "event type", "sources": ["the provider's list"], "entries": entries}


@pytest.mark.parametrize("broken", [
    {**document(a={"outcome": "status", "why": "w"}), "sources": []},
    document(),
    document(a={"outcome": "guess", "why": "w"}),
    document(a={"outcome": "ignore"}),
    document(a={"outcome": "ignore", "why": " "}),
])
def test_a_malformed_catalog_is_refused_at_load(broken: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        catalog_from_document(broken, "test")


def test_an_unknown_entry_names_the_provider_and_the_word() -> None:
    catalog = catalog_from_document(document(a={"outcome": "ignore", "why": "w"}), "test")
    with pytest.raises(UnknownProviderStatus) as caught:
        catalog.entry("b")
    assert (caught.value.provider, caught.value.word, caught.value.reason) == ("x", "b", "unknown_event_type")
