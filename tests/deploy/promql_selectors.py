"""The series selectors of a PromQL expression, found by Prometheus's own parser (promtool), not a lexer.

promtool cannot list the metrics an expression reads, but ``promtool --experimental promql label-matchers
set EXPR NAME VALUE`` parses the expression with the real PromQL parser, adds the matcher
``NAME="VALUE"`` to every vector and matrix selector, and prints the expression back in canonical form.
Every selector then reads ``metric{matchers,NAME="VALUE"}``; only those carry the probe matcher, so
strings, grouping clauses, ranges, offsets, function names and numbers cannot be mistaken for metric
names, and an expression that does not parse fails with promtool's own message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from go_tools import check

PROBE_NAME = "paystream_selector_probe"
PROBE = f'{PROBE_NAME}="1"'
_QUOTED = r'"(?:\\.|[^"\\])*"'
# An optional metric name, then a brace block whose quoted values may hold any character.
_SELECTOR = re.compile(r"(?P<metric>[A-Za-z_:][\w:]*)?\{(?P<matchers>(?:[^{}\"]|" + _QUOTED + r")*)\}")
_MATCHER = re.compile(r"(?P<label>[A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*" + _QUOTED)


class SelectorError(ValueError):
    """A selector this check cannot vouch for: it names no metric, or picks metrics by ``__name__``."""


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


@cache
def selectors(expr: str) -> tuple[Selector, ...]:
    """Every vector selector of ``expr``: its metric name and the label names it matches on."""
    if PROBE_NAME in expr:
        raise SelectorError(f"{PROBE_NAME} is reserved for this check: {expr}")
    canonical = check("promtool", "--experimental", "promql", "label-matchers", "set", expr, PROBE_NAME, "1")
    found = []
    for match in _SELECTOR.finditer(canonical):
        labels = {m.group("label") for m in _MATCHER.finditer(match.group("matchers"))}
        if PROBE not in match.group("matchers"):
            continue  # a brace block inside a string literal, not a selector
        labels.discard(PROBE_NAME)
        if "__name__" in labels:
            raise SelectorError(f"selecting by __name__ hides the metric name from this check: {expr}")
        if not match.group("metric"):
            raise SelectorError(f"a selector without a metric name matches any metric: {expr}")
        found.append(Selector(match.group("metric"), frozenset(labels)))
    return tuple(found)
