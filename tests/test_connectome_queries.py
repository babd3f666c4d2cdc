"""Queries: generated SQL as exact strings, and answers checked against pandas on known tables."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from test_connectome_build import make_workspace
from wiremap.cli import main
from wiremap.connectome import (
    Connectome,
    NeuronCriteria,
    QueryError,
    default_client,
    fetch_adjacencies,
    fetch_downstream,
    fetch_neurons,
    fetch_shortest_path,
    fetch_synapses,
    fetch_upstream,
    set_default_client,
    set_property,
)
from wiremap.connectome.queries import (
    adjacencies_query,
    neurons_query,
    partners_query,
    synapses_query,
)
from wiremap.errors import InputError


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    ws, cells, syn = make_workspace(tmp_path_factory.mktemp("cx") / "ws")
    client = Connectome(ws)
    yield client, cells, syn
    client.close()


# -- SQL, offline -----------------------------------------------------------------
def test_criteria_sql_exact() -> None:
    assert NeuronCriteria(type="PC", ei="I", min_post=20).to_sql() == (
        "n.type = ? AND n.ei = ? AND n.n_post >= ?",
        ["PC", "I", 20],
    )
    assert NeuronCriteria(bodyId=[3, 1], type=["PC", "BC"]).to_sql("a") == (
        "a.id IN (SELECT unnest(?::UBIGINT[])) AND list_contains(?::VARCHAR[], a.type)",
        [[3, 1], ["PC", "BC"]],
    )
    assert NeuronCriteria(type="P.*", regex=True, properties={"has_cilium": True}).to_sql() == (
        'regexp_full_match(n.type, ?) AND n."has_cilium" = ?',
        ["P.*", True],
    )
    assert NeuronCriteria().to_sql() == ("TRUE", [])
    assert NeuronCriteria(bodyId=7).member_sql("s.pre") == ("s.pre = ?", [7])
    assert NeuronCriteria(type="PC").member_sql("s.pre") == (
        "s.pre IN (SELECT n.id FROM neurons n WHERE n.type = ?)",
        ["PC"],
    )


def test_query_sql_exact() -> None:
    assert neurons_query(NeuronCriteria(kind="glia"), limit=10, offset=20) == (
        "SELECT n.* FROM neurons n WHERE n.kind = ? ORDER BY n.id LIMIT ? OFFSET ?",
        ["glia", 10, 20],
    )
    assert synapses_query(NeuronCriteria(bodyId=5), None, post_compartment="soma") == (
        "SELECT s.* FROM synapses s WHERE s.pre = ? AND s.post_compartment = ? ORDER BY s.id",
        [5, "soma"],
    )
    assert adjacencies_query(NeuronCriteria(type="PC"), NeuronCriteria(type="BC"), min_weight=3) == (
        "SELECT e.pre, e.post, e.weight, e.total_size, e.ei, "
        "a.type AS type_pre, b.type AS type_post "
        "FROM edges e JOIN neurons a ON a.id = e.pre JOIN neurons b ON b.id = e.post "
        "WHERE e.weight >= ? AND e.pre IN (SELECT n.id FROM neurons n WHERE n.type = ?) "
        "AND e.post IN (SELECT n.id FROM neurons n WHERE n.type = ?) "
        "ORDER BY e.weight DESC, e.pre, e.post",
        [3, "PC", "BC"],
    )
    assert partners_query(9, "upstream", min_weight=2, limit=5) == (
        "SELECT e.pre AS partner, n.type, n.ei AS partner_ei, e.weight, e.total_size, e.ei "
        "FROM edges e JOIN neurons n ON n.id = e.pre WHERE e.post = ? AND e.weight >= ? "
        "ORDER BY e.weight DESC, partner LIMIT ? OFFSET ?",
        [9, 2, 5, 0],
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bodyId": 0}, "out of range"),
        ({"bodyId": 2**64}, "out of range"),
        ({"bodyId": "7"}, "must be an integer"),
        ({"bodyId": [1, True]}, "must be an integer"),
        ({"type": "x'; DROP TABLE neurons; --"}, "characters a cell type cannot have"),
        ({"type": "(", "regex": True}, "not a valid regex"),
        ({"ei": "X"}, "ei must be"),
        ({"min_post": -1}, "non-negative"),
        ({"properties": {"n_pre": 3}}, "not a user property"),
        ({"properties": {'a" OR 1=1': 3}}, "not a user property"),
    ],
)
def test_bad_criteria(kwargs, message) -> None:
    with pytest.raises(QueryError, match=message):
        NeuronCriteria(**kwargs)


# -- answers -----------------------------------------------------------------------
def test_fetch_neurons_matches_truth(connectome) -> None:
    client, cells, syn = connectome
    n_post = syn.groupby("post").size()
    got = fetch_neurons(NeuronCriteria(type="PC", min_post=30), client=client)
    truth = sorted(i for i in cells[cells.cell_type == "PC"].id if n_post.get(i, 0) >= 30)
    assert got.id.tolist() == truth and len(truth) > 0
    got = fetch_neurons(NeuronCriteria(ei="I"), client=client)
    assert got.id.tolist() == sorted(cells[cells.ei == "I"].id)
    assert fetch_neurons(NeuronCriteria(type="S.*", regex=True), client=client).type.unique().tolist() == ["SST"]
    assert fetch_neurons([3, 1, 99], client=client).id.tolist() == [1, 3]
    page = fetch_neurons(limit=5, offset=10, client=client)
    assert page.id.tolist() == list(range(11, 16))
    cil = fetch_neurons(NeuronCriteria(properties={"has_cilium": True}), client=client)
    assert cil.id.tolist() == sorted(cells[cells.has_cilium].id)
    with pytest.raises(QueryError, match="unknown property"):
        fetch_neurons(NeuronCriteria(properties={"colour": "red"}), client=client)


def test_partners_and_synapses_match_truth(connectome) -> None:
    client, cells, syn = connectome
    target = int(cells[cells.cell_type == "PC"].id.iloc[0])
    up = fetch_upstream(target, client=client)
    truth = syn[syn.post == target].groupby("pre").size().sort_values(ascending=False)
    assert dict(zip(up.partner, up.weight, strict=True)) == truth.to_dict()
    assert (np.diff(up.weight) <= 0).all()
    assert fetch_upstream(target, min_weight=3, client=client).weight.min() >= 3
    down = fetch_downstream(target, client=client)
    assert dict(zip(down.partner, down.weight, strict=True)) == syn[syn.pre == target].groupby("post").size().to_dict()
    # "every synapse onto this soma"
    onto = fetch_synapses(None, target, post_compartment="soma", client=client)
    assert onto.id.tolist() == sorted(syn[(syn.post == target) & (syn.post_compartment == "soma")].id)
    inhib = fetch_synapses(NeuronCriteria(type="BC"), NeuronCriteria(type="PC"), client=client)
    pre_t = cells.set_index("id").cell_type
    mask = (pre_t.loc[syn.pre].to_numpy() == "BC") & (pre_t.loc[syn.post].to_numpy() == "PC")
    assert inhib.id.tolist() == sorted(syn[mask].id) and (inhib.ei == "I").all()
    assert len(fetch_synapses(limit=7, client=client)) == 7


def test_adjacencies_between_types(connectome) -> None:
    client, cells, syn = connectome
    # "inhibitory neurons of type BC with at least 3 synapses from PCs"
    adj = fetch_adjacencies(NeuronCriteria(type="PC"), NeuronCriteria(type="BC"), min_weight=3, client=client)
    pre_t = cells.set_index("id").cell_type
    s = syn[(pre_t.loc[syn.pre].to_numpy() == "PC") & (pre_t.loc[syn.post].to_numpy() == "BC")]
    truth = s.groupby(["pre", "post"]).size()
    truth = truth[truth >= 3]
    assert dict(zip(zip(adj.pre, adj.post, strict=True), adj.weight, strict=True)) == truth.to_dict()
    assert set(adj.type_pre) == {"PC"} and set(adj.type_post) == {"BC"} and (adj.ei == "E").all()


def test_shortest_path_matches_networkx(connectome) -> None:
    client, cells, syn = connectome
    graph = nx.DiGraph()
    for (a, b), w in syn.groupby(["pre", "post"]).size().items():
        graph.add_edge(a, b, cost=1.0 / w)
    source = int(cells[cells.cell_type == "SST"].id.iloc[0])
    target = int(cells[cells.cell_type == "BC"].id.iloc[0])
    path = fetch_shortest_path(source, target, client=client)
    expected = nx.dijkstra_path_length(graph, source, target, weight="cost")
    assert path.id.iloc[0] == source and path.id.iloc[-1] == target
    assert path.cost.iloc[-1] == pytest.approx(expected)
    for a, b, w in zip(path.id[:-1], path.id[1:], path.weight[1:], strict=True):
        assert graph[a][b]["cost"] == pytest.approx(1.0 / w)
    glia = int(cells[cells.kind == "glia"].id.iloc[0])
    assert fetch_shortest_path(source, glia, client=client).empty


def test_default_client_injection(connectome) -> None:
    client, cells, _ = connectome
    set_default_client(None)
    with pytest.raises(InputError, match="no connectome client"):
        fetch_neurons()
    set_default_client(client)
    try:
        assert default_client() is client
        assert len(fetch_neurons()) == len(cells)
    finally:
        set_default_client(None)


def test_set_property_needs_write_access(tmp_path: Path) -> None:
    ws, _, _ = make_workspace(tmp_path / "ws")
    with Connectome(ws) as ro, pytest.raises(QueryError, match="read-only"):
        set_property(1, "proofread", True, client=ro)
    with Connectome(ws, read_only=False) as rw:
        set_property(1, "proofread", True, client=rw)
        set_property(2, "proofread", False, client=rw)
        with pytest.raises(QueryError, match="no neuron 999"):
            set_property(999, "proofread", True, client=rw)
        with pytest.raises(QueryError, match="not a user property"):
            set_property(1, "type", "hacked", client=rw)
        got = fetch_neurons(NeuronCriteria(properties={"proofread": True}), client=rw)
        assert got.id.tolist() == [1]
        assert rw.sql("SELECT count(*) AS n FROM property_edits").n[0] == 2
        assert fetch_neurons(1, client=rw).type[0] == "PC"


def test_query_cli(tmp_path: Path, capsys) -> None:
    ws, cells, syn = make_workspace(tmp_path / "ws")
    target = int(cells.id.iloc[0])
    assert main(["query", str(tmp_path / "ws"), "upstream", str(target), "-f", "csv"]) == 0
    out = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert out.weight.sum() == (syn.post == target).sum()
    assert main(["query", str(tmp_path / "ws"), "neurons", "--type", "BC", "-f", "json"]) == 0
    rows = pd.read_json(pd.io.common.StringIO(capsys.readouterr().out))
    assert rows.id.tolist() == sorted(cells[cells.cell_type == "BC"].id)
    assert main(["query", str(tmp_path / "ws"), "neurons", "--type", "x';--"]) == 2
    assert (
        main(
            [
                "query",
                str(tmp_path / "ws"),
                "adjacencies",
                "--source-type",
                "PC",
                "--target-type",
                "BC",
                "--min-weight",
                "3",
                "-f",
                "csv",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "query",
                str(tmp_path / "ws"),
                "synapses",
                "--post",
                str(target),
                "--post-compartment",
                "soma",
            ]
        )
        == 0
    )
    assert main(["query", str(tmp_path / "ws"), "path", "1", "2"]) == 0


def test_property_edits_carry_into_next_version(tmp_path: Path) -> None:
    from wiremap.connectome import build

    ws, _, _ = make_workspace(tmp_path / "ws")
    with Connectome(ws, read_only=False) as rw:
        set_property(4, "status", "proofread", client=rw)
        set_property(4, "score", 0.5, client=rw)
        set_property(4, "score", 0.75, client=rw)  # the last edit wins
    record = build(ws)
    assert record["version"] == 2 and record["property_edits_applied"] == 2
    with Connectome(ws) as v2:
        row = fetch_neurons(4, client=v2).iloc[0]
        assert row.status == "proofread" and row.score == 0.75
        assert fetch_neurons(5, client=v2).score.isna().all()
    with Connectome(ws, version=1) as v1:  # the old version is unchanged
        assert "status" not in v1.properties
