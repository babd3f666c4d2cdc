"""Connectome build: derived tables against pandas truth, versions, validation, CLI import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main
from wiremap.connectome import Connectome, build, fetch_neurons, import_groundtruth, versions
from wiremap.errors import InputError, LayerNotFoundError
from wiremap.volume import write_volume
from wiremap.workspace import Workspace

TYPES = {"PC": ("E", 20), "BC": ("I", 10), "SST": ("I", 6)}
#: Mean synapses from one neuron of row type onto one of column type.
RATES = {
    ("PC", "PC"): 0.8,
    ("PC", "BC"): 2.0,
    ("PC", "SST"): 1.0,
    ("BC", "PC"): 3.0,
    ("BC", "BC"): 0.3,
    ("SST", "PC"): 1.5,
}


def make_tables(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small synthetic connectome with the column layout of ``wiremap synth`` ground truth.

    Cells 1..36 are neurons of types PC (E), BC (I), SST (I); 37 and 38 are glia
    with no synapses.  Synapse counts per ordered pair are Poisson with a
    per-type-pair rate; a synapse's E/I follows its presynaptic cell.
    """
    rng = np.random.default_rng(seed)
    rows = []
    nid = 1
    for t, (ei, n) in TYPES.items():
        for _ in range(n):
            rows.append(
                dict(
                    id=nid,
                    kind="neuron",
                    cell_type=t,
                    ei=ei,
                    soma_z=float(rng.integers(0, 20)),
                    soma_y=float(rng.integers(0, 200)),
                    soma_x=float(rng.integers(0, 200)),
                    soma_in_volume=True,
                    has_cilium=bool(rng.random() < 0.5),
                )
            )
            nid += 1
    for _ in range(2):
        rows.append(
            dict(
                id=nid,
                kind="glia",
                cell_type="astrocyte",
                ei="",
                soma_z=np.nan,
                soma_y=np.nan,
                soma_x=np.nan,
                soma_in_volume=False,
                has_cilium=False,
            )
        )
        nid += 1
    cells = pd.DataFrame(rows)
    neurons = cells[cells.kind == "neuron"]
    syn = []
    for a in neurons.itertuples():
        for b in neurons.itertuples():
            if a.id == b.id:
                continue
            k = rng.poisson(RATES.get((a.cell_type, b.cell_type), 0.0))
            for _ in range(k):
                normal = rng.normal(size=3)
                normal /= np.linalg.norm(normal)
                syn.append(
                    dict(
                        pre=a.id,
                        post=b.id,
                        z=float(rng.integers(0, 20)),
                        y=float(rng.integers(0, 200)),
                        x=float(rng.integers(0, 200)),
                        nz=normal[0],
                        ny=normal[1],
                        nx=normal[2],
                        size=int(rng.integers(5, 50)),
                        ei=a.ei,
                        post_compartment=str(rng.choice(["dendrite", "spine", "soma"])),
                    )
                )
    synapses = pd.DataFrame(syn)
    synapses.insert(0, "id", np.arange(1, len(synapses) + 1))
    return cells, synapses


def make_workspace(path: Path, seed: int = 0) -> tuple[Workspace, pd.DataFrame, pd.DataFrame]:
    ws = Workspace.create(str(path))
    cells, synapses = make_tables(seed)
    build(ws, synapses=synapses, neurons=cells, source="test")
    return ws, cells, synapses


def test_build_derives_counts_edges_and_versions(tmp_path: Path) -> None:
    ws, cells, syn = make_workspace(tmp_path / "ws")
    assert sorted(ws.tables()) == ["edges", "neurons", "synapses", "versions"]
    assert (tmp_path / "ws" / "connectome.duckdb").is_file()
    edges = ws.read_table("edges")
    truth = syn.groupby(["pre", "post"]).agg(weight=("id", "size"), total_size=("size", "sum")).reset_index()
    merged = truth.merge(edges, on=["pre", "post"], suffixes=("_truth", ""))
    assert len(merged) == len(truth) == len(edges)
    assert (merged.weight == merged.weight_truth).all()
    assert np.allclose(merged.total_size, merged.total_size_truth)
    pre_ei = cells.set_index("id").ei
    assert (edges.ei.to_numpy() == pre_ei.loc[edges.pre.astype(int)].to_numpy()).all()

    neurons = ws.read_table("neurons").set_index("id")
    assert len(neurons) == len(cells)
    n_pre = syn.groupby("pre").size().reindex(cells.id, fill_value=0)
    n_post = syn.groupby("post").size().reindex(cells.id, fill_value=0)
    assert (neurons.n_pre.to_numpy() == n_pre.to_numpy()).all()
    assert (neurons.n_post.to_numpy() == n_post.to_numpy()).all()
    soma_in = syn[syn.post_compartment == "soma"].groupby("post").size().reindex(cells.id, fill_value=0)
    assert (neurons.n_post_soma.to_numpy() == soma_in.to_numpy()).all()
    inhib = syn[syn.ei == "I"].groupby("post").size().reindex(cells.id, fill_value=0)
    assert (neurons.n_post_inhibitory.to_numpy() == inhib.to_numpy()).all()
    partners = syn.groupby("post").pre.nunique().reindex(cells.id, fill_value=0)
    assert (neurons.n_upstream.to_numpy() == partners.to_numpy()).all()
    assert neurons.loc[37, "kind"] == "glia" and neurons.loc[37, "n_post"] == 0
    assert neurons.loc[1, "type"] == "PC" and "has_cilium" in neurons.columns  # user property kept

    # A second build from the workspace's own tables gives the same answers as v2.
    record = build(ws, note="again")
    assert record["version"] == 2 and record["source"] == "tables/synapses"
    v = versions(ws)
    assert v.version.tolist() == [1, 2] and v.note.tolist() == ["", "again"]
    assert ws.exists("connectome/v1/synapses.parquet") and ws.exists("connectome/v2/manifest.json")
    pd.testing.assert_frame_equal(ws.read_table("connectome/v1/neurons.parquet"), ws.read_table("neurons"))
    with Connectome(ws, version=1) as old:  # an older version gets its own database, built on demand
        assert old.version == 1
        assert len(fetch_neurons(client=old)) == len(cells)
    assert (tmp_path / "ws" / "connectome" / "v1" / "connectome.duckdb").is_file()
    with pytest.raises(InputError, match="version 7 does not exist"):
        Connectome(ws, version=7)


def test_build_without_neuron_table_and_inferred_ei(tmp_path: Path) -> None:
    ws = Workspace.create(str(tmp_path / "ws"))
    syn = pd.DataFrame({"pre": [5, 5, 6], "post": [6, 7, 5], "z": [1, 2, 3], "y": [0, 0, 0], "x": [4, 4, 4]})
    record = build(ws, synapses=syn)
    assert record["n_neurons"] == 3 and record["n_edges"] == 3
    neurons = ws.read_table("neurons").set_index("id")
    assert neurons.loc[5, "n_pre"] == 2 and neurons.loc[5, "n_post"] == 1
    s = ws.read_table("synapses")
    assert s.id.tolist() == [1, 2, 3] and (s.confidence == 1.0).all() and (s.ei == "").all()


def test_build_keeps_per_synapse_ei_and_partner_confidence(tmp_path: Path) -> None:
    """The synapse stage's own E/I call and confidences survive the build (NaN / '' where not given)."""
    ws = Workspace.create(str(tmp_path / "ws"))
    syn = pd.DataFrame(
        {
            "pre": [5, 5, 6],
            "post": [6, 7, 5],
            "z": [1, 2, 3],
            "y": [0, 0, 0],
            "x": [4, 4, 4],
            "ei": ["E", "E", "I"],
            "ei_synapse": ["E", "I", "I"],
            "ei_confidence": [0.9, 0.6, np.nan],
            "partner_confidence": [0.8, 0.7, 0.95],
        }
    )
    build(ws, synapses=syn)
    s = ws.read_table("synapses").sort_values("id")
    assert s.ei_synapse.tolist() == ["E", "I", "I"] and s.ei.tolist() == ["E", "E", "I"]
    assert np.allclose(s.ei_confidence, [0.9, 0.6, np.nan], equal_nan=True)
    assert np.allclose(s.partner_confidence, [0.8, 0.7, 0.95])
    rows = Connectome(ws).sql("SELECT id, ei_synapse, partner_confidence FROM synapses ORDER BY id")
    assert rows["ei_synapse"].tolist() == ["E", "I", "I"]


def test_build_from_workspace_tables_needs_synapses(tmp_path: Path) -> None:
    ws = Workspace.create(str(tmp_path / "ws"))
    with pytest.raises(LayerNotFoundError, match="tables/synapses"):
        build(ws)
    cells, syn = make_tables()
    ws.write_table("synapses", syn)  # as the synapse stage will
    ws.write_table("neurons", cells.rename(columns={"cell_type": "type"}))
    record = build(ws)
    assert record["n_synapses"] == len(syn) and record["n_neurons"] == len(cells)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.drop(columns=["post"]), "missing column"),
        (lambda s: s.assign(pre=s.pre.astype(str).where(s.index != 3, "abc")), "row 3 has 'abc'"),
        (lambda s: s.assign(x="far"), "'x' must be numeric"),
        (lambda s: s.assign(ei="X"), "column 'ei' row 0 has 'X'"),
        (lambda s: s.assign(post=s.post.where(s.index != 2, 999)), "not in the neuron table"),
        (lambda s: s.assign(pre=s.pre.where(s.index != 1, 0)), "0 is background"),
        (lambda s: s.assign(id=1), "not unique"),
        (lambda s: s.assign(confidence=2.0), "confidence"),
        (lambda s: s.assign(ei_confidence=-0.1), "'ei_confidence' must lie in"),
        (lambda s: s.assign(ei_synapse="maybe"), "column 'ei_synapse' row 0 has 'maybe'"),
    ],
)
def test_bad_tables_are_refused_and_nothing_written(tmp_path: Path, change, message) -> None:
    ws = Workspace.create(str(tmp_path / "ws"))
    cells, syn = make_tables()
    with pytest.raises(InputError, match=message):
        build(ws, synapses=change(syn), neurons=cells)
    assert ws.list("tables/") == [] and ws.list("connectome/") == []


def test_cli_import_csv_and_errors(tmp_path: Path, capsys) -> None:
    ws_dir = tmp_path / "ws"
    Workspace.create(str(ws_dir))
    cells, syn = make_tables()
    syn.rename(columns={"pre": "bodyId_pre", "post": "bodyId_post"}).to_csv(tmp_path / "syn.csv", index=False)
    cells.rename(columns={"id": "bodyId"}).to_csv(tmp_path / "cells.csv", index=False)
    assert (
        main(
            [
                "connectome",
                "import",
                str(ws_dir),
                "--synapses",
                str(tmp_path / "syn.csv"),
                "--neurons",
                str(tmp_path / "cells.csv"),
            ]
        )
        == 0
    )
    assert "v1" in capsys.readouterr().out
    neurons = Workspace.open(str(ws_dir)).read_table("neurons")
    assert len(neurons) == len(cells) and neurons.n_pre.sum() == len(syn)
    syn.drop(columns=["z"]).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["connectome", "import", str(ws_dir), "--synapses", str(tmp_path / "bad.csv")]) == 2
    assert "missing column(s) z" in capsys.readouterr().err
    assert main(["connectome", "import", str(ws_dir), "--synapses", str(tmp_path / "nope.csv")]) == 2
    assert main(["connectome", "import", str(ws_dir)]) == 2
    assert main(["connectome", "build", str(ws_dir)]) == 0
    assert main(["connectome", "versions", str(ws_dir)]) == 0
    assert versions(Workspace.open(str(ws_dir))).version.tolist() == [1, 2]


def test_import_groundtruth(tmp_path: Path) -> None:
    ws = Workspace.create(str(tmp_path / "ws"))
    with pytest.raises(LayerNotFoundError, match="groundtruth"):
        import_groundtruth(ws)
    cells, syn = make_tables()
    ws.write_table("groundtruth/cells.parquet", cells)
    ws.write_table("groundtruth/synapses.parquet", syn)
    labels = np.zeros((4, 8, 8), np.uint64)
    labels[:, :, :3] = 1  # 96 voxels of neuron 1, 32 of neuron 2
    labels[:, :, 3] = 2
    write_volume(ws, "groundtruth/neurons", labels, resolution_nm=(40, 10, 10), kind="segmentation")
    record = import_groundtruth(ws)
    assert record["source"] == "groundtruth" and record["n_synapses"] == len(syn)
    neurons = ws.read_table("neurons").set_index("id")
    assert neurons.loc[1, "volume_um3"] == pytest.approx(96 * 4000 * 1e-9)
    assert neurons.loc[2, "volume_um3"] == pytest.approx(32 * 4000 * 1e-9)
    assert np.isnan(neurons.loc[3, "volume_um3"])
    inputs = ws.provenance("connectome")["inputs"]
    assert inputs == ["groundtruth/synapses", "groundtruth/cells", "groundtruth/neurons"]
    assert main(["connectome", "import", str(tmp_path / "ws"), "--from-groundtruth"]) == 0


def test_cloud_workspace_builds_duckdb_in_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WIREMAP_CACHE", str(tmp_path / "cache"))
    ws = Workspace.create("memory://bucket/connectome-test")
    cells, syn = make_tables()
    build(ws, synapses=syn, neurons=cells)
    build(ws)
    assert ws.exists("tables/edges.parquet") and ws.exists("connectome/v1/synapses.parquet")
    with Connectome(ws) as latest:
        assert latest.version == 2 and latest.path.is_relative_to(tmp_path / "cache")
        assert fetch_neurons(1, client=latest).n_post[0] == (syn.post == 1).sum()
    with Connectome(ws, version=1) as old:
        assert old.path.name == "v1.duckdb"
