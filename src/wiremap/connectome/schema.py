"""Columns of the connectome tables, and validation of tables that come from outside.

Coordinates are voxels of the workspace's image, in ``(z, y, x)``; ids are
segment ids (``uint64``, 0 is background and never a neuron).

``synapses``  one row per synaptic contact
    id (uint64), pre, post (uint64 neuron ids), z, y, x (float, voxels),
    nz, ny, nx (unit normal from pre to post, NaN if unknown), size (cleft
    voxels, NaN if unknown), ei ('E' | 'I' | ''), pre_compartment,
    post_compartment ('axon' | 'dendrite' | 'spine' | 'soma' | ''),
    confidence (0..1; 1 for ground truth)
``neurons``   one row per cell
    id, type, ei, kind, soma_z/y/x (NaN if the soma is outside), volume_um3,
    n_pre (output synapses, as neuPrint's ``pre``), n_post (input synapses),
    n_upstream / n_downstream (partner counts), n_post_dendrite / _spine /
    _soma (inputs by compartment), n_post_inhibitory, then user properties
``edges``     one row per connected ordered pair
    pre, post, weight (synapse count), total_size, ei (majority of synapses)

External tables are checked here so that a wrong file gets a message naming
the file, the column and an example row, not a traceback from DuckDB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wiremap.errors import InputError

MAX_ID = 2**64 - 1
SYNAPSE_REQUIRED = ("pre", "post", "z", "y", "x")
SYNAPSE_FLOAT = ("z", "y", "x", "nz", "ny", "nx", "size", "confidence", "ei_confidence", "partner_confidence")
SYNAPSE_TEXT = ("ei", "ei_synapse", "pre_compartment", "post_compartment")
SYNAPSE_COLUMNS = (
    "id",
    "pre",
    "post",
    *SYNAPSE_FLOAT[:6],
    "size",
    "ei",
    "pre_compartment",
    "post_compartment",
    "confidence",
    "ei_synapse",  # this synapse's own E/I call ('ei' is the presynaptic neuron's consensus)
    "ei_confidence",  # confidence of the E/I call, NaN when unknown
    "partner_confidence",  # confidence of the pre/post assignment, NaN when unknown
)
NEURON_BASE = ("id", "type", "ei", "kind", "soma_z", "soma_y", "soma_x", "volume_um3")
NEURON_DERIVED = (
    "n_pre",
    "n_post",
    "n_upstream",
    "n_downstream",
    "n_post_dendrite",
    "n_post_spine",
    "n_post_soma",
    "n_post_inhibitory",
)
EDGE_COLUMNS = ("pre", "post", "weight", "total_size", "ei")
EI_VALUES = ("E", "I", "")
COMPARTMENTS = ("axon", "dendrite", "spine", "soma", "")
#: Names user properties may have: they become column names (always quoted in SQL too).
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

#: Other spellings of our columns in neuPrint, CAVE and published tables.
SYNAPSE_ALIASES = {
    "bodyId_pre": "pre",
    "pre_pt_root_id": "pre",
    "pre_id": "pre",
    "presynaptic": "pre",
    "bodyId_post": "post",
    "post_pt_root_id": "post",
    "post_id": "post",
    "postsynaptic": "post",
    "synapse_id": "id",
    "compartment": "post_compartment",
}
NEURON_ALIASES = {"bodyId": "id", "body_id": "id", "cell_type": "type", "pt_root_id": "id"}


def read_external(path: str | Path, what: str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; a clear error if it is neither or is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path).to_pandas()
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (pa.ArrowInvalid, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{what} file {path} cannot be read: {exc}") from exc
    raise InputError(f"{what} file {path} must be .csv, .tsv or .parquet")


def _rename(df: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    renames = {a: c for a, c in aliases.items() if a in df.columns and c not in df.columns}
    return df.rename(columns=renames) if renames else df


def _ids(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """Column ``col`` as uint64 ids in 1..2**64-1, or an InputError naming a bad row."""
    s = df[col]
    if s.isna().any():
        row = int(np.flatnonzero(s.isna().to_numpy())[0])
        raise InputError(f"{source}: column {col!r} row {row} has no id")
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna() | (conv != conv.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{source}: column {col!r} must hold integer ids; row {row} has {s.iloc[row]!r}")
        s = conv
    if pd.api.types.is_float_dtype(s):
        bad = s.isna() | (s != s.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{source}: column {col!r} must hold integer ids; row {row} has {s.iloc[row]!r}")
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise InputError(f"{source}: column {col!r} must hold integer ids, found {s.dtype}")
    if pd.api.types.is_signed_integer_dtype(s) or pd.api.types.is_float_dtype(s):
        low = s <= 0
        if low.any():
            row = int(np.flatnonzero(low.to_numpy())[0])
            raise InputError(
                f"{source}: column {col!r} row {row} has id {s.iloc[row]} (ids must be >= 1; 0 is background)"
            )
        if pd.api.types.is_float_dtype(s) and (s > MAX_ID).any():
            raise InputError(f"{source}: column {col!r} has ids above 2**64-1")
    out = s.to_numpy().astype(np.uint64)
    if (out == 0).any():
        row = int(np.flatnonzero(out == 0)[0])
        raise InputError(f"{source}: column {col!r} row {row} has id 0 (0 is background, not a neuron)")
    return out


def _floats(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna() & s.notna()
        if bad.any() or pd.api.types.is_bool_dtype(s):
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise InputError(f"{source}: column {col!r} must be numeric; row {row} has {s.iloc[row]!r}")
        s = conv
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def _text(df: pd.DataFrame, col: str, allowed: Iterable[str] | None, source: str) -> pd.Series:
    """Column ``col`` as a categorical of strings ('' for missing), checked against ``allowed``.

    Categorical, because a 10-million-row column has a handful of distinct
    values: checks run on the categories and Arrow stores a dictionary.
    """
    s = df[col]
    cat = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")
    names = [str(c) for c in cat.cat.categories]
    if len(set(names)) != len(names):  # e.g. 1 and "1"
        cat = cat.astype(str).astype("category")
        names = [str(c) for c in cat.cat.categories]
    else:
        cat = cat.cat.rename_categories(names)
    if cat.isna().any():
        if "" not in names:
            cat = cat.cat.add_categories([""])
        cat = cat.fillna("")
    if allowed is not None:
        allowed = tuple(allowed)
        bad = [c for c in cat.cat.categories if c not in allowed]
        if bad:
            row = int(np.flatnonzero((cat == bad[0]).to_numpy())[0])
            raise InputError(
                f"{source}: column {col!r} row {row} has {bad[0]!r} (allowed: {', '.join(map(repr, allowed))})"
            )
    return cat.reset_index(drop=True)


def _text_array(values: pd.Series | list[str]) -> pa.Array:
    """Strings as an Arrow dictionary array (a categorical) or a plain string array."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        return pa.DictionaryArray.from_arrays(
            pa.array(values.cat.codes.to_numpy()),
            pa.array(list(values.cat.categories), pa.string()),
        )
    return pa.array(list(values), pa.string())


def normalise_synapses(df: pd.DataFrame, source: str) -> pa.Table:
    """Check a synapse table and return it with exactly :data:`SYNAPSE_COLUMNS`.

    Missing optional columns get neutral values (NaN, '' or confidence 1);
    missing ``id`` numbers the synapses 1..n in file order.
    """
    df = _rename(df, SYNAPSE_ALIASES)
    missing = [c for c in SYNAPSE_REQUIRED if c not in df.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)} (a synapse table needs "
            f"{', '.join(SYNAPSE_REQUIRED)}; has {', '.join(map(str, df.columns))})"
        )
    n = len(df)
    cols: dict[str, Any] = {}
    cols["id"] = _ids(df, "id", source) if "id" in df.columns else np.arange(1, n + 1, dtype=np.uint64)
    if len(np.unique(cols["id"])) != n:
        raise InputError(f"{source}: synapse ids are not unique")
    cols["pre"] = _ids(df, "pre", source)
    cols["post"] = _ids(df, "post", source)
    for c in SYNAPSE_FLOAT:
        if c in df.columns:
            cols[c] = _floats(df, c, source)
        else:
            cols[c] = np.full(n, 1.0 if c == "confidence" else np.nan)
    for c in ("z", "y", "x"):
        if np.isnan(cols[c]).any():
            raise InputError(f"{source}: column {c!r} has missing positions")
    for c in ("confidence", "ei_confidence", "partner_confidence"):
        if ((cols[c] < 0) | (cols[c] > 1)).any():  # NaN (unknown) compares False: allowed
            raise InputError(f"{source}: column {c!r} must lie in [0, 1]")
    empty = pd.Series(pd.Categorical.from_codes(np.zeros(n, np.int8), categories=[""]))
    for c in ("ei", "ei_synapse"):
        cols[c] = _text(df, c, EI_VALUES, source) if c in df.columns else empty
    for c in ("pre_compartment", "post_compartment"):
        cols[c] = _text(df, c, COMPARTMENTS, source) if c in df.columns else empty
    arrays = {c: _text_array(cols[c]) if c in SYNAPSE_TEXT else pa.array(cols[c]) for c in SYNAPSE_COLUMNS}
    return pa.table(arrays)


def normalise_neurons(df: pd.DataFrame, source: str) -> pa.Table:
    """Check a neuron table; returns :data:`NEURON_BASE` columns plus user properties.

    Derived columns (synapse counts) are dropped: the build recomputes them.
    User properties must have simple names (:data:`PROPERTY_NAME`) and
    numeric, boolean or text values.
    """
    df = _rename(df, NEURON_ALIASES)
    if "id" not in df.columns:
        raise InputError(f"{source}: missing column 'id' (or 'bodyId'); has {', '.join(map(str, df.columns))}")
    n = len(df)
    out: dict[str, pa.Array] = {"id": pa.array(_ids(df, "id", source))}
    if len(np.unique(out["id"].to_numpy())) != n:
        raise InputError(f"{source}: neuron ids are not unique")
    for c, allowed, default in (
        ("type", None, ""),
        ("ei", EI_VALUES, ""),
        ("kind", None, "neuron"),
    ):
        values = _text(df, c, allowed, source) if c in df.columns else [default] * n
        out[c] = pa.array(list(values), pa.string())
    for c in ("soma_z", "soma_y", "soma_x", "volume_um3"):
        out[c] = pa.array(_floats(df, c, source) if c in df.columns else np.full(n, np.nan))
    for c in df.columns:
        if c in out or c in NEURON_DERIVED:
            continue
        name = str(c)
        if not PROPERTY_NAME.match(name):
            raise InputError(f"{source}: property column {name!r} needs a name of lower-case letters, digits and _")
        s = df[c]
        if pd.api.types.is_bool_dtype(s):
            out[name] = pa.array(s.to_numpy(dtype=bool))
        elif pd.api.types.is_numeric_dtype(s):
            out[name] = pa.array(s.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            out[name] = pa.array(list(_text(df, name, None, source)), pa.string())
    return pa.table(out)


def check_known_ids(synapses: pa.Table, neurons: pa.Table, source: str) -> None:
    """Every synapse partner must be a row of the neuron table."""
    known = neurons.column("id")
    for col in ("pre", "post"):
        ids = synapses.column(col)
        unknown = pc.invert(pc.is_in(ids, value_set=known))
        if pc.any(unknown).as_py():
            first = int(pc.indices_nonzero(unknown)[0].as_py())
            count = pc.sum(unknown).as_py()
            raise InputError(
                f"{source}: {count} synapse(s) name a {col} id not in the neuron table "
                f"(first: row {first}, id {ids[first].as_py()})"
            )
