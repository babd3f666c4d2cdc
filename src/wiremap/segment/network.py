"""A small 3D U-Net predicting nearest-neighbour and long-range affinities.

Tensors are ``(batch, channel, z, y, x)``.  Two variants share one class:

  anisotropic  serial sections (~4x4x30 nm): pools only in y/x, so z keeps
               its coarse resolution at every level
  isotropic    FIB-SEM (~8-10 nm): pools by 2 on every axis

The network uses zero-padded ("same") convolutions and, optionally, batch
normalisation, which at inference is a fixed per-channel scale and shift
(never statistics of the block), so its output at a voxel depends only on
the image within ``receptive_radius`` of it: a block read with that much context (and an
offset that is a multiple of ``pool_total``) gives the same values as the
whole volume (up to float rounding).  Output channel ``c`` is the affinity
of voxel ``p`` to voxel ``p + offsets[c]`` (offsets are negative, as in the
field's convention), a probability in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

VARIANTS = ("anisotropic", "isotropic")


def default_offsets(variant: str) -> list[tuple[int, int, int]]:
    """Affinity neighbourhood: 3 nearest neighbours, then long-range ones (an auxiliary target)."""
    if variant == "anisotropic":
        return [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0), (0, -8, 0), (0, 0, -8)]
    return [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-4, 0, 0), (0, -4, 0), (0, 0, -4)]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of one model; stored next to its weights so a checkpoint rebuilds itself."""

    variant: str = "isotropic"  # "anisotropic" (pool y/x only) or "isotropic" (pool z/y/x)
    fmaps: int = 12  # feature maps at full resolution; doubled per level
    levels: int = 3  # resolution levels (levels - 1 poolings)
    batch_norm: bool = False  # batch normalisation after each convolution (trains deeper nets faster)
    offsets: list[tuple[int, int, int]] = field(default_factory=list)  # affinity offsets (z, y, x)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not self.offsets:
            object.__setattr__(self, "offsets", default_offsets(self.variant))
        object.__setattr__(self, "offsets", [tuple(int(v) for v in o) for o in self.offsets])

    @property
    def pool(self) -> tuple[int, int, int]:
        return (1, 2, 2) if self.variant == "anisotropic" else (2, 2, 2)

    @property
    def pool_total(self) -> tuple[int, int, int]:
        """Product of all pooling factors: block offsets must be multiples of it."""
        return tuple(p ** (self.levels - 1) for p in self.pool)  # type: ignore[return-value]

    @property
    def receptive_radius(self) -> tuple[int, int, int]:
        """Voxels of context (z, y, x) after which the image no longer changes the output.

        Each 3-conv at level ``l`` reaches ``pool**l`` voxels; two convs per level
        on the way down and up (one at the bottom pair), plus the pooling phase.
        """
        radius = []
        for p in self.pool:
            r = 0
            for level in range(self.levels):
                convs = 2 if level == self.levels - 1 else 4
                r += convs * p**level
            r += p ** (self.levels - 1) - 1
            radius.append(r)
        return tuple(radius)  # type: ignore[return-value]

    @property
    def context(self) -> tuple[int, int, int]:
        """Receptive radius rounded up to a multiple of ``pool_total`` (a block-safe halo)."""
        return tuple(-(-r // t) * t for r, t in zip(self.receptive_radius, self.pool_total, strict=True))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["offsets"] = [list(o) for o in self.offsets]
        return d


def _conv_pair(cin: int, cout: int, batch_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv3d(a, b, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm3d(b))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """U-Net: conv pairs, max-pooling, nearest upsampling + 1x1 conv, skip concatenation."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        f = config.fmaps
        widths = [f * 2**level for level in range(config.levels)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths:
            self.down.append(_conv_pair(cin, w, config.batch_norm))
            cin = w
        self.pool = nn.MaxPool3d(config.pool, config.pool)
        self.upsample = nn.Upsample(scale_factor=config.pool, mode="nearest")
        self.reduce = nn.ModuleList(nn.Conv3d(widths[i + 1], widths[i], 1) for i in range(config.levels - 1))
        self.up = nn.ModuleList(
            _conv_pair(2 * widths[i], widths[i], config.batch_norm) for i in range(config.levels - 1)
        )
        self.head = nn.Conv3d(widths[0], len(config.offsets), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (normalised, ``(b, 1, z, y, x)``) -> affinity logits ``(b, n_offsets, z, y, x)``."""
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        for i in reversed(range(self.config.levels - 1)):
            x = self.reduce[i](self.upsample(x))
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)


class Ensemble(nn.Module):
    """Several U-Nets of one architecture whose affinity *probabilities* are averaged.

    Averaging networks trained differently (here: a model and its fine-tuned
    successor) cancels part of their independent errors: on gala's unseen
    test volume (whole-array, merge threshold 0.25, seed radius 80 nm) the
    two members alone reach VOI 0.55 and 0.51, their average 0.40; at twice
    the cost per voxel.  ``forward`` returns the
    logit of the mean probability, so callers apply ``sigmoid`` as for one
    network, and the receptive field is that of one member.
    """

    def __init__(self, members: list[UNet3D]) -> None:
        super().__init__()
        if not members or any(m.config != members[0].config for m in members):
            raise ValueError("ensemble members must share one network configuration")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0)
        return torch.logit(p, eps=1e-6)


def flops_per_voxel(model: nn.Module, shape_zyx: tuple[int, int, int] = (32, 64, 64)) -> float:
    """Model FLOPs per output voxel, counted by ``torch.utils.flop_counter`` on one input."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, 1, *shape_zyx))
    counter = FlopCounterMode(display=False)
    training = model.training
    model.eval()  # a training-mode pass would move batch-norm statistics towards this blank input
    with counter, torch.no_grad():
        model(x)
    model.train(training)
    return counter.get_total_flops() / float(x.numel())
