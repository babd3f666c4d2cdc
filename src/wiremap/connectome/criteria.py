"""``NeuronCriteria``: which neurons a query is about, in neuPrint's vocabulary.

A criteria object is a frozen, validated set of filters; :meth:`to_sql`
turns it into a WHERE clause with ``?`` placeholders and a parameter list,
so user values never become SQL text.  The clause refers to the ``neurons``
table under an alias (default ``n``)::

    >>> NeuronCriteria(type="PC", ei="I", min_post=20).to_sql()
    ('n.type = ? AND n.ei = ? AND n.n_post >= ?', ['PC', 'I', 20])

Long id lists become one list parameter joined as a set
(``n.id IN (SELECT unnest(?::UBIGINT[]))``), never a giant ``IN (1, 2, …)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wiremap.connectome.schema import MAX_ID, NEURON_BASE, NEURON_DERIVED, PROPERTY_NAME
from wiremap.errors import InputError

#: Characters a cell type may contain; quotes, ``;`` and ``=`` are refused outright so
#: that SQL fragments get a clear error rather than silently matching nothing.
TYPE_TEXT = re.compile(r"^[A-Za-z0-9_ .:+\-/(),#]{1,200}$")
TYPE_REGEX = re.compile(r"^[A-Za-z0-9_ .:+\-/(),#^$*?|\[\]{}\\]{1,200}$")
MAX_IDS = 1_000_000


class QueryError(InputError):
    """A query's arguments are malformed (wrong type, out of range, unknown name)."""


def check_id(value: Any, what: str = "bodyId") -> int:
    """``value`` as a neuron id (int in 1..2**64-1), else :class:`QueryError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise QueryError(f"{what} must be an integer id, got {value!r}") from None
    if not 1 <= value <= MAX_ID:
        raise QueryError(f"{what} {value} is out of range (ids are 1..2**64-1)")
    return int(value)


def check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**62:
        raise QueryError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        if hasattr(value, "tolist") and not isinstance(value, str):
            out = value.tolist()
            return tuple(out) if isinstance(out, list) else (out,)
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class NeuronCriteria:
    """Filters on neurons; all given filters must hold (AND).

    bodyId      one id or a sequence of ids
    type        a cell type, a sequence of types, or with ``regex=True`` a regular
                expression matched against the whole type
    ei          'E' or 'I'
    kind        'neuron' or 'glia'
    min_pre     at least this many output synapses (neuPrint's ``pre``)
    min_post    at least this many input synapses (neuPrint's ``post``)
    properties  user properties that must equal the given values
    """

    bodyId: int | Sequence[int] | None = None
    type: str | Sequence[str] | None = None
    regex: bool = False
    ei: str | None = None
    kind: str | None = None
    min_pre: int | None = None
    min_post: int | None = None
    properties: Mapping[str, bool | int | float | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bodyId is not None:
            ids = _as_tuple(self.bodyId)
            if not ids:
                raise QueryError("bodyId is an empty list")
            if len(ids) > MAX_IDS:
                raise QueryError(f"at most {MAX_IDS} bodyIds per query, got {len(ids)}")
            object.__setattr__(self, "bodyId", tuple(check_id(v) for v in ids))
        if self.type is not None:
            types = _as_tuple(self.type)
            if not types or not all(isinstance(t, str) for t in types):
                raise QueryError(f"type must be a string or a list of strings, got {self.type!r}")
            pattern = TYPE_REGEX if self.regex else TYPE_TEXT
            for t in types:
                if not pattern.match(t):
                    raise QueryError(
                        f"type {t!r} has characters a cell type cannot have "
                        "(allowed: letters, digits, space and _.:+-/(),#"
                        + (", and regex operators ^$*?|[]{}\\" if self.regex else "")
                        + ")"
                    )
            if self.regex:
                if len(types) != 1:
                    raise QueryError("with regex=True, type must be a single pattern")
                try:
                    re.compile(types[0])
                except re.error as exc:
                    raise QueryError(f"type pattern {types[0]!r} is not a valid regex: {exc}") from None
            object.__setattr__(self, "type", types)
        if self.ei is not None and self.ei not in ("E", "I"):
            raise QueryError(f"ei must be 'E' or 'I', got {self.ei!r}")
        if self.kind is not None and self.kind not in ("neuron", "glia"):
            raise QueryError(f"kind must be 'neuron' or 'glia', got {self.kind!r}")
        for name in ("min_pre", "min_post"):
            value = getattr(self, name)
            if value is not None:
                check_count(value, name)
        if not isinstance(self.properties, Mapping):
            raise QueryError("properties must be a mapping of name to value")
        for key, value in self.properties.items():
            if not isinstance(key, str) or not PROPERTY_NAME.match(key) or key in NEURON_DERIVED + NEURON_BASE:
                raise QueryError(f"{key!r} is not a user property name (lower-case letters, digits, _)")
            if not isinstance(value, bool | int | float | str):
                raise QueryError(f"property {key!r} must be compared with a number, bool or text")
        object.__setattr__(self, "properties", dict(self.properties))

    @property
    def only_ids(self) -> bool:
        """True when the criteria are a plain id list (queries then skip the neuron table)."""
        return self.bodyId is not None and self == NeuronCriteria(bodyId=self.bodyId)

    def id_sql(self, column: str) -> tuple[str, list[Any]]:
        """``column`` restricted to :attr:`bodyId` (which must be set)."""
        ids = list(_as_tuple(self.bodyId)) if self.bodyId is not None else []
        if len(ids) == 1:
            return f"{column} = ?", ids
        return f"{column} IN (SELECT unnest(?::UBIGINT[]))", [ids]

    def to_sql(self, alias: str = "n") -> tuple[str, list[Any]]:
        """WHERE clause over ``neurons AS alias`` and its parameters ('TRUE' when empty)."""
        parts: list[str] = []
        params: list[Any] = []
        if self.bodyId is not None:
            sql, p = self.id_sql(f"{alias}.id")
            parts.append(sql)
            params += p
        if self.type is not None:
            types = list(self.type)
            if self.regex:
                parts.append(f"regexp_full_match({alias}.type, ?)")
                params.append(types[0])
            elif len(types) == 1:
                parts.append(f"{alias}.type = ?")
                params.append(types[0])
            else:
                parts.append(f"list_contains(?::VARCHAR[], {alias}.type)")
                params.append(types)
        for column, text in (("ei", self.ei), ("kind", self.kind)):
            if text is not None:
                parts.append(f"{alias}.{column} = ?")
                params.append(text)
        for column, count in (("n_pre", self.min_pre), ("n_post", self.min_post)):
            if count is not None:
                parts.append(f"{alias}.{column} >= ?")
                params.append(count)
        for key, value in self.properties.items():
            parts.append(f'{alias}."{key}" = ?')
            params.append(value)
        return (" AND ".join(parts) or "TRUE"), params

    def member_sql(self, column: str) -> tuple[str, list[Any]]:
        """``column`` (a neuron id column of another table) restricted to matching neurons."""
        if self.only_ids:
            return self.id_sql(column)
        where, params = self.to_sql("n")
        return f"{column} IN (SELECT n.id FROM neurons n WHERE {where})", params


def as_criteria(value: NeuronCriteria | int | Sequence[int] | None) -> NeuronCriteria | None:
    """Accept a criteria object, an id or a list of ids (as neuPrint does)."""
    if value is None or isinstance(value, NeuronCriteria):
        return value
    if isinstance(value, str):
        return NeuronCriteria(type=value)
    return NeuronCriteria(bodyId=value)  # type: ignore[arg-type]
