"""The published JSON Schemas of ``payments.status.v1`` and ``payments.state.v1``, read as files.

The files are package data of ``schemas`` (``schemas/*.schema.json``); they are read by path, never through
the ``schemas`` Python modules, so a consumer depends on the published contract and nothing else.

Two validators per document:

* **strict**: the schema as published (``additionalProperties: false`` everywhere). For paystream's own tests
  and for consumers that want to notice any change.
* **lenient** (the default for consumers): the same schema with ``additionalProperties: false`` dropped, so an
  event carrying an optional field added later in v1 (docs/consumers.md, "Schema evolution") still parses
  with an older copy of this library; every field the library knows is still checked, types and enums
  included.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

EVENT_SCHEMA_FILE = "payment-status-event.schema.json"
STATE_SCHEMA_FILE = "payment-state.schema.json"
EVENT_DATASCHEMA = "https://paystream.dev/schemas/payment-status-event.v1.json"
# Only the formats the documents use: loading every format checker costs seconds of start-up.
_FORMATS = FormatChecker(formats=["date-time", "uuid"])


@cache
def load(filename: str) -> dict[str, Any]:
    """A schema document shipped as package data of ``schemas``."""
    document: dict[str, Any] = json.loads(files("schemas").joinpath(filename).read_text(encoding="utf-8"))
    return document


def _lenient(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _lenient(value) for key, value in node.items()
                if not (key == "additionalProperties" and value is False)}
    if isinstance(node, list):
        return [_lenient(item) for item in node]
    return node


def _registry(event_schema: dict[str, Any]) -> Registry[Any]:
    resource = Resource.from_contents(event_schema)
    # The state schema names the event schema by file name next to its own $id.
    base = EVENT_DATASCHEMA.rsplit("/", 1)[0]
    return Registry().with_resources([(event_schema["$id"], resource), (f"{base}/{EVENT_SCHEMA_FILE}", resource)])


@cache
def validator(filename: str, *, strict: bool) -> Draft202012Validator:
    """The validator of ``filename`` (the event or the state document)."""
    event_schema = load(EVENT_SCHEMA_FILE) if strict else _lenient(load(EVENT_SCHEMA_FILE))
    schema = load(filename) if strict else _lenient(load(filename))
    return Draft202012Validator(schema, registry=_registry(event_schema), format_checker=_FORMATS)


def enum_of(definition: str) -> frozenset[str]:
    """The values of an enum in the event schema's ``$defs`` (``payment_status``, ``agreement_status``)."""
    return frozenset(load(EVENT_SCHEMA_FILE)["$defs"][definition]["enum"])


PAYMENT_STATUSES = enum_of("payment_status")
AGREEMENT_STATUSES = enum_of("agreement_status")
