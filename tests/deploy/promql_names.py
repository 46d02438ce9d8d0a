"""Which metric names (and label matchers) a PromQL expression names, without a full PromQL parser.

The expression is tokenized with PromQL's lexical rules: string literals, label-matcher blocks
``{...}``, range/subquery brackets ``[...]`` and grouping clauses (``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right`` followed by ``(labels)``) cannot name a metric and are
taken out first; every remaining identifier is then a function (it is followed by ``(``), a keyword,
or a metric name. A function that PromQL does not have is reported too, so a misspelled
``histogram_quantlie`` fails as loudly as a misspelled metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max",
        "clamp_min", "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
        "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
        "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
        "double_exponential_smoothing", "hour", "idelta", "increase", "irate", "label_join",
        "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
        "min_over_time", "minute", "month", "predict_linear", "present_over_time", "quantile_over_time",
        "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label",
        "sort_by_label_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time",
        "timestamp", "vector", "year", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
        "tanh", "asinh", "acosh", "atanh", "deg", "rad", "pi",
    }
)
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
        "topk", "quantile", "limitk", "limit_ratio",
    }
)
KEYWORDS = frozenset(
    {
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
        "group_right", "atan2", "inf", "nan",
    }
)
GROUPING = ("by", "without", "on", "ignoring", "group_left", "group_right")

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING_CLAUSE = re.compile(r"\b(?:" + "|".join(GROUPING) + r")\s*\([^()]*\)")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')")
# Numbers like 1e3 or 0x1F look like identifiers after their first digit; durations like 5m as well.
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)")


class PromQLError(ValueError):
    """The expression is not something this reader can vouch for."""


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


@dataclass
class ExpressionNames:
    metrics: set[str] = field(default_factory=set)
    selectors: list[Selector] = field(default_factory=list)


def names_in(expr: str) -> ExpressionNames:
    """The metric names an expression reads, and the label names matched on each."""
    if "__name__" in expr:
        raise PromQLError(f"selecting by __name__ hides the metric name from this check: {expr}")
    # Strings keep their length (so positions still line up) but lose any bracket or name inside.
    text = _STRING.sub(_blank_string, expr)
    if text.count("(") != text.count(")") or text.count("{") != text.count("}"):
        raise PromQLError(f"unbalanced brackets: {expr}")
    result = ExpressionNames()
    selectors = list(_SELECTOR.finditer(text))
    if len(selectors) != text.count("{"):
        raise PromQLError(f"a label selector without a metric name matches any metric: {expr}")
    for match in selectors:
        labels = frozenset(m.group(1) for m in _MATCHER.finditer(match.group(2)))
        result.selectors.append(Selector(match.group(1), labels))

    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = _GROUPING_CLAUSE.sub(" ", text)
    while _BRACKETS.search(text):
        text = _BRACKETS.sub(" ", text)
    text = _NUMBER.sub(" ", _STRING.sub(" ", text))
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        lowered = name.lower()
        if call:
            if name not in FUNCTIONS and name not in AGGREGATIONS and lowered not in KEYWORDS:
                raise PromQLError(f"unknown function {name}() in: {expr}")
            continue
        if lowered in KEYWORDS or name in AGGREGATIONS:
            continue
        result.metrics.add(name)
    return result


def _blank_string(match: re.Match[str]) -> str:
    quoted = match.group(0)
    return quoted[0] + "x" * (len(quoted) - 2) + quoted[-1]
