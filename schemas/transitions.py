"""The transition table (DESIGN §5), kept as data in ``transitions.json`` and checked when loaded.

The table says which status moves are legitimate and which sources may make them; the join
(:mod:`schemas.join`) applies observations in canonical order and ignores any move the table does not list
(a stale regression). Keeping the rules as data keeps them reviewable in one place and testable row by row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paystream.errors import ConfigurationError
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

Status = PaymentStatus | AgreementStatus

TABLE_PATH = Path(__file__).with_name("transitions.json")

_STATUS_ENUMS: dict[ObjectKind, type[PaymentStatus] | type[AgreementStatus]] = {
    ObjectKind.PAYMENT: PaymentStatus,
    ObjectKind.AGREEMENT: AgreementStatus,
}


def parse_status(value: str) -> Status:
    """A status word of either model (the two enums share no value)."""
    try:
        return PaymentStatus(value)
    except ValueError:
        return AgreementStatus(value)


def kind_of(status: Status) -> ObjectKind:
    return ObjectKind.PAYMENT if isinstance(status, PaymentStatus) else ObjectKind.AGREEMENT


@dataclass(frozen=True, slots=True)
class TransitionTable:
    # (from, to) -> sources allowed to make that move
    moves: Mapping[tuple[Status, Status], frozenset[Source]]
    ranks: Mapping[Status, int]
    # Moves of the refined money status only (rows with "amounts_only"): the emitted stream may make them when
    # a capture or refund failed or was reversed; a provider's status word never does.
    amount_moves: Mapping[tuple[Status, Status], frozenset[Source]] = field(default_factory=dict)

    def allows(self, current: Status, proposed: Status, source: Source) -> bool:
        """True when a status word moving ``current -> proposed`` on an observation from ``source`` is
        legitimate.

        Staying in the same status is always allowed (a confirmation); moves across the payment and
        agreement models never are.
        """
        if current == proposed:
            return True
        return source in self.moves.get((current, proposed), frozenset())

    def allows_emitted(self, current: Status, proposed: Status, source: Source) -> bool:
        """True when the emitted stream may move ``current -> proposed`` (the refined statuses): a status
        word's move, or a move of the money status."""
        return self.allows(current, proposed, source) or source in self.amount_moves.get((current, proposed),
                                                                                        frozenset())

    def rank(self, status: Status) -> int:
        """Progress rank: breaks ties between observations that carry the same provider time."""
        return self.ranks[status]


def _statuses(kind: ObjectKind, words: Any, where: str) -> list[Status]:
    enum = _STATUS_ENUMS[kind]
    if not isinstance(words, list) or not words:
        raise ConfigurationError(f"{where}: expected a non-empty list of {kind} statuses")
    try:
        return [enum(word) for word in words]
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc


def _sources(spec: Any, groups: Mapping[str, frozenset[Source]], where: str) -> frozenset[Source]:
    if isinstance(spec, str):
        if spec not in groups:
            raise ConfigurationError(f"{where}: unknown source group {spec!r}")
        return groups[spec]
    try:
        return frozenset(Source(word) for word in spec)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: bad sources {spec!r}: {exc}") from exc


def table_from_document(document: Mapping[str, Any]) -> TransitionTable:
    """Build and check a table from the parsed JSON document. Raises ConfigurationError when invalid."""
    try:
        groups = {
            name: frozenset(Source(word) for word in words)
            for name, words in document.get("source_groups", {}).items()
        }
    except ValueError as exc:
        raise ConfigurationError(f"transition table: bad source group: {exc}") from exc
    moves: dict[tuple[Status, Status], frozenset[Source]] = {}
    amount_moves: dict[tuple[Status, Status], frozenset[Source]] = {}
    ranks: dict[Status, int] = {}
    for kind, enum in _STATUS_ENUMS.items():
        section = document.get(kind.value)
        if not isinstance(section, Mapping):
            raise ConfigurationError(f"transition table: missing section {kind.value!r}")
        rank_doc = section.get("rank", {})
        missing = {member.value for member in enum} - set(rank_doc)
        if missing:
            raise ConfigurationError(f"transition table: {kind.value} statuses unranked: {sorted(missing)}")
        for word, rank in rank_doc.items():
            (status,) = _statuses(kind, [word], f"{kind.value}.rank")
            if not isinstance(rank, int) or isinstance(rank, bool):
                raise ConfigurationError(f"transition table: rank of {word!r} must be an integer")
            ranks[status] = rank
        for index, row in enumerate(section.get("moves", [])):
            where = f"transition table: {kind.value}.moves[{index}]"
            sources = _sources(row.get("sources"), groups, where)
            if not sources:
                raise ConfigurationError(f"{where}: no allowed source")
            amounts_only = row.get("amounts_only", False)
            if not isinstance(amounts_only, bool):
                raise ConfigurationError(f"{where}: amounts_only must be true or false")
            target = amount_moves if amounts_only else moves
            for current in _statuses(kind, row.get("from"), where + ".from"):
                for proposed in _statuses(kind, row.get("to"), where + ".to"):
                    if current == proposed:
                        raise ConfigurationError(f"{where}: {current} -> {proposed} is not a move")
                    if (current, proposed) in moves or (current, proposed) in amount_moves:
                        raise ConfigurationError(f"{where}: {current} -> {proposed} listed twice")
                    target[(current, proposed)] = sources
    return TransitionTable(moves=moves, ranks=ranks, amount_moves=amount_moves)


def load_table(path: Path = TABLE_PATH) -> TransitionTable:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the transition table {path}: {exc}") from exc
    return table_from_document(document)


# Loaded once at import: a broken table must stop the process at start-up, not at the first observation.
TABLE = load_table()


def is_allowed(current: Status, proposed: Status, source: Source) -> bool:
    return TABLE.allows(current, proposed, source)


def progress_rank(status: Status) -> int:
    return TABLE.rank(status)
