"""Interop: neuPrint CSV, CAVE and GraphML exports hold the same connectome; import round-trips."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from test_connectome_build import make_workspace
from wiremap.cli import main
from wiremap.connectome import Connectome
from wiremap.connectome.interop import (
    export_cave,
    export_graphml,
    export_neuprint,
    import_tables,
    to_networkx,
)
from wiremap.workspace import Workspace


def test_exports_and_round_trip(tmp_path: Path) -> None:
    ws, cells, syn = make_workspace(tmp_path / "ws")
    edges_truth = syn.groupby(["pre", "post"]).size()
    with Connectome(ws) as client:
        files = export_neuprint(client, tmp_path / "neuprint")
        cave = export_cave(client, tmp_path / "cave.parquet")
        graphml = export_graphml(client, tmp_path / "c.graphml")
        graph = to_networkx(client, min_weight=2)
    assert [f.name for f in files] == [
        "Neuprint_Neurons.csv",
        "Neuprint_Neuron_Connections.csv",
        "Neuprint_Synapses.csv",
        "Neuprint_Synapse_Connections.csv",
    ]
    neurons = pd.read_csv(files[0])
    assert neurons["bodyId:long"].tolist() == cells.id.tolist()
    assert neurons["post:int"].sum() == len(syn) and neurons["type:string"].iloc[0] == "PC"
    assert neurons["somaLocation:point{srid:9}"].iloc[0].startswith("{x:")
    conns = pd.read_csv(files[1]).set_index([":START_ID(Body-ID)", ":END_ID(Body-ID)"])["weight:int"]
    assert conns.sort_index().to_dict() == edges_truth.to_dict()
    sites = pd.read_csv(files[2])
    assert len(sites) == 2 * len(syn) and len(pd.read_csv(files[3])) == len(syn)

    table = pd.read_parquet(cave)
    assert table.pre_pt_root_id.tolist() == syn.pre.tolist()
    first = syn.iloc[0]
    assert np.allclose(table.ctr_pt_position.iloc[0], [first.x, first.y, first.z])
    # pre and post points straddle the cleft along the normal (which points pre -> post)
    step = np.asarray(table.post_pt_position.iloc[0]) - np.asarray(table.pre_pt_position.iloc[0])
    assert np.allclose(step, 2 * np.array([first.nx, first.ny, first.nz]), atol=0.02)

    read = nx.read_graphml(graphml, node_type=int)
    assert read.number_of_edges() == len(edges_truth)
    a, b = edges_truth.index[0]
    assert read[a][b]["weight"] == edges_truth.iloc[0]
    assert read.nodes[1]["type"] == "PC"
    assert graph.number_of_edges() == int((edges_truth >= 2).sum())

    # CAVE-style columns come back in through import
    ws2 = Workspace.create(str(tmp_path / "ws2"))
    flat = table.drop(columns=["pre_pt_position", "post_pt_position", "ctr_pt_position"]).assign(
        x=syn.x, y=syn.y, z=syn.z
    )
    flat.to_csv(tmp_path / "cave.csv", index=False)
    record = import_tables(ws2, synapses=tmp_path / "cave.csv")
    assert record["n_synapses"] == len(syn)
    assert (ws2.read_table("edges").weight.sum()) == len(syn)


def test_export_cli(tmp_path: Path) -> None:
    make_workspace(tmp_path / "ws")
    ws = str(tmp_path / "ws")
    assert (
        main(
            [
                "connectome",
                "export",
                ws,
                "--format",
                "graphml",
                "--out",
                str(tmp_path / "g.graphml"),
            ]
        )
        == 0
    )
    assert (tmp_path / "g.graphml").is_file()
    assert main(["connectome", "export", ws, "--format", "neuprint", "--out", str(tmp_path / "np")]) == 0
    assert main(["connectome", "export", ws, "--format", "gexf", "--out", str(tmp_path / "x")]) == 2
