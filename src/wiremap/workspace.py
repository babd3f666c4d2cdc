"""A workspace: everything one run of wiremap reads and writes, in one place.

A workspace is a local directory or a cloud URL (``file://``, ``s3://``,
``gs://``, or ``memory://`` for tests), opened through a TensorStore
key-value store so that the same code runs against a laptop disk and a
bucket.  Keys are ``/``-separated paths relative to the workspace root::

    wiremap.toml            workspace config (validated, see ``config.py``)
    layers/<name>/          Neuroglancer precomputed volumes (``volume.py``)
    tables/<name>.parquet   Parquet tables
    provenance/<stage>.json what produced each stage's outputs, and when
    blocks/<stage>/         done-markers of blockwise work (``blockwise.py``)
    groundtruth/            answers, for synthetic tissue only

Writes of one key are atomic (the file driver writes a temporary file and
renames it; object stores replace whole objects), so a reader never sees a
half-written table or JSON document.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorstore as ts

from wiremap import __version__
from wiremap.config import WorkspaceConfig, dump_toml, load_toml
from wiremap.errors import LayerExistsError, LayerNotFoundError, WorkspaceError

CONFIG_KEY = "wiremap.toml"
T = TypeVar("T")

#: Stages of the pipeline in order; ``status`` reports each as done, stale or missing.
PIPELINE_STAGES = (
    "synth",
    "stitch",
    "align",
    "segment",
    "synapses",
    "mesh",
    "skeletonize",
    "connectome",
)


def kvstore_spec(url: str) -> dict[str, Any]:
    """TensorStore kvstore spec of a workspace URL or local path.

    ``s3://`` honours ``AWS_ENDPOINT_URL`` (or ``WIREMAP_S3_ENDPOINT``) for
    S3-compatible servers and ``AWS_REGION``; credentials come from the usual
    AWS environment variables.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        path = parsed.path if scheme == "file" else url
        if scheme == "file" and parsed.netloc:
            raise WorkspaceError(f"file URL must be file:///absolute/path, got {url!r}")
        if not path:
            raise WorkspaceError(f"workspace path is empty: {url!r}")
        return {"driver": "file", "path": str(Path(path).expanduser().absolute()) + "/"}
    prefix = parsed.path.strip("/")
    prefix = prefix + "/" if prefix else ""
    if scheme in ("s3", "gs"):
        if not parsed.netloc:
            raise WorkspaceError(f"{scheme}:// URL needs a bucket name: {url!r}")
        if scheme == "gs":
            return {"driver": "gcs", "bucket": parsed.netloc, "path": prefix}
        spec: dict[str, Any] = {"driver": "s3", "bucket": parsed.netloc, "path": prefix}
        endpoint = os.environ.get("WIREMAP_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            spec["endpoint"] = endpoint
        spec["aws_region"] = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            # Keys in the environment: use them directly instead of the default chain, which
            # also probes ~/.aws/config and logs errors on every open when that file is absent.
            spec["aws_credentials"] = {"type": "environment"}
        return spec
    if scheme == "memory":
        return {"driver": "memory", "path": (parsed.netloc + "/" + prefix).strip("/") + "/"}
    raise WorkspaceError(
        f"unsupported workspace URL scheme {scheme!r} in {url!r} (use a local path, file://, s3://, gs:// or memory://)"
    )


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key:
        raise WorkspaceError(f"invalid workspace key {key!r}")
    return key


@dataclass(frozen=True)
class StageStatus:
    """One pipeline stage as ``wiremap status`` reports it."""

    stage: str
    state: str  # "done" | "stale" | "missing"
    finished: str | None  # ISO time of the last run
    reason: str = ""


class Workspace:
    """Key-value access to one workspace; see the module docstring for the layout."""

    def __init__(self, url: str, kvstore: ts.KvStore, config: WorkspaceConfig) -> None:
        self.url = url
        self.kvstore = kvstore
        self.config = config

    # -- opening ----------------------------------------------------------------
    @classmethod
    def create(cls, url: str, *, exist_ok: bool = False, name: str | None = None) -> Workspace:
        """Create a new workspace at ``url`` (or open it if ``exist_ok`` and it exists)."""
        ws = cls(url, _open_kvstore(url), WorkspaceConfig(name=name or _default_name(url), wiremap_version=__version__))
        if ws.exists(CONFIG_KEY):
            if exist_ok:
                return cls.open(url)
            raise LayerExistsError(f"a workspace already exists at {url}")
        ws.write_bytes(CONFIG_KEY, dump_toml(ws.config.to_toml_dict()).encode())
        return ws

    @classmethod
    def open(cls, url: str) -> Workspace:
        """Open an existing workspace; a clear error if there is none at ``url``."""
        kv = _open_kvstore(url)
        raw = _io(lambda: kv.read(CONFIG_KEY).result(), url, CONFIG_KEY)
        if raw.state != "value":
            raise WorkspaceError(f"no wiremap workspace at {url} (run `wiremap init {url}` first)")
        config = WorkspaceConfig.from_toml_dict(load_toml(bytes(raw.value).decode(), CONFIG_KEY))
        return cls(url, kv, config)

    def child_spec(self, prefix: str) -> dict[str, Any]:
        """kvstore spec of a sub-path, for TensorStore drivers that open it themselves."""
        spec = kvstore_spec(self.url)
        spec["path"] = spec["path"] + _check_key(prefix).rstrip("/") + "/"
        return spec

    # -- bytes ------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        result = _io(lambda: self.kvstore.read(_check_key(key)).result(), self.url, key)
        if result.state != "value":
            raise LayerNotFoundError(f"{key} not found in workspace {self.url}")
        return bytes(result.value)

    def write_bytes(self, key: str, data: bytes) -> None:
        _io(lambda: self.kvstore.write(_check_key(key), data).result(), self.url, key)

    def exists(self, key: str) -> bool:
        return _io(lambda: self.kvstore.read(_check_key(key)).result(), self.url, key).state == "value"

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (sorted)."""
        if prefix:
            _check_key(prefix)
            keys = _io(
                lambda: self.kvstore.list(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result(), self.url, prefix
            )
        else:
            keys = _io(lambda: self.kvstore.list().result(), self.url, "")
        return sorted(k.decode() for k in keys)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (a layer, a stage's markers)."""
        _check_key(prefix)
        _io(lambda: self.kvstore.delete_range(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result(), self.url, prefix)

    # -- JSON and tables --------------------------------------------------------
    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_bytes(key))
        except json.JSONDecodeError as exc:
            raise WorkspaceError(f"{key} in {self.url} is not valid JSON: {exc}") from exc

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())

    @staticmethod
    def table_key(name: str) -> str:
        """``"neurons"`` -> ``tables/neurons.parquet``; a key ending in .parquet is kept."""
        return name if name.endswith(".parquet") else f"tables/{name}.parquet"

    def write_table(self, name: str, df: pd.DataFrame | pa.Table) -> None:
        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(self.table_key(name), sink.getvalue())

    def read_table(self, name: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        key = self.table_key(name)
        try:
            return pq.read_table(io.BytesIO(self.read_bytes(key)), columns=columns).to_pandas()
        except pa.ArrowInvalid as exc:
            raise WorkspaceError(f"{key} in {self.url} is not a readable Parquet table: {exc}") from exc

    def has_table(self, name: str) -> bool:
        return self.exists(self.table_key(name))

    def tables(self) -> builtins.list[str]:
        return [k[len("tables/") : -len(".parquet")] for k in self.list("tables/") if k.endswith(".parquet")]

    # -- layers -----------------------------------------------------------------
    def layers(self) -> builtins.list[str]:
        """Names of precomputed layers (directories under ``layers/`` with an ``info``)."""
        return sorted(k.split("/")[1] for k in self.list("layers/") if k.count("/") == 2 and k.endswith("/info"))

    @staticmethod
    def layer_key(name: str) -> str:
        """``"aligned"`` -> ``layers/aligned``; a name with a ``/`` is a key already
        (e.g. ``groundtruth/neurons``, where synthetic tissue keeps its answers)."""
        return _check_key(name.rstrip("/")) if "/" in name else f"layers/{_check_key(name)}"

    def has_layer(self, name: str) -> bool:
        return self.exists(f"{self.layer_key(name)}/info")

    # -- provenance -------------------------------------------------------------
    def write_provenance(
        self,
        stage: str,
        *,
        parameters: dict[str, Any],
        inputs: builtins.list[str],
        outputs: builtins.list[str],
    ) -> dict[str, Any]:
        """Record that ``stage`` finished: its parameters, input/output names, version and time."""
        record = {
            "stage": stage,
            "parameters": parameters,
            "inputs": inputs,
            "outputs": outputs,
            "wiremap_version": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "finished_unix": time.time(),
        }
        self.write_json(f"provenance/{stage}.json", record)
        return record

    def provenance(self, stage: str) -> dict[str, Any] | None:
        key = f"provenance/{stage}.json"
        return self.read_json(key) if self.exists(key) else None

    def stage_status(self) -> builtins.list[StageStatus]:
        """Each known stage (and any other with provenance): done, stale or missing.

        A stage is stale when a stage that produced one of its inputs finished
        after it did, so its outputs no longer follow from what is there now.
        """
        records = {
            k[len("provenance/") : -len(".json")]: self.read_json(k)
            for k in self.list("provenance/")
            if k.endswith(".json")
        }
        producer = {out: rec for rec in records.values() for out in rec.get("outputs", [])}
        stages = list(PIPELINE_STAGES) + sorted(set(records) - set(PIPELINE_STAGES))
        report = []
        for stage in stages:
            rec = records.get(stage)
            if rec is None:
                report.append(StageStatus(stage, "missing", None))
                continue
            newer = [
                name
                for name in rec.get("inputs", [])
                if name in producer and producer[name]["finished_unix"] > rec["finished_unix"]
            ]
            if newer:
                reason = "inputs changed since: " + ", ".join(newer)
                report.append(StageStatus(stage, "stale", rec["finished"], reason))
            else:
                report.append(StageStatus(stage, "done", rec["finished"]))
        return report


def _open_kvstore(url: str) -> ts.KvStore:
    try:
        return ts.KvStore.open(kvstore_spec(url)).result()
    except ValueError as exc:  # TensorStore reports unreachable or malformed stores as ValueError
        raise WorkspaceError(f"cannot open workspace {url}: {exc}") from exc


def _io(operation: Callable[[], T], url: str, key: str) -> T:
    """Run one storage operation; storage failures (no such bucket, no permission) become WorkspaceError."""
    try:
        return operation()
    except ValueError as exc:  # TensorStore reports storage errors as ValueError
        raise WorkspaceError(f"storage error at {url} ({key or 'listing'}): {exc}") from exc


def _default_name(url: str) -> str:
    return Path(urlparse(url).path.rstrip("/") or url).name or "workspace"


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays and paths, which provenance often carries."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
