"""Connectome build, queries and HTTP API at scale, against plain pandas in the same run.

A synthetic connectome (tables only): ``n_types`` types of equal size (80 %
excitatory), each neuron with ``partners`` output partners drawn mostly from
a few "preferred" types, and a geometric number of synapses per connection
(mean 5), so 100,000 neurons have about 10 million synapses.

Measured:
* ``build``: ``wiremap.connectome.build`` from ``tables/synapses`` +
  ``tables/neurons`` in a fresh process limited to 2 cores and 2 DuckDB
  threads: seconds and peak RSS (what the issue bounds: 5 min, 6 GB);
* partner lookup of one neuron (``fetch_upstream`` / ``fetch_downstream``)
  over random neurons: p50/p95 ms, vs a pandas boolean-mask filter of the
  edge table held in memory;
* ``fetch_adjacencies`` between two types (``per_type`` neurons each) vs a
  pandas ``isin`` filter;
* the HTTP API (uvicorn, one process) under a bounded load test on 127.0.0.1:
  one client (service time), then ``clients`` concurrent clients for
  ``seconds`` (latency includes queueing; the load generator shares the
  machine's cores): p50/p95/p99 latency, requests/s, errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wiremap.connectome import (
    Connectome,
    NeuronCriteria,
    fetch_adjacencies,
    fetch_downstream,
    fetch_upstream,
)
from wiremap.workspace import Workspace

FULL = {
    "neurons": 100_000,
    "types": 100,
    "partners": 20,
    "clients": 50,
    "seconds": 30.0,
    "lookups": 300,
}
QUICK = {
    "neurons": 4_000,
    "types": 4,
    "partners": 20,
    "clients": 10,
    "seconds": 4.0,
    "lookups": 100,
}


def synthetic_tables(n: int, n_types: int, partners: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Neuron and synapse tables (Arrow) of a typed random connectome; see the module docstring."""
    rng = np.random.default_rng(seed)
    per_type = n // n_types
    ids = np.arange(1, n + 1, dtype=np.uint64)
    ntype = np.arange(n) // per_type % n_types
    type_ei = np.where(np.arange(n_types) % 5 == 4, "I", "E")
    neurons = pa.table(
        {
            "id": ids,
            "type": pa.array([f"T{t:03d}" for t in ntype]).dictionary_encode(),
            "ei": pa.array(type_ei[ntype]).dictionary_encode(),
            "soma_z": rng.uniform(0, 1000, n),
            "soma_y": rng.uniform(0, 1e5, n),
            "soma_x": rng.uniform(0, 1e5, n),
        }
    )
    pre = np.repeat(np.arange(n), partners)
    preferred = (ntype[pre] + rng.choice([1, 2, 3, n_types // 2], size=pre.size, p=[0.4, 0.3, 0.2, 0.1])) % n_types
    post = preferred * per_type + rng.integers(0, per_type, pre.size)
    keep = post != pre
    pre, post = pre[keep], post[keep]
    edges = np.unique(pre.astype(np.int64) * n + post)  # distinct ordered pairs
    pre, post = edges // n, edges % n
    weights = rng.geometric(0.2, size=pre.size)
    spre, spost = np.repeat(pre, weights), np.repeat(post, weights)
    m = spre.size
    normal = rng.normal(size=(m, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    ei_codes = (type_ei[ntype[spre]] == "I").astype(np.int8)
    comp_codes = rng.choice(np.array([0, 1, 2], np.int8), size=m, p=[0.5, 0.4, 0.1])
    synapses = pa.table(
        {
            "id": np.arange(1, m + 1, dtype=np.uint64),
            "pre": ids[spre],
            "post": ids[spost],
            "z": rng.uniform(0, 1000, m),
            "y": rng.uniform(0, 1e5, m),
            "x": rng.uniform(0, 1e5, m),
            "nz": normal[:, 0],
            "ny": normal[:, 1],
            "nx": normal[:, 2],
            "size": rng.integers(5, 200, m).astype(np.float32),
            "ei": pa.DictionaryArray.from_arrays(pa.array(ei_codes), pa.array(["E", "I"])),
            "post_compartment": pa.DictionaryArray.from_arrays(
                pa.array(comp_codes), pa.array(["dendrite", "spine", "soma"])
            ),
            "confidence": rng.uniform(0.5, 1.0, m).astype(np.float32),
        }
    )
    return neurons, synapses


_BUILD_CHILD = """
import json, os, resource, sys, time
if hasattr(os, "sched_setaffinity"):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
from wiremap.connectome.tables import BuildSettings, build
from wiremap.workspace import Workspace
t = time.perf_counter()
record = build(Workspace.open(sys.argv[1]), settings=BuildSettings(threads=2, memory_limit="3GB"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_gb": peak,
                  "n_synapses": record["n_synapses"], "n_edges": record["n_edges"]}))
"""


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(base: str, clients: int, seconds: float, ids: np.ndarray, types: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(k: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        rng = np.random.default_rng(k)
        while time.perf_counter() < deadline:
            nid = int(rng.choice(ids))
            url = [
                f"/api/v1/neurons/{nid}",
                f"/api/v1/neurons/{nid}/upstream?limit=50",
                f"/api/v1/neurons/{nid}/downstream?limit=50",
                f"/api/v1/neurons?type={types[int(rng.integers(len(types)))]}&min_post=10&limit=100",
            ][k % 4]
            t = time.perf_counter()
            try:
                r = await http.get(base + url)
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - t) * 1000)

    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, http) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / wall,
        **_percentiles(latencies),
    }


def _http_load(ws_dir: str, sizes: dict[str, Any], ids: np.ndarray, types: list[str]) -> dict[str, Any]:
    port = _free_port()
    code = f"from wiremap.connectome.api import serve; serve({ws_dir!r}, host='127.0.0.1', port={port})"
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/api/v1/info", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("API server did not start: " + server.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
        single = asyncio.run(_load(base, 1, min(5.0, sizes["seconds"]), ids, types))
        loaded = asyncio.run(_load(base, sizes["clients"], sizes["seconds"], ids, types))
        return {"one_client": single, "concurrent": loaded}
    finally:
        server.terminate()
        server.wait(30)


def run(quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    out: dict[str, Any] = {"sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="wiremap-bench-connectome-") as tmp:
        ws_dir = str(Path(tmp) / "ws")
        Workspace.create(ws_dir)
        t = time.perf_counter()
        neurons, synapses = synthetic_tables(sizes["neurons"], sizes["types"], sizes["partners"])
        out["generate_s"] = time.perf_counter() - t
        Path(ws_dir, "tables").mkdir(exist_ok=True)
        pq.write_table(neurons, Path(ws_dir, "tables", "neurons.parquet"))
        pq.write_table(synapses, Path(ws_dir, "tables", "synapses.parquet"), compression="zstd")
        out["n_neurons"], out["n_synapses"] = neurons.num_rows, synapses.num_rows
        del synapses
        child = subprocess.run(
            [sys.executable, "-c", _BUILD_CHILD, ws_dir],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "2"},
        )
        if child.returncode != 0:
            raise RuntimeError(f"build failed: {child.stderr[-3000:]}")
        out["build"] = json.loads(child.stdout.strip().splitlines()[-1])

        rng = np.random.default_rng(1)
        ids = rng.choice(neurons.column("id").to_numpy(), size=sizes["lookups"], replace=False)
        types = sorted(set(neurons.column("type").to_pylist()))
        with Connectome(ws_dir) as client:
            edges = client.sql("SELECT pre, post, weight FROM edges")
            neuron_types = client.sql("SELECT id, type FROM neurons")
            fetch_upstream(int(ids[0]), client=client)  # warm up
            duck, pand = [], []
            for nid in ids:
                nid = int(nid)
                for fetch, col in ((fetch_upstream, "post"), (fetch_downstream, "pre")):
                    t = time.perf_counter()
                    got = fetch(nid, client=client)
                    duck.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    ref = edges[edges[col] == nid].sort_values("weight", ascending=False)
                    pand.append((time.perf_counter() - t) * 1000)
                    assert len(got) == len(ref)
            out["partner_lookup"] = {"duckdb": _percentiles(duck), "pandas": _percentiles(pand)}
            out["partner_lookup"]["p95_speedup_vs_pandas"] = (
                out["partner_lookup"]["pandas"]["p95_ms"] / out["partner_lookup"]["duckdb"]["p95_ms"]
            )

            a, b = types[0], types[1]
            t = time.perf_counter()
            adj = fetch_adjacencies(NeuronCriteria(type=a), NeuronCriteria(type=b), client=client)
            duck_s = time.perf_counter() - t
            t = time.perf_counter()
            ta = neuron_types.id[neuron_types.type == a]
            tb = neuron_types.id[neuron_types.type == b]
            ref = edges[edges.pre.isin(ta) & edges.post.isin(tb)].sort_values("weight", ascending=False)
            pandas_s = time.perf_counter() - t
            assert len(adj) == len(ref) and adj.weight.sum() == ref.weight.sum()
            out["adjacencies_two_types"] = {
                "neurons_per_type": int(len(ta)),
                "connections": int(len(adj)),
                "duckdb_s": duck_s,
                "pandas_s": pandas_s,
                "speedup_vs_pandas": pandas_s / duck_s,
            }
            del edges
        out["http_load"] = _http_load(ws_dir, sizes, ids, types)
        if not quick:
            out["goals"] = {
                "build_le_300s": out["build"]["seconds"] <= 300,
                "build_peak_le_6gb": out["build"]["peak_rss_gb"] <= 6,
                "partner_p95_le_50ms": out["partner_lookup"]["duckdb"]["p95_ms"] <= 50,
                "adjacencies_le_1s": out["adjacencies_two_types"]["duckdb_s"] <= 1,
                "http_zero_errors": out["http_load"]["concurrent"]["errors"] == 0,
            }
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=float))
