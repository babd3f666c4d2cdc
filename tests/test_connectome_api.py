"""HTTP API: answers match the Python queries; hostile input gets 4xx and changes nothing."""

from __future__ import annotations

import warnings

import pytest

from test_connectome_build import make_workspace

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from wiremap.connectome.api import create_app

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    ws, cells, syn = make_workspace(tmp_path_factory.mktemp("api") / "ws")
    app = create_app(ws, token=TOKEN, max_limit=50)
    with TestClient(app) as client:
        yield client, cells, syn


def test_read_endpoints(api) -> None:
    client, cells, syn = api
    info = client.get("/api/v1/info").json()
    assert info["counts"] == {
        "neurons": len(cells),
        "synapses": len(syn),
        "edges": len(syn.groupby(["pre", "post"])),
    }
    assert "has_cilium" in info["properties"]
    r = client.get("/api/v1/neurons", params={"type": "BC", "ei": "I"}).json()
    assert [row["id"] for row in r["data"]] == sorted(cells[cells.cell_type == "BC"].id)
    assert r["next_offset"] is None
    one = client.get("/api/v1/neurons/1").json()
    assert one["type"] == "PC" and one["n_post"] == int((syn.post == 1).sum())
    assert one["volume_um3"] is None  # NaN travels as null
    up = client.get("/api/v1/neurons/1/upstream").json()["data"]
    assert sum(row["weight"] for row in up) == int((syn.post == 1).sum())
    down = client.get("/api/v1/neurons/1/downstream", params={"min_weight": 2}).json()["data"]
    assert all(row["weight"] >= 2 for row in down)
    s = client.get("/api/v1/synapses", params=[("post", 1), ("post_compartment", "soma")]).json()["data"]
    assert [row["id"] for row in s] == sorted(syn[(syn.post == 1) & (syn.post_compartment == "soma")].id)
    adj = client.get("/api/v1/adjacencies", params={"source_type": "PC", "target_type": "BC", "min_weight": 3})
    assert adj.status_code == 200 and all(r["weight"] >= 3 for r in adj.json()["data"])
    path = client.get("/api/v1/path", params={"source": 1, "target": 25}).json()
    assert path["found"] and path["data"][0]["id"] == 1 and path["data"][-1]["id"] == 25
    assert client.get("/api/v1/versions").json()["data"][0]["version"] == 1


def test_pagination_covers_everything_once(api) -> None:
    client, _, syn = api
    seen, offset = [], 0
    while offset is not None:
        page = client.get("/api/v1/synapses", params={"limit": 50, "offset": offset}).json()
        seen += [row["id"] for row in page["data"]]
        offset = page["next_offset"]
    assert seen == sorted(syn.id)


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/api/v1/neurons/999", 404, "no neuron 999"),
        ("/api/v1/neurons/18446744073709551616", 422, "less than or equal"),
        ("/api/v1/neurons/0", 422, "greater than or equal"),
        ("/api/v1/neurons/1;DROP%20TABLE%20neurons", 422, "valid integer"),
        ("/api/v1/neurons?type=PC'%20OR%20'1'='1", 400, "characters a cell type cannot have"),
        (
            "/api/v1/neurons?type=PC%3B%20DELETE%20FROM%20neurons",
            400,
            "characters a cell type cannot have",
        ),
        ("/api/v1/neurons?type=(&regex=true", 400, "not a valid regex"),
        ("/api/v1/neurons?ei=E'--", 422, "pattern"),
        ("/api/v1/neurons?min_post=lots", 422, "valid integer"),
        ("/api/v1/neurons?bodyId=99999999999999999999999", 422, "out of range"),
        ("/api/v1/neurons?limit=51", 422, "max_limit 50"),
        ("/api/v1/neurons?limit=0", 422, "greater than or equal"),
        ("/api/v1/synapses?min_confidence=2", 422, "less than or equal"),
        ("/api/v1/synapses?post_compartment=soma'%20OR%201=1", 422, "pattern"),
        ("/api/v1/path?source=1", 422, "target"),
    ],
)
def test_hostile_input_is_4xx_with_message(api, url, status, message) -> None:
    client, cells, syn = api
    r = client.get(url)
    assert r.status_code == status, r.text
    assert message in r.text
    info = client.get("/api/v1/info").json()["counts"]
    assert info["neurons"] == len(cells) and info["synapses"] == len(syn)


def test_writes_need_the_token(api, tmp_path) -> None:
    client, _, _ = api
    url = "/api/v1/neurons/3/properties/reviewed"
    assert client.put(url, json={"value": True}).status_code == 401
    assert client.put(url, json={"value": True}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.put(url, json={"value": True}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["reviewed"] is True
    bad = client.put(
        "/api/v1/neurons/3/properties/type",
        json={"value": "x"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code == 400 and "not a user property" in bad.text
    bad = client.put(
        '/api/v1/neurons/3/properties/a";drop',
        json={"value": 1},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code == 422
    bad = client.put(url, json={"value": {"nested": 1}}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 422
    assert client.get("/api/v1/neurons/3").json()["type"] == "PC"

    ws2, _, _ = make_workspace(tmp_path / "ro")
    with TestClient(create_app(ws2)) as ro:  # no token: read-only
        r = ro.put(url, json={"value": True}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403 and "read-only" in r.text
