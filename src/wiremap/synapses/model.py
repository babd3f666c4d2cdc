"""Synapse model files and inference on sections (pure functions, no workspace I/O).

A model file is ``torch.save({format, config, state_dict, meta})``; ``meta``
holds ``pixel_nm``, the in-plane pixel size the network was trained at.
Sections finer than that are mean-pooled by an integer factor before the
network and its outputs are brought back up (nearest) to the input grid, so
the same weights serve 4 nm and 4.6 nm data and inference is 4x cheaper.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wiremap.errors import InputError
from wiremap.synapses.network import SynapseNet, SynapseNetConfig

FORMAT = "wiremap-synapses-1"
DEFAULT_MODEL = "synapses_sstem.pt"


class ModelError(InputError):
    """A synapse weight file is missing, corrupt or of another kind."""


@dataclass(frozen=True)
class SynapseModel:
    """A loaded network with what it needs to be applied."""

    network: SynapseNet
    meta: dict
    path: str

    @property
    def pixel_nm(self) -> float:
        return float(self.meta.get("pixel_nm", 8.0))

    def factor(self, resolution_yx_nm: float) -> int:
        """Integer in-plane pooling factor that brings ``resolution_yx_nm`` nearest to ``pixel_nm``."""
        return max(1, int(round(self.pixel_nm / float(resolution_yx_nm))))

    def context(self, resolution_yx_nm: float) -> int:
        """Input pixels of context a block needs for block-independent outputs."""
        return int(self.network.config.receptive_radius * self.factor(resolution_yx_nm))


def default_model_path() -> Path:
    return Path(str(resources.files("wiremap.models").joinpath(DEFAULT_MODEL)))


def save_model(path: str | Path, network: SynapseNet, meta: dict) -> None:
    """Write a model file (loadable with ``weights_only=True``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save({"format": FORMAT, "config": network.config.to_dict(), "state_dict": state, "meta": meta}, path)


@lru_cache(maxsize=4)
def load_model(path: str | None = None) -> SynapseModel:
    """Load a weight file (default: the shipped one); problems are a :class:`ModelError`."""
    p = Path(path) if path else default_model_path()
    if not p.is_file():
        raise ModelError(f"synapse model file {p} does not exist")
    data = p.read_bytes()
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        raise ModelError(f"synapse model file {p} is corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{p} is not a wiremap synapse model")
    try:
        network = SynapseNet(SynapseNetConfig(**blob["config"]))
        network.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"synapse model file {p} does not fit the network: {exc}") from None
    network.eval()
    meta = dict(blob.get("meta") or {})
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return SynapseModel(network, meta, str(p))


def normalize(image: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """Map grey values ``[lo, hi]`` to ``[-0.5, 0.5]`` (float32), the network's input convention.

    ``lo`` and ``hi`` may be ``(z, 1, 1)`` arrays: one range per section.
    """
    return ((image.astype(np.float32) - lo) / (hi - lo) - 0.5).astype(np.float32)


def pool_sections(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool ``(z, y, x)`` in-plane by ``factor`` (edges padded by replication)."""
    if factor == 1:
        return image.astype(np.float32, copy=False)
    z, y, x = image.shape
    py, px = -y % factor, -x % factor
    if py or px:
        image = np.pad(image, ((0, 0), (0, py), (0, px)), mode="edge")
    z, y, x = image.shape
    return image.reshape(z, y // factor, factor, x // factor, factor).mean(axis=(2, 4), dtype=np.float32)


def section_stack(sections: np.ndarray, z0: int, z1: int, k: int) -> np.ndarray:
    """``(z1 - z0, 2k + 1, y, x)`` network input: each section with its k neighbours either side.

    Beyond the first and last section the edge section is repeated (the
    network is trained with such repeated neighbours, so the ends are not
    worse than a section with a missing neighbour).
    """
    z = sections.shape[0]
    idx = np.clip(np.arange(z0, z1)[:, None] + np.arange(-k, k + 1)[None, :], 0, z - 1)
    return sections[idx]


def predict_sections(
    model: SynapseModel,
    image: np.ndarray,
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    resolution_yx_nm: float,
    batch: int = 4,
) -> np.ndarray:
    """``(3, z, y, x)`` float32 probabilities (cleft, side, ei) for a ``(z, y, x)`` uint8 stack.

    A 2.5D network (``context_sections > 0``) takes each section's
    neighbours from the stack; give a block its z context for identical
    results across blocks.
    """
    z, y, x = image.shape
    f = model.factor(resolution_yx_nm)
    small = normalize(pool_sections(image, f), lo, hi) if f > 1 else normalize(image, lo, hi)
    m = model.network.config.pool_total
    sy, sx = small.shape[1:]
    py, px = -sy % m, -sx % m
    small = np.pad(small, ((0, 0), (0, py), (0, px)), mode="reflect" if min(sy, sx) > max(py, px) else "edge")
    out = np.empty((3, z, sy, sx), np.float32)
    ctx = model.network.config.context_sections
    with torch.inference_mode():
        for k in range(0, z, batch):
            t = torch.from_numpy(np.ascontiguousarray(section_stack(small, k, min(k + batch, z), ctx)))
            p = torch.sigmoid(model.network(t))[:, :, :sy, :sx]
            out[:, k : k + batch] = p.permute(1, 0, 2, 3).numpy()
    if f > 1:
        out = out.repeat(f, axis=2).repeat(f, axis=3)[:, :, :y, :x]
    return out


def upsample_bilinear(prob: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(c, z, y, x)`` to a new in-plane shape (used for training evaluation)."""
    t = torch.from_numpy(prob)
    return F.interpolate(t, size=shape_yx, mode="bilinear", align_corners=False).numpy()
