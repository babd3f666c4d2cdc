"""The U-Net: cost per voxel, receptive field (block context), weight files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wiremap.errors import WiremapError
from wiremap.segment.infer import MODEL_FILES, default_model_path, load_model, predict_affinities, save_model
from wiremap.segment.network import NetworkConfig, UNet3D, flops_per_voxel


def random_model(tmp_path, variant: str, fmaps: int = 4, batch_norm: bool = False):
    torch.manual_seed(0)
    path = tmp_path / f"{variant}.pt"
    network = UNet3D(NetworkConfig(variant=variant, fmaps=fmaps, batch_norm=batch_norm))
    if batch_norm:  # statistics far from the initial (0, 1), so a block-dependent normalisation would show
        network.train()
        with torch.no_grad():
            for _ in range(3):
                network(torch.rand(2, 1, 8, 32, 32) * 3 + 1)
    save_model(path, network, {"resolution_nm": [8, 8, 8]})
    return load_model(str(path))


@pytest.mark.parametrize("variant", ["isotropic", "anisotropic"])
def test_shipped_models_are_small_and_cheap(variant):
    path = default_model_path(variant)
    assert path.stat().st_size < 5_000_000
    model = load_model(str(path))
    assert model.config.variant == variant
    assert flops_per_voxel(model.network, (8, 32, 32)) <= 0.2e6
    assert model.n_nearest == 3


@pytest.mark.parametrize(
    ("variant", "batch_norm"), [("isotropic", False), ("anisotropic", False), ("anisotropic", True)]
)
def test_block_with_context_equals_whole_volume(tmp_path, variant, batch_norm):
    model = random_model(tmp_path, variant, batch_norm=batch_norm)
    assert model.config.batch_norm is batch_norm and not model.network.training
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 96, 96), dtype=np.uint8)
    whole = predict_affinities(model, image, 0.0, 255.0)
    cz, cy, cx = model.context
    # the block [16:24, 48:64, 48:64] read with its context (pooling-aligned offsets)
    z0, y0, x0 = 16 - min(16, cz), 48 - cy, 48 - cx
    part = predict_affinities(model, image[z0 : 24 + cz, y0 : 64 + cy, x0 : 64 + cx], 0.0, 255.0)
    inner = part[:, 16 - z0 : 24 - z0, 48 - y0 : 64 - y0, 48 - x0 : 64 - x0]
    assert np.abs(inner - whole[:, 16:24, 48:64, 48:64]).max() < 1e-4


def test_receptive_radius_bounds_the_influence(tmp_path):
    model = random_model(tmp_path, "isotropic")
    image = np.full((56, 56, 56), 128, np.uint8)
    base = predict_affinities(model, image, 0.0, 255.0)
    image[28, 28, 28] = 255
    moved = np.abs(predict_affinities(model, image, 0.0, 255.0) - base).max(axis=0) > 0
    where = np.argwhere(moved)
    assert moved.any()
    assert (np.abs(where - 28).max(axis=0) <= np.array(model.config.receptive_radius)).all()


def test_corrupt_and_foreign_weight_files(tmp_path):
    good = default_model_path("isotropic").read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises(WiremapError, match="corrupt"):
        load_model(str(broken))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(WiremapError, match="not a wiremap"):
        load_model(str(foreign))
    with pytest.raises(WiremapError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    assert set(MODEL_FILES) == {"isotropic", "anisotropic"}


def test_ensemble_averages_member_probabilities_and_round_trips(tmp_path):
    from wiremap.segment.network import Ensemble

    config = NetworkConfig(variant="isotropic", fmaps=4)
    torch.manual_seed(0)
    a, b = UNet3D(config), UNet3D(config)
    ensemble = Ensemble([a, b])
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        expected = (torch.sigmoid(a(x)) + torch.sigmoid(b(x))) / 2
        assert torch.allclose(torch.sigmoid(ensemble(x)), expected, atol=1e-5)
    save_model(tmp_path / "ens.pt", ensemble, {"resolution_nm": [8, 8, 8]})
    loaded = load_model(str(tmp_path / "ens.pt"))
    assert isinstance(loaded.network, Ensemble) and len(loaded.network.members) == 2
    image = np.random.default_rng(0).integers(0, 255, (8, 16, 16)).astype(np.uint8)
    single = load_model(str(_save(tmp_path / "a.pt", a)))
    both = predict_affinities(loaded, image, 0, 255)
    assert both.shape == (6, 8, 16, 16)
    assert not np.allclose(both, predict_affinities(single, image, 0, 255))  # b changes the answer
    assert flops_per_voxel(loaded.network, (8, 16, 16)) == pytest.approx(2 * flops_per_voxel(a, (8, 16, 16)))
    with pytest.raises(ValueError):
        Ensemble([a, UNet3D(NetworkConfig(variant="anisotropic", fmaps=4))])


def test_flop_count_leaves_batch_norm_statistics_alone():
    network = UNet3D(NetworkConfig(variant="anisotropic", fmaps=4, batch_norm=True))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    flops_per_voxel(network, (8, 16, 16))
    assert network.training
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


def _save(path, network):
    save_model(path, network, {"resolution_nm": [8, 8, 8]})
    return path
