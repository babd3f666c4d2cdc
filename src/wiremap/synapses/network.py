"""A small 2D U-Net that finds synaptic clefts and tells their sides and type apart.

Serial sections are 6-12x coarser in z than in-plane, and a synapse's
telltale signs (a dark density, a vesicle cloud on one side) are in-plane,
so the network works section by section; 3D comes from linking the
per-section predictions (``detect.py``).  With ``context_sections = k > 0``
it also sees the k sections above and below as extra input channels
(2.5D): a cleft cut en face (normal along z) is a faint grey disc in one
section but shows as a membrane appearing between two cells in its
neighbours.  Tensors are ``(batch, channel, y, x)``.

Output channels (logits; ``torch.sigmoid`` gives probabilities):

  0 cleft  the synaptic cleft / density, the thing to detect
  1 side   near a cleft: 1 on the presynaptic side, 0 on the postsynaptic one
           (a "pre/post side map", the per-voxel form of Synful's direction vectors)
  2 ei     near a cleft: 1 for excitatory (asymmetric density, round vesicles),
           0 for inhibitory (symmetric, flattened vesicles)

Channels 1-2 are trained only near true clefts, so they mean something only
there.  Batch normalisation is used in eval mode (a fixed affine), so the
output at a pixel depends only on the image within ``receptive_radius``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CHANNELS = ("cleft", "side", "ei")


@dataclass(frozen=True)
class SynapseNetConfig:
    """Architecture; stored with the weights so a checkpoint rebuilds itself."""

    fmaps: int = 12  # feature maps at full resolution, doubled per level (capped at 64)
    levels: int = 4  # resolution levels (levels - 1 poolings by 2)
    context_sections: int = 0  # sections above and below given as extra input channels (0: 2D)

    @property
    def in_channels(self) -> int:
        return 2 * self.context_sections + 1

    @property
    def pool_total(self) -> int:
        """Input sizes must be multiples of this (the stage pads)."""
        return 2 ** (self.levels - 1)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context that influence an output pixel (two 3x3 convs per level, both ways)."""
        radius = 0
        for level in range(self.levels):
            radius += 2 * 2**level * (2 if level < self.levels - 1 else 1)
        return radius

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SynapseNet(nn.Module):
    """U-Net: ``(B, C, Y, X)`` sections (C = ``in_channels``, the middle one predicted) -> ``(B, 3, Y, X)`` logits."""

    def __init__(self, config: SynapseNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SynapseNetConfig()
        widths = [min(self.config.fmaps * 2**i, 64) for i in range(self.config.levels)]
        self.down = nn.ModuleList()
        cin = self.config.in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for lo, hi in zip(widths[:-1][::-1], widths[1:][::-1], strict=False):
            self.up.append(nn.ConvTranspose2d(hi, lo, 2, stride=2))
            self.merge.append(_block(2 * lo, lo))
        self.head = nn.Conv2d(widths[0], len(CHANNELS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge, strict=False):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
