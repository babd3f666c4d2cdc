"""Blockwise affinity prediction: load a shipped model, normalise, run the U-Net on blocks with context.

Pure functions here (``normalize_image``, ``predict_affinities``) work on
in-memory ``(z, y, x)`` arrays; ``stage.py`` wraps them in blocks.  A block
is read with ``model.context`` voxels of halo (a multiple of the pooling
factor, so pooling windows line up with the whole volume's) and its output
equals the whole-volume prediction up to float rounding.

Intensity normalisation uses two global percentiles of the input layer
(``wiremap.intensity.grey_range``, computed once per run from a strided sample), never per-block statistics,
so every block sees the same mapping.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wiremap.errors import InputError
from wiremap.segment.network import Ensemble, NetworkConfig, UNet3D

MODEL_FILES = {"anisotropic": "segment_anisotropic.pt", "isotropic": "segment_isotropic.pt"}


class ModelError(InputError):
    """A weight file is missing, corrupt or does not fit the network."""


@dataclass
class Model:
    """A trained network, its configuration and training metadata."""

    network: UNet3D | Ensemble
    config: NetworkConfig
    meta: dict
    source: str

    @property
    def context(self) -> tuple[int, int, int]:
        return self.config.context

    @property
    def n_nearest(self) -> int:
        """Number of nearest-neighbour channels (the first ones; the rest are long-range)."""
        return sum(1 for o in self.config.offsets if sum(abs(v) for v in o) == 1)


def choose_variant(resolution_nm: tuple[float, float, float]) -> str:
    """Anisotropic model when sections are at least twice as thick as the in-plane pixels."""
    z, y, x = resolution_nm
    return "anisotropic" if z >= 2 * min(y, x) else "isotropic"


def default_model_path(variant: str) -> Path:
    if variant not in MODEL_FILES:
        raise ModelError(f"no shipped model for variant {variant!r} (have {', '.join(MODEL_FILES)})")
    return Path(str(resources.files("wiremap.models").joinpath(MODEL_FILES[variant])))


def save_model(path: str | Path, network: UNet3D | Ensemble, meta: dict) -> None:
    """Write ``{config, state_dict, meta}`` with torch.save (loadable with ``weights_only``).

    An :class:`Ensemble` is stored as ``members``: one state dict per network.
    """

    def plain(net: nn.Module) -> dict:
        return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}

    meta = json.loads(json.dumps(meta, default=float))  # plain JSON types only: loadable with weights_only
    blob = {"format": "wiremap-segment-1", "config": network.config.to_dict(), "meta": meta}
    if isinstance(network, Ensemble):
        blob["members"] = [plain(m) for m in network.members]
    else:
        blob["state_dict"] = plain(network)
    torch.save(blob, path)


@lru_cache(maxsize=4)
def load_model(path: str) -> Model:
    """Load a weight file; any problem with it is a :class:`ModelError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model weight file {path} does not exist")
    data = p.read_bytes()
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a truncated/garbled file
        raise ModelError(
            f"model weight file {path} is corrupt or not a wiremap model ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != "wiremap-segment-1":
        raise ModelError(f"model weight file {path} is not a wiremap segmentation model")
    try:
        config = NetworkConfig(**{**blob["config"], "offsets": [tuple(o) for o in blob["config"]["offsets"]]})
        network: UNet3D | Ensemble
        if "members" in blob:
            members = [UNet3D(config) for _ in blob["members"]]
            for member, state in zip(members, blob["members"], strict=True):
                member.load_state_dict(state)
            network = Ensemble(members)
        else:
            network = UNet3D(config)
            network.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"model weight file {path} does not fit the network: {exc}") from None
    network.eval()
    meta = dict(blob.get("meta") or {})
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return Model(network, config, meta, str(p))


def normalize_image(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` to ``[-0.5, 0.5]`` (float32); the network's input convention."""
    return ((image.astype(np.float32) - lo) / (hi - lo) - 0.5).astype(np.float32)


def pick_device(device: str | None = None) -> torch.device:
    """``None``/"auto": CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: {exc}") from None


def predict_affinities(
    model: Model, image: np.ndarray, lo: float, hi: float, device: torch.device | None = None
) -> np.ndarray:
    """Affinities ``(n_offsets, z, y, x)`` float32 in [0, 1] of a whole array (zero-padded at its border)."""
    if image.ndim != 3:
        raise InputError(f"segmentation needs a 3D (z, y, x) image, got shape {image.shape}")
    device = device or torch.device("cpu")
    network = model.network.to(device)
    # pad the end of each axis to a multiple of the pooling factor (pooling windows must tile)
    pad = [(0, -s % t) for s, t in zip(image.shape, model.config.pool_total, strict=True)]
    norm = np.pad(normalize_image(image, lo, hi), pad)
    x = torch.from_numpy(norm)[None, None].to(device)
    with torch.inference_mode():
        out = torch.sigmoid(network(x))[0]
    z, y, xx = image.shape
    return np.ascontiguousarray(out[:, :z, :y, :xx].float().cpu().numpy())
