"""Queries on a connectome version, in neuPrint's vocabulary, returning DataFrames.

A :class:`Connectome` is the client: one DuckDB database (one version) of a
workspace.  Every ``fetch_*`` function takes it as the keyword-only
``client``; without one, the default client is used (the last one opened
with ``default=True`` or set by :func:`set_default_client`), as in
neuprint-python::

    c = Connectome("ws/", default=True)
    fetch_neurons(NeuronCriteria(type="PC", ei="E", min_post=20))
    fetch_adjacencies(NeuronCriteria(type="PC"), NeuronCriteria(type="BC"), min_weight=3)
    fetch_upstream(17, min_weight=2)

The SQL of each query comes from a pure ``*_query`` function (tested as exact
strings); values travel only as parameters.  Results are ordered, and
``limit``/``offset`` page through them.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from wiremap.connectome.criteria import (
    NeuronCriteria,
    QueryError,
    as_criteria,
    check_count,
    check_id,
)
from wiremap.connectome.schema import COMPARTMENTS, NEURON_BASE, NEURON_DERIVED, PROPERTY_NAME
from wiremap.connectome.tables import ensure_database, versions
from wiremap.errors import InputError, WorkspaceError
from wiremap.workspace import Workspace

Query = tuple[str, list[Any]]
F = TypeVar("F", bound=Callable[..., Any])
_default_client: Connectome | None = None


class Connectome:
    """Client of one connectome version of a workspace (read-only unless asked)."""

    def __init__(
        self,
        workspace: str | Workspace,
        *,
        version: int | None = None,
        read_only: bool = True,
        default: bool = False,
        threads: int | None = None,
    ) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self.path, self.version = ensure_database(self.ws, version)
        self.read_only = read_only
        config: dict[str, str | bool | int | float | list[str]] = {"threads": threads} if threads else {}
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only, config=config)
        except duckdb.IOException as exc:  # e.g. another process holds it open for writing
            raise WorkspaceError(f"cannot open connectome database {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._graphs: dict[int, tuple[csr_matrix, np.ndarray]] = {}
        self.neuron_columns = [r[0] for r in self._con.execute("DESCRIBE neurons").fetchall()]
        if default:
            set_default_client(self)

    def sql(self, query: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run one parameterised query in its own cursor (safe from several threads)."""
        cursor = self._con.cursor()
        try:
            return cursor.execute(query, params or []).df()
        except duckdb.InvalidInputException as exc:
            raise QueryError(f"query rejected: {exc}") from exc
        finally:
            cursor.close()

    @property
    def properties(self) -> list[str]:
        """Names of user property columns of the neuron table."""
        return [c for c in self.neuron_columns if c not in NEURON_BASE + NEURON_DERIVED]

    def check_criteria(self, criteria: NeuronCriteria | None) -> None:
        for key in criteria.properties if criteria else {}:
            if key not in self.properties:
                raise QueryError(f"unknown property {key!r} (known: {', '.join(self.properties) or 'none'})")

    def graph(self, min_weight: int) -> tuple[csr_matrix, np.ndarray]:
        """Sparse matrix of edge costs 1/weight over edges of at least ``min_weight``; cached."""
        with self._lock:
            if min_weight not in self._graphs:
                edges = self.sql("SELECT pre, post, weight FROM edges WHERE weight >= ?", [min_weight])
                ids = np.union1d(edges["pre"].to_numpy(), edges["post"].to_numpy())
                rows = np.searchsorted(ids, edges["pre"].to_numpy())
                cols = np.searchsorted(ids, edges["post"].to_numpy())
                cost = 1.0 / edges["weight"].to_numpy(dtype=np.float64)
                matrix = csr_matrix((cost, (rows, cols)), shape=(len(ids), len(ids)))
                self._graphs[min_weight] = (matrix, ids)
            return self._graphs[min_weight]

    def close(self) -> None:
        global _default_client
        if _default_client is self:
            _default_client = None
        self._con.close()

    def __enter__(self) -> Connectome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Connectome({self.ws.url!r}, version={self.version})"


def set_default_client(client: Connectome | None) -> None:
    global _default_client
    _default_client = client


def default_client() -> Connectome:
    if _default_client is None:
        raise InputError("no connectome client: pass client=Connectome(workspace) or open one with default=True")
    return _default_client


def inject_client(func: F) -> F:
    """Fill the keyword-only ``client`` argument with the default client when it is None."""

    @functools.wraps(func)
    def wrapper(*args: Any, client: Connectome | None = None, **kwargs: Any) -> Any:
        return func(*args, client=client or default_client(), **kwargs)

    return wrapper  # type: ignore[return-value]


def _page(sql: str, params: list[Any], limit: int | None, offset: int) -> Query:
    check_count(offset, "offset")
    if limit is not None:
        check_count(limit, "limit")
        return f"{sql} LIMIT ? OFFSET ?", [*params, limit, offset]
    if offset:
        return f"{sql} OFFSET ?", [*params, offset]
    return sql, params


# -- SQL builders (pure) -------------------------------------------------------
def neurons_query(criteria: NeuronCriteria | None = None, *, limit: int | None = None, offset: int = 0) -> Query:
    where, params = (criteria or NeuronCriteria()).to_sql("n")
    return _page(f"SELECT n.* FROM neurons n WHERE {where} ORDER BY n.id", params, limit, offset)


def synapses_query(
    sources: NeuronCriteria | None = None,
    targets: NeuronCriteria | None = None,
    *,
    ei: str | None = None,
    post_compartment: str | None = None,
    min_confidence: float | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Query:
    parts: list[str] = []
    params: list[Any] = []
    for column, criteria in (("s.pre", sources), ("s.post", targets)):
        if criteria is not None:
            sql, p = criteria.member_sql(column)
            parts.append(sql)
            params += p
    if ei is not None:
        if ei not in ("E", "I"):
            raise QueryError(f"ei must be 'E' or 'I', got {ei!r}")
        parts.append("s.ei = ?")
        params.append(ei)
    if post_compartment is not None:
        if post_compartment not in COMPARTMENTS[:-1]:
            raise QueryError(f"post_compartment must be one of {', '.join(COMPARTMENTS[:-1])}")
        parts.append("s.post_compartment = ?")
        params.append(post_compartment)
    if min_confidence is not None:
        if (
            isinstance(min_confidence, bool)
            or not isinstance(min_confidence, int | float)
            or not (0 <= min_confidence <= 1)
        ):
            raise QueryError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
        parts.append("s.confidence >= ?")
        params.append(float(min_confidence))
    where = " AND ".join(parts) or "TRUE"
    return _page(f"SELECT s.* FROM synapses s WHERE {where} ORDER BY s.id", params, limit, offset)


def adjacencies_query(
    sources: NeuronCriteria | None = None,
    targets: NeuronCriteria | None = None,
    *,
    min_weight: int = 1,
    limit: int | None = None,
    offset: int = 0,
) -> Query:
    parts = ["e.weight >= ?"]
    params: list[Any] = [check_count(min_weight, "min_weight")]
    for column, criteria in (("e.pre", sources), ("e.post", targets)):
        if criteria is not None:
            sql, p = criteria.member_sql(column)
            parts.append(sql)
            params += p
    sql = (
        "SELECT e.pre, e.post, e.weight, e.total_size, e.ei, "
        "a.type AS type_pre, b.type AS type_post "
        "FROM edges e JOIN neurons a ON a.id = e.pre JOIN neurons b ON b.id = e.post "
        f"WHERE {' AND '.join(parts)} ORDER BY e.weight DESC, e.pre, e.post"
    )
    return _page(sql, params, limit, offset)


def partners_query(body_id: int, direction: str, *, min_weight: int = 1, limit: int | None = None) -> Query:
    """Upstream (inputs of ``body_id``) or downstream (its outputs) partners, strongest first."""
    if direction not in ("upstream", "downstream"):
        raise QueryError(f"direction must be 'upstream' or 'downstream', got {direction!r}")
    mine, theirs = ("post", "pre") if direction == "upstream" else ("pre", "post")
    sql = (
        f"SELECT e.{theirs} AS partner, n.type, n.ei AS partner_ei, e.weight, e.total_size, e.ei "
        f"FROM edges e JOIN neurons n ON n.id = e.{theirs} "
        f"WHERE e.{mine} = ? AND e.weight >= ? ORDER BY e.weight DESC, partner"
    )
    return _page(sql, [check_id(body_id), check_count(min_weight, "min_weight")], limit, 0)


# -- fetch functions -------------------------------------------------------------
@inject_client
def fetch_neurons(
    criteria: NeuronCriteria | int | list[int] | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
    client: Connectome,
) -> pd.DataFrame:
    """Neurons matching ``criteria`` with their counts and properties, by id."""
    criteria = as_criteria(criteria)
    client.check_criteria(criteria)
    return client.sql(*neurons_query(criteria, limit=limit, offset=offset))


@inject_client
def fetch_synapses(
    sources: NeuronCriteria | int | list[int] | None = None,
    targets: NeuronCriteria | int | list[int] | None = None,
    *,
    ei: str | None = None,
    post_compartment: str | None = None,
    min_confidence: float | None = None,
    limit: int | None = None,
    offset: int = 0,
    client: Connectome,
) -> pd.DataFrame:
    """Synapses from ``sources`` onto ``targets`` (either may be None: any neuron), by id."""
    sources, targets = as_criteria(sources), as_criteria(targets)
    client.check_criteria(sources)
    client.check_criteria(targets)
    return client.sql(
        *synapses_query(
            sources,
            targets,
            ei=ei,
            post_compartment=post_compartment,
            min_confidence=min_confidence,
            limit=limit,
            offset=offset,
        )
    )


@inject_client
def fetch_adjacencies(
    sources: NeuronCriteria | int | list[int] | None = None,
    targets: NeuronCriteria | int | list[int] | None = None,
    min_weight: int = 1,
    *,
    limit: int | None = None,
    offset: int = 0,
    client: Connectome,
) -> pd.DataFrame:
    """Connections (pre, post, weight, total_size, ei, type_pre, type_post), strongest first."""
    sources, targets = as_criteria(sources), as_criteria(targets)
    client.check_criteria(sources)
    client.check_criteria(targets)
    return client.sql(*adjacencies_query(sources, targets, min_weight=min_weight, limit=limit, offset=offset))


@inject_client
def fetch_upstream(body_id: int, *, min_weight: int = 1, limit: int | None = None, client: Connectome) -> pd.DataFrame:
    """Neurons that synapse onto ``body_id``: partner, type, partner_ei, weight, total_size, ei."""
    return client.sql(*partners_query(body_id, "upstream", min_weight=min_weight, limit=limit))


@inject_client
def fetch_downstream(
    body_id: int, *, min_weight: int = 1, limit: int | None = None, client: Connectome
) -> pd.DataFrame:
    """Neurons that ``body_id`` synapses onto, strongest first."""
    return client.sql(*partners_query(body_id, "downstream", min_weight=min_weight, limit=limit))


@inject_client
def fetch_shortest_path(source: int, target: int, *, min_weight: int = 1, client: Connectome) -> pd.DataFrame:
    """The path from ``source`` to ``target`` of least total cost, where an edge costs
    1/weight (strong connections are short); edges below ``min_weight`` are ignored.

    Rows: step, id, type, ei, weight (of the edge into this neuron; 0 for the
    source), cost (accumulated).  Empty when there is no path.
    """
    source, target = check_id(source, "source"), check_id(target, "target")
    check_count(min_weight, "min_weight")
    matrix, ids = client.graph(min_weight)
    si, ti = np.searchsorted(ids, source), np.searchsorted(ids, target)
    columns = ["step", "id", "type", "ei", "weight", "cost"]
    if si >= len(ids) or ids[si] != source or ti >= len(ids) or ids[ti] != target:
        return pd.DataFrame(columns=columns)
    dist, pred = dijkstra(matrix, directed=True, indices=si, return_predecessors=True)
    if not np.isfinite(dist[ti]):
        return pd.DataFrame(columns=columns)
    chain = [int(ti)]
    while chain[-1] != si:
        chain.append(int(pred[chain[-1]]))
    chain.reverse()
    path_ids = [int(ids[i]) for i in chain]
    info = client.sql(
        "SELECT id, type, ei FROM neurons WHERE id IN (SELECT unnest(?::UBIGINT[]))", [path_ids]
    ).set_index("id")
    weights = [0] + [int(round(1.0 / matrix[a, b])) for a, b in zip(chain[:-1], chain[1:], strict=True)]
    return pd.DataFrame(
        {
            "step": np.arange(len(chain)),
            "id": np.array(path_ids, dtype=np.uint64),
            "type": [info.at[i, "type"] for i in path_ids],
            "ei": [info.at[i, "ei"] for i in path_ids],
            "weight": weights,
            "cost": dist[chain],
        }
    )


@inject_client
def fetch_versions(*, client: Connectome) -> pd.DataFrame:
    """The versions of the client's workspace (one row per build)."""
    return versions(client.ws)


@inject_client
def set_property(body_id: int, key: str, value: bool | int | float | str, *, client: Connectome) -> None:
    """Set user property ``key`` of one neuron in the client's database (needs ``read_only=False``).

    The edit changes this database at once, is logged in its
    ``property_edits`` table and appended to the workspace's
    ``tables/property_edits``, which every later build applies, so edits
    carry over into new versions.  A new property gets a column of the
    value's type.
    """
    if client.read_only:
        raise QueryError("this connectome is open read-only; open it with read_only=False to edit")
    body_id = check_id(body_id)
    if not isinstance(key, str) or not PROPERTY_NAME.match(key) or key in NEURON_BASE + NEURON_DERIVED:
        raise QueryError(f"{key!r} is not a user property name (lower-case letters, digits, _; not a built-in)")
    if isinstance(value, bool):
        sql_type = "BOOLEAN"
    elif isinstance(value, int):
        sql_type = "BIGINT"
    elif isinstance(value, float):
        sql_type = "DOUBLE"
    elif isinstance(value, str) and len(value) <= 1000:
        sql_type = "VARCHAR"
    else:
        raise QueryError("property values must be a bool, number or text of at most 1000 characters")
    with client._lock:
        cursor = client._con.cursor()
        try:
            if cursor.execute("SELECT count(*) FROM neurons WHERE id = ?", [body_id]).fetchone()[0] == 0:  # type: ignore[index]
                raise QueryError(f"no neuron {body_id} in version {client.version}")
            cursor.execute("BEGIN TRANSACTION")
            if key not in client.neuron_columns:
                cursor.execute(f'ALTER TABLE neurons ADD COLUMN "{key}" {sql_type}')
            try:
                cursor.execute(f'UPDATE neurons SET "{key}" = ? WHERE id = ?', [value, body_id])
            except duckdb.ConversionException as exc:
                cursor.execute("ROLLBACK")
                raise QueryError(f"property {key!r} cannot hold {value!r}: {exc}") from None
            edited = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            cursor.execute("INSERT INTO property_edits VALUES (?, ?, ?, ?)", [body_id, key, str(value), edited])
            cursor.execute("COMMIT")
            if key not in client.neuron_columns:
                client.neuron_columns.append(key)
        finally:
            cursor.close()
        # The workspace's edit log, which the next build applies (versions stay immutable).
        log = client.ws.read_table("property_edits") if client.ws.has_table("property_edits") else None
        row = pd.DataFrame(
            {
                "id": [body_id],
                "key": [key],
                "value": [json.dumps(value)],
                "type": [sql_type],
                "edited": [edited],
                "version": [client.version],
            }
        ).astype({"id": "uint64"})
        client.ws.write_table("property_edits", row if log is None else pd.concat([log, row]))
