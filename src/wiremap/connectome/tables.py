"""Build the connectome tables and their DuckDB database, as numbered versions.

A build takes a synapse table (and optionally a neuron table), derives
``edges`` and the per-neuron counts in DuckDB (columnar, multi-threaded,
spilling to disk when needed), and writes::

    connectome/v<N>/{neurons,synapses,edges}.parquet   immutable version N
    connectome/v<N>/manifest.json                      what, when, from where
    tables/{neurons,synapses,edges}.parquet            the latest version
    tables/versions.parquet                            one row per version
    connectome.duckdb                                  the latest, for queries

Versions are never rewritten, so an analysis can cite "v3" and get the same
answers later.  ``connectome.duckdb`` sits at the root of a local workspace;
for a cloud workspace it is built in a local cache directory
(``$WIREMAP_CACHE`` or ``~/.cache/wiremap``) because DuckDB needs a file.
Each database is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wiremap import __version__
from wiremap.connectome.schema import (
    NEURON_BASE,
    NEURON_DERIVED,
    PROPERTY_NAME,
    check_known_ids,
    normalise_neurons,
    normalise_synapses,
)
from wiremap.errors import InputError, LayerNotFoundError
from wiremap.workspace import Workspace

TABLES = ("neurons", "synapses", "edges")
DB_NAME = "connectome.duckdb"


@dataclass(frozen=True)
class BuildSettings:
    """How DuckDB may use the machine during a build."""

    threads: int = 2  # worker threads of DuckDB
    memory_limit: str = "4GB"  # DuckDB spills to disk beyond this


def local_root(ws: Workspace) -> Path | None:
    """The directory of a local (``file``) workspace, else None."""
    spec = ws.kvstore.spec().to_json()
    return Path(spec["path"]) if spec.get("driver") == "file" else None


def cache_dir(ws: Workspace) -> Path:
    """Local directory for the DuckDB files of a cloud workspace."""
    base = Path(os.environ.get("WIREMAP_CACHE", Path.home() / ".cache" / "wiremap"))
    return base / "duckdb" / hashlib.sha1(ws.url.encode()).hexdigest()[:16]


def db_path(ws: Workspace, version: int) -> Path:
    """Where the DuckDB database of ``version`` lives (latest: ``connectome.duckdb``)."""
    root = local_root(ws)
    if root is None:
        return cache_dir(ws) / f"v{version}.duckdb"
    if version == latest_version(ws):
        return root / DB_NAME
    return root / "connectome" / f"v{version}" / DB_NAME


def versions(ws: Workspace) -> pd.DataFrame:
    """One row per build: version, created, source, n_neurons, n_synapses, n_edges, note."""
    if not ws.has_table("versions"):
        return pd.DataFrame(
            {
                "version": pd.Series(dtype="int64"),
                "created": pd.Series(dtype=str),
                "source": pd.Series(dtype=str),
                "n_neurons": pd.Series(dtype="int64"),
                "n_synapses": pd.Series(dtype="int64"),
                "n_edges": pd.Series(dtype="int64"),
                "wiremap_version": pd.Series(dtype=str),
                "note": pd.Series(dtype=str),
            }
        )
    return ws.read_table("versions")


def latest_version(ws: Workspace) -> int | None:
    v = versions(ws)
    return int(v["version"].max()) if len(v) else None


def _quote(path: Path) -> str:
    """A local path as a SQL string literal (DuckDB's COPY/SET take no parameters)."""
    return "'" + path.as_posix().replace("'", "''") + "'"


def _connect(path: Path | str, settings: BuildSettings) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute(f"SET threads = {int(settings.threads)}")
    con.execute("SET memory_limit = ?", [settings.memory_limit])
    con.execute("SET preserve_insertion_order = false")
    return con


def _derive(con: duckdb.DuckDBPyConnection, has_neurons: bool, extra: list[str]) -> None:
    """Create ``synapses``, ``edges`` and ``neurons`` from registered ``syn_in``/``neu_in``."""
    con.execute(
        """
        CREATE TABLE synapses AS
        SELECT s.id, s.pre, s.post, s.z, s.y, s.x, s.nz, s.ny, s.nx, s.size,
               CASE WHEN s.ei <> '' THEN s.ei ELSE coalesce(n.ei, '') END AS ei,
               s.pre_compartment, s.post_compartment, s.confidence,
               s.ei_synapse, s.ei_confidence, s.partner_confidence
        FROM syn_in s LEFT JOIN (SELECT id, ei FROM {neu}) n ON s.pre = n.id
        ORDER BY s.pre, s.post
        """.format(neu="neu_in" if has_neurons else "(SELECT NULL::UBIGINT AS id, NULL::VARCHAR AS ei)")
    )
    con.execute(
        """
        CREATE TABLE edges AS
        SELECT pre, post, count(*)::BIGINT AS weight, sum(size) AS total_size,
               CASE WHEN count_if(ei = 'I') > count_if(ei = 'E') THEN 'I'
                    WHEN count_if(ei = 'E') > 0 THEN 'E' ELSE '' END AS ei
        FROM synapses GROUP BY pre, post ORDER BY pre, post
        """
    )
    base = (
        "n.id, n.type, n.ei, n.kind, n.soma_z, n.soma_y, n.soma_x, n.volume_um3"
        if has_neurons
        else "ids.id, '' AS type, '' AS ei, 'neuron' AS kind, NULL::DOUBLE AS soma_z, "
        "NULL::DOUBLE AS soma_y, NULL::DOUBLE AS soma_x, NULL::DOUBLE AS volume_um3"
    )
    source = "neu_in n" if has_neurons else "(SELECT pre AS id FROM edges UNION SELECT post AS id FROM edges) ids"
    idcol = "n.id" if has_neurons else "ids.id"
    props = "".join(f', n."{c}"' for c in extra)
    con.execute(
        f"""
        CREATE TABLE neurons AS
        WITH outs AS (SELECT pre AS id, sum(weight) AS n_pre, count(*) AS n_downstream
                      FROM edges GROUP BY pre),
             ins AS (SELECT post AS id, sum(weight) AS n_post, count(*) AS n_upstream
                     FROM edges GROUP BY post),
             comp AS (SELECT post AS id,
                             count_if(post_compartment = 'dendrite') AS n_post_dendrite,
                             count_if(post_compartment = 'spine') AS n_post_spine,
                             count_if(post_compartment = 'soma') AS n_post_soma,
                             count_if(ei = 'I') AS n_post_inhibitory
                      FROM synapses GROUP BY post)
        SELECT {base},
               coalesce(outs.n_pre, 0)::BIGINT AS n_pre, coalesce(ins.n_post, 0)::BIGINT AS n_post,
               coalesce(ins.n_upstream, 0)::BIGINT AS n_upstream,
               coalesce(outs.n_downstream, 0)::BIGINT AS n_downstream,
               coalesce(comp.n_post_dendrite, 0)::BIGINT AS n_post_dendrite,
               coalesce(comp.n_post_spine, 0)::BIGINT AS n_post_spine,
               coalesce(comp.n_post_soma, 0)::BIGINT AS n_post_soma,
               coalesce(comp.n_post_inhibitory, 0)::BIGINT AS n_post_inhibitory{props}
        FROM {source}
        LEFT JOIN outs ON outs.id = {idcol}
        LEFT JOIN ins ON ins.id = {idcol}
        LEFT JOIN comp ON comp.id = {idcol}
        ORDER BY {idcol}
        """
    )


def _apply_property_edits(ws: Workspace, con: duckdb.DuckDBPyConnection) -> int:
    """Apply ``tables/property_edits`` (the last value per neuron and key); returns edits applied."""
    if not ws.has_table("property_edits"):
        return 0
    edits = ws.read_table("property_edits")
    edits = edits.drop_duplicates(["id", "key"], keep="last")
    columns = {r[0] for r in con.execute("DESCRIBE neurons").fetchall()}
    applied = 0
    for key, group in edits.groupby("key", sort=True):
        sql_type = str(group["type"].iloc[-1])
        if not PROPERTY_NAME.match(str(key)) or sql_type not in ("BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR"):
            continue  # not written by set_property; ignore rather than trust it in SQL
        if key not in columns:
            con.execute(f'ALTER TABLE neurons ADD COLUMN "{key}" {sql_type}')
        values = pd.DataFrame({"id": group["id"].astype("uint64"), "value": [json.loads(v) for v in group["value"]]})
        if sql_type == "VARCHAR":
            values["value"] = values["value"].astype(str)
        con.register("edit_values", values)
        con.execute(
            f'UPDATE neurons SET "{key}" = CAST(v.value AS {sql_type}) FROM edit_values v WHERE neurons.id = v.id'
        )
        con.unregister("edit_values")
        applied += len(group)
    return applied


def _index(con: duckdb.DuckDBPyConnection) -> None:
    """Indexes for point lookups by partner; ``pre`` lookups use the sort order's zone maps."""
    con.execute("CREATE UNIQUE INDEX neurons_id ON neurons (id)")
    con.execute("CREATE INDEX edges_post ON edges (post)")
    con.execute("CREATE INDEX synapses_post ON synapses (post)")


def _write_meta(con: duckdb.DuckDBPyConnection, version: int, record: dict[str, Any]) -> None:
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute(
        "INSERT INTO meta VALUES ('version', ?), ('manifest', ?)",
        [str(version), json.dumps(record)],
    )
    con.execute("CREATE TABLE property_edits (id UBIGINT, key VARCHAR, value VARCHAR, edited VARCHAR)")


def _export_parquet(ws: Workspace, con: duckdb.DuckDBPyConnection, table: str, key: str, tmp: Path) -> None:
    """COPY a DuckDB table to Parquet and put it at ``key`` (atomically on local disks)."""
    root = local_root(ws)
    target = (root / key) if root is not None else tmp / (table + ".parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    con.execute(f"COPY {table} TO {_quote(part)} (FORMAT parquet, COMPRESSION zstd)")
    if root is not None:
        os.replace(part, target)
    else:
        ws.write_bytes(key, part.read_bytes())
        part.unlink()


def build(
    ws: Workspace,
    *,
    synapses: pd.DataFrame | None = None,
    neurons: pd.DataFrame | None = None,
    source: str | None = None,
    note: str = "",
    settings: BuildSettings | None = None,
    inputs: list[str] | None = None,
) -> dict[str, Any]:
    """Build the next connectome version; returns its manifest.

    Without ``synapses`` the workspace's ``tables/synapses`` is used (with
    ``tables/neurons`` when present), as written by the synapse stage or a
    previous build.  Given tables are validated first (missing columns,
    wrong types, ids that are not neurons: :class:`InputError`), so nothing
    is written for a bad input.  ``inputs`` names what the provenance
    record lists as this stage's inputs (default: the workspace tables).
    """
    settings = settings or BuildSettings()
    if synapses is None:
        if not ws.has_table("synapses"):
            raise LayerNotFoundError(
                f"no tables/synapses in {ws.url}: run the synapse stage, or `wiremap connectome import` a synapse table"
            )
        synapses = read_table_compact(ws, "tables/synapses.parquet")
        if neurons is None and ws.has_table("neurons"):
            neurons = read_table_compact(ws, "tables/neurons.parquet")
        source = source or "tables/synapses"
    source = source or "dataframe"
    syn = normalise_synapses(synapses, f"synapse table ({source})")
    neu = normalise_neurons(neurons, f"neuron table ({source})") if neurons is not None else None
    if neu is not None:
        check_known_ids(syn, neu, f"synapse table ({source})")
    extra = [c for c in (neu.column_names if neu is not None else []) if c not in NEURON_BASE]
    extra = [c for c in extra if c not in NEURON_DERIVED]

    version = (latest_version(ws) or 0) + 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wiremap-connectome-") as tmpdir:
        tmp = Path(tmpdir)
        db_file = tmp / DB_NAME
        con = _connect(db_file, settings)
        con.execute(f"SET temp_directory = {_quote(tmp / 'spill')}")
        con.register("syn_in", syn)
        if neu is not None:
            con.register("neu_in", neu)
        del syn
        _derive(con, neu is not None, extra)
        edits = _apply_property_edits(ws, con)
        con.unregister("syn_in")
        if neu is not None:
            con.unregister("neu_in")
        counts = {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]
        record = {
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "created_unix": time.time(),
            "source": source,
            "n_neurons": counts["neurons"],
            "n_synapses": counts["synapses"],
            "n_edges": counts["edges"],
            "wiremap_version": __version__,
            "note": note,
            "property_edits_applied": edits,
        }
        for table in TABLES:
            _export_parquet(ws, con, table, f"connectome/v{version}/{table}.parquet", tmp)
        _index(con)
        _write_meta(con, version, record)
        con.execute("CHECKPOINT")
        con.close()
        record["build_seconds"] = round(time.perf_counter() - t0, 3)
        ws.write_json(f"connectome/v{version}/manifest.json", record)
        for table in TABLES:
            _copy_key(ws, f"connectome/v{version}/{table}.parquet", f"tables/{table}.parquet")
        table = versions(ws)
        row = pd.DataFrame([{k: record[k] for k in table.columns}])
        ws.write_table("versions", pd.concat([table, row], ignore_index=True) if len(table) else row)
        target = db_path(ws, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.move(str(db_file), staged)
        os.replace(staged, target)
    ws.write_provenance(
        "connectome",
        parameters={"version": version, "source": source, "note": note},
        inputs=inputs or ["tables/synapses"] + (["tables/neurons"] if neurons is not None else []),
        outputs=[f"connectome/v{version}", "tables/neurons", "tables/synapses", "tables/edges"],
    )
    return record


def read_table_compact(ws: Workspace, key: str) -> pd.DataFrame:
    """A Parquet table as a DataFrame with text columns as categoricals (compact for big tables)."""
    root = local_root(ws)
    try:
        source = root / key if root is not None else pa.BufferReader(ws.read_bytes(key))
        return pq.read_table(source).to_pandas(strings_to_categorical=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{key} in {ws.url} is not a readable Parquet table: {exc}") from exc


def _copy_key(ws: Workspace, src: str, dst: str) -> None:
    root = local_root(ws)
    if root is not None:
        part = root / (dst + f".{os.getpid()}.tmp")
        part.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / src, part)
        os.replace(part, root / dst)
    else:
        ws.write_bytes(dst, ws.read_bytes(src))


def ensure_database(ws: Workspace, version: int | None = None) -> tuple[Path, int]:
    """Path of a DuckDB database of ``version`` (default latest), built from Parquet if absent."""
    latest = latest_version(ws)
    if latest is None:
        raise LayerNotFoundError(f"no connectome in {ws.url}: run `wiremap connectome build` first")
    version = latest if version is None else int(version)
    if not ws.exists(f"connectome/v{version}/manifest.json"):
        raise InputError(f"connectome version {version} does not exist in {ws.url} (latest: v{latest})")
    path = db_path(ws, version)
    if path.exists() and _db_version(path) == version:
        return path, version
    record = ws.read_json(f"connectome/v{version}/manifest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wiremap-connectome-") as tmpdir:
        tmp = Path(tmpdir) / DB_NAME
        con = _connect(tmp, BuildSettings())
        for table in TABLES:
            data = pq.read_table(pa.BufferReader(ws.read_bytes(f"connectome/v{version}/{table}.parquet")))
            con.register("src", data)
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM src")
            con.unregister("src")
        _index(con)
        _write_meta(con, version, record)
        con.execute("CHECKPOINT")
        con.close()
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.move(str(tmp), staged)
        os.replace(staged, path)
    return path, version


def _db_version(path: Path) -> int | None:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else None
    except duckdb.Error:
        return None
    finally:
        con.close()


def segment_volumes(ws: Workspace, layer: str, slab: int = 16) -> pd.DataFrame:
    """Volume (um^3) of every segment of a label layer: id, volume_um3 (read in z-slabs)."""
    import fastremap

    from wiremap.roi import Roi
    from wiremap.volume import Layer

    labels = Layer(ws, layer)
    shape = labels.info.shape_zyx
    counts: dict[int, int] = {}
    for z0 in range(0, shape[0], slab):
        roi = Roi((z0, 0, 0), (min(slab, shape[0] - z0), shape[1], shape[2]))
        ids, n = fastremap.unique(labels.read(roi), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist(), strict=True):
            if i:
                counts[i] = counts.get(i, 0) + c
    voxel_um3 = float(np.prod(labels.info.resolution_nm)) * 1e-9
    return pd.DataFrame(
        {
            "id": np.fromiter(counts.keys(), np.uint64, len(counts)),
            "volume_um3": np.fromiter(counts.values(), np.float64, len(counts)) * voxel_um3,
        }
    )


def import_groundtruth(ws: Workspace, *, note: str = "") -> dict[str, Any]:
    """Build a version from a synthetic workspace's answers (``groundtruth/*.parquet``);
    neuron volumes come from ``groundtruth/neurons`` when that layer is there."""
    for key in ("groundtruth/synapses.parquet", "groundtruth/cells.parquet"):
        if not ws.exists(key):
            raise LayerNotFoundError(f"{key} not found in {ws.url} (is it a `wiremap synth` workspace?)")
    syn = read_table_compact(ws, "groundtruth/synapses.parquet")
    cells = read_table_compact(ws, "groundtruth/cells.parquet")
    if "confidence" not in syn.columns:
        syn["confidence"] = 1.0
    if ws.has_layer("groundtruth/neurons") and "volume_um3" not in cells.columns:
        volumes = segment_volumes(ws, "groundtruth/neurons")
        cells = cells.merge(volumes, on="id", how="left", validate="one_to_one")
    inputs = ["groundtruth/synapses", "groundtruth/cells"]
    inputs += ["groundtruth/neurons"] if ws.has_layer("groundtruth/neurons") else []
    return build(ws, synapses=syn, neurons=cells, source="groundtruth", note=note, inputs=inputs)
