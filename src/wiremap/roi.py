"""Regions of interest: axis-aligned boxes in voxels, ``(z, y, x)`` order.

A ``Roi(offset, shape)`` is half-open: it covers ``offset <= p < offset + shape``.
Empty ROIs (any shape entry 0) are allowed and intersect to empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wiremap.errors import InputError

ZYX = tuple[int, int, int]


def _zyx(values: Sequence[int] | np.ndarray, what: str) -> ZYX:
    if len(values) != 3:
        raise InputError(f"{what} needs 3 values (z, y, x), got {len(values)}")
    return (int(values[0]), int(values[1]), int(values[2]))


@dataclass(frozen=True)
class Roi:
    """A box of voxels: ``offset`` and ``shape`` in ``(z, y, x)``."""

    offset: ZYX
    shape: ZYX

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", _zyx(self.offset, "ROI offset"))
        object.__setattr__(self, "shape", _zyx(self.shape, "ROI shape"))
        if min(self.shape) < 0:
            raise InputError(f"ROI shape must not be negative, got {self.shape}")

    @classmethod
    def from_shape(cls, shape: Sequence[int]) -> Roi:
        return cls((0, 0, 0), _zyx(shape, "shape"))

    @classmethod
    def parse(cls, text: str) -> Roi:
        """``"z0:z1,y0:y1,x0:x1"`` -> Roi; a clear error on anything else."""
        parts = text.split(",")
        if len(parts) != 3:
            raise InputError(f"ROI {text!r}: expected z0:z1,y0:y1,x0:x1")
        starts, stops = [], []
        for axis, part in zip("zyx", parts, strict=True):
            bounds = part.split(":")
            try:
                start, stop = (int(b) for b in bounds)
            except ValueError:
                raise InputError(f"ROI {text!r}: {axis} range {part!r} is not start:stop") from None
            if stop < start or start < 0:
                raise InputError(f"ROI {text!r}: {axis} range {part!r} is empty or negative")
            starts.append(start)
            stops.append(stop)
        return cls(tuple(starts), tuple(b - a for a, b in zip(starts, stops, strict=True)))  # type: ignore[arg-type]

    @property
    def end(self) -> ZYX:
        return tuple(o + s for o, s in zip(self.offset, self.shape, strict=True))  # type: ignore[return-value]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def empty(self) -> bool:
        return self.size == 0

    def to_slices(self, relative_to: Roi | None = None) -> tuple[slice, slice, slice]:
        """Slices selecting this ROI from an array covering ``relative_to`` (default: origin)."""
        base = relative_to.offset if relative_to is not None else (0, 0, 0)
        return tuple(slice(o - b, o - b + s) for o, b, s in zip(self.offset, base, self.shape, strict=True))  # type: ignore[return-value]

    def intersect(self, other: Roi) -> Roi:
        start = np.maximum(self.offset, other.offset)
        stop = np.minimum(self.end, other.end)
        return Roi(tuple(start), tuple(np.maximum(stop - start, 0)))  # type: ignore[arg-type]

    def grow(self, context: Sequence[int]) -> Roi:
        """Grow by ``context`` voxels on every side (the halo of a block)."""
        c = _zyx(context, "context")
        return Roi(
            tuple(o - k for o, k in zip(self.offset, c, strict=True)),  # type: ignore[arg-type]
            tuple(s + 2 * k for s, k in zip(self.shape, c, strict=True)),  # type: ignore[arg-type]
        )

    def contains(self, other: Roi) -> bool:
        return all(a <= b for a, b in zip(self.offset, other.offset, strict=True)) and all(
            a >= b for a, b in zip(self.end, other.end, strict=True)
        )

    def __str__(self) -> str:
        return ",".join(f"{o}:{e}" for o, e in zip(self.offset, self.end, strict=True))
