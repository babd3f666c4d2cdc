"""Precomputed volume layers, read and written with TensorStore.

A layer lives under ``layers/<name>/`` of a workspace in Neuroglancer's
precomputed format, so the viewer reads it directly.  wiremap code sees
arrays in ``(z, y, x)`` order with resolutions in nm ``(z, y, x)``;
precomputed stores ``(x, y, z, channel)``: the transpose happens here and
nowhere else.

Kinds and encodings:
  image         uint8 (``raw`` or ``jpeg``), or float32/uint32 for predictions (``raw``)
  segmentation  uint64 (or uint32) with ``compressed_segmentation``

Scale 0 is full resolution; ``build_pyramid`` adds downsampled scales
(mean for images, mode for labels), halving y/x and halving z only once the
in-plane resolution has caught up with z, as for anisotropic serial sections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tensorstore as ts

from wiremap.errors import InputError, LayerExistsError, LayerNotFoundError, WorkspaceError
from wiremap.roi import Roi
from wiremap.workspace import Workspace

KINDS = ("image", "segmentation")
SEGMENTATION_DTYPES = ("uint32", "uint64")
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "uint64", "float32")
DEFAULT_CHUNK_ZYX = (16, 128, 128)


@dataclass(frozen=True)
class LayerInfo:
    """What a layer holds; all tuples in ``(z, y, x)``."""

    name: str
    kind: str
    dtype: str
    shape_zyx: tuple[int, int, int]
    resolution_nm: tuple[float, float, float]
    chunk_zyx: tuple[int, int, int]
    encoding: str
    num_scales: int


class Layer:
    """One precomputed layer: ``read`` and ``write`` ROIs of it in ``(z, y, x)``."""

    def __init__(self, ws: Workspace, name: str) -> None:
        self.ws = ws
        self.name = name
        self.key = ws.layer_key(name)
        if not ws.has_layer(name):
            raise LayerNotFoundError(
                f"layer {name!r} not found in workspace {ws.url} (layers: {', '.join(ws.layers()) or 'none'})"
            )
        self.raw_info: dict[str, Any] = ws.read_json(f"{self.key}/info")
        self._stores: dict[int, ts.TensorStore] = {}
        try:
            scale0 = self.raw_info["scales"][0]
            self.info = LayerInfo(
                name=name,
                kind=self.raw_info["type"],
                dtype=self.raw_info["data_type"],
                shape_zyx=tuple(int(v) for v in reversed(scale0["size"])),  # type: ignore[arg-type]
                resolution_nm=tuple(float(v) for v in reversed(scale0["resolution"])),  # type: ignore[arg-type]
                chunk_zyx=tuple(int(v) for v in reversed(scale0["chunk_sizes"][0])),  # type: ignore[arg-type]
                encoding=scale0["encoding"],
                num_scales=len(self.raw_info["scales"]),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise WorkspaceError(f"layer {name!r}: malformed precomputed info ({exc})") from exc

    @property
    def roi(self) -> Roi:
        return Roi.from_shape(self.info.shape_zyx)

    def store(self, scale: int = 0) -> ts.TensorStore:
        """The TensorStore of one scale, in precomputed's (x, y, z, c) order."""
        if scale not in self._stores:
            if not 0 <= scale < self.info.num_scales:
                raise InputError(f"layer {self.name!r} has no scale {scale} (has {self.info.num_scales})")
            spec = {
                "driver": "neuroglancer_precomputed",
                "kvstore": self.ws.child_spec(self.key),
                "scale_index": scale,
                "recheck_cached_metadata": False,
            }
            self._stores[scale] = ts.open(spec, read=True, write=True).result()
        return self._stores[scale]

    def scale_shape(self, scale: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in reversed(self.raw_info["scales"][scale]["size"]))  # type: ignore[return-value]

    def read(self, roi: Roi | None = None, scale: int = 0) -> np.ndarray:
        """Voxels of ``roi`` (default: all), ``(z, y, x)``; an ROI outside the layer is an error."""
        full = Roi.from_shape(self.scale_shape(scale))
        roi = roi or full
        if not full.contains(roi):
            raise InputError(f"ROI {roi} lies outside layer {self.name!r} (extent {full})")
        (z0, y0, x0), (z1, y1, x1) = roi.offset, roi.end
        # Fortran order in (x, y, z) is C order in (z, y, x): the transpose is free.
        data = self.store(scale)[x0:x1, y0:y1, z0:z1, 0].read(order="F").result()
        return data.transpose(2, 1, 0)

    def write(self, data: np.ndarray, offset: Sequence[int] = (0, 0, 0), scale: int = 0) -> None:
        """Write a ``(z, y, x)`` array with its first voxel at ``offset``."""
        if data.ndim != 3:
            raise InputError(f"layer {self.name!r} needs a 3D (z, y, x) array, got {data.ndim}D")
        if data.dtype != np.dtype(self.info.dtype):
            raise InputError(f"layer {self.name!r} holds {self.info.dtype}, got {data.dtype}")
        roi = Roi(tuple(offset), data.shape)  # type: ignore[arg-type]
        full = Roi.from_shape(self.scale_shape(scale))
        if not full.contains(roi):
            raise InputError(f"write of {roi} lies outside layer {self.name!r} (extent {full})")
        (z0, y0, x0), (z1, y1, x1) = roi.offset, roi.end
        self.store(scale)[x0:x1, y0:y1, z0:z1, 0].write(data.transpose(2, 1, 0)).result()


def create_layer(
    ws: Workspace,
    name: str,
    *,
    shape_zyx: Sequence[int],
    resolution_nm: Sequence[float],
    dtype: str | np.dtype,
    kind: str = "image",
    chunk_zyx: Sequence[int] | None = None,
    encoding: str | None = None,
    overwrite: bool = False,
) -> Layer:
    """Create an empty layer (scale 0 only); refuses to replace one unless ``overwrite``."""
    dtype = np.dtype(dtype).name
    if kind not in KINDS:
        raise InputError(f"layer kind must be one of {KINDS}, got {kind!r}")
    allowed = SEGMENTATION_DTYPES if kind == "segmentation" else IMAGE_DTYPES
    if dtype not in allowed:
        raise InputError(f"a {kind} layer cannot hold {dtype} (allowed: {', '.join(allowed)})")
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"layer shape must be 3 positive sizes (z, y, x), got {tuple(shape_zyx)}")
    resolution = tuple(float(r) for r in resolution_nm)
    if len(resolution) != 3 or min(resolution) <= 0:
        raise InputError(f"resolution must be 3 positive numbers in nm (z, y, x), got {resolution_nm}")
    if ws.has_layer(name):
        if not overwrite:
            raise LayerExistsError(f"layer {name!r} already exists in {ws.url} (use --overwrite)")
        ws.delete_prefix(f"{ws.layer_key(name)}/")
    chunk = tuple(min(c, s) for c, s in zip(chunk_zyx or DEFAULT_CHUNK_ZYX, shape, strict=True))
    if encoding is None:
        encoding = "compressed_segmentation" if kind == "segmentation" else "raw"
    if encoding == "jpeg" and dtype != "uint8":
        raise InputError("jpeg encoding needs a uint8 image layer")
    scale = _scale_metadata(shape, resolution, chunk, encoding)
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": ws.child_spec(ws.layer_key(name)),
        "multiscale_metadata": {"type": kind, "data_type": dtype, "num_channels": 1},
        "scale_metadata": scale,
        "create": True,
    }
    ts.open(spec).result()
    return Layer(ws, name)


def _scale_metadata(
    shape: tuple[int, ...], resolution: tuple[float, ...], chunk: tuple[int, ...], encoding: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "size": list(reversed(shape)),
        "resolution": list(reversed(resolution)),
        "chunk_size": list(reversed(chunk)),
        "encoding": encoding,
        "voxel_offset": [0, 0, 0],
    }
    if encoding == "compressed_segmentation":
        meta["compressed_segmentation_block_size"] = [8, 8, 8]
    return meta


def write_volume(
    ws: Workspace,
    name: str,
    data: np.ndarray,
    *,
    resolution_nm: Sequence[float],
    kind: str = "image",
    overwrite: bool = False,
    encoding: str | None = None,
    num_scales: int = 1,
) -> Layer:
    """Create a layer from an in-memory ``(z, y, x)`` array, with ``num_scales`` pyramid levels."""
    if data.ndim != 3:
        raise InputError(f"layer {name!r} needs a 3D (z, y, x) array, got shape {data.shape}")
    layer = create_layer(
        ws,
        name,
        shape_zyx=data.shape,
        resolution_nm=resolution_nm,
        dtype=data.dtype,
        kind=kind,
        encoding=encoding,
        overwrite=overwrite,
    )
    layer.write(data)
    if num_scales > 1:
        build_pyramid(layer, num_scales)
    return Layer(ws, name)


def pyramid_factors(resolution_nm: Sequence[float]) -> tuple[int, int, int]:
    """Downsampling factor (z, y, x) to the next scale: z halves once y/x have caught up with it."""
    z, y, _ = resolution_nm
    return (2, 2, 2) if 2 * y > z else (1, 2, 2)


def build_pyramid(layer: Layer, num_scales: int) -> Layer:
    """Add scales 1..num_scales-1 (mean for images, mode for labels), slab by slab in z."""
    method: Literal["mode", "mean"] = "mode" if layer.info.kind == "segmentation" else "mean"
    for scale in range(layer.info.num_scales, num_scales):
        prev_meta = layer.raw_info["scales"][scale - 1]
        prev_res = tuple(reversed(prev_meta["resolution"]))
        factors = pyramid_factors(prev_res)
        prev_shape = layer.scale_shape(scale - 1)
        shape = tuple(math.ceil(s / f) for s, f in zip(prev_shape, factors, strict=True))
        if min(shape) < 1 or shape == prev_shape:
            break
        resolution = tuple(r * f for r, f in zip(prev_res, factors, strict=True))
        chunk = tuple(min(c, s) for c, s in zip(layer.info.chunk_zyx, shape, strict=True))
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": layer.ws.child_spec(layer.key),
            "scale_metadata": _scale_metadata(shape, resolution, chunk, layer.info.encoding),
        }
        target = ts.open(spec, create=True, open=True).result()
        source = ts.downsample(layer.store(scale - 1), list(reversed(factors)) + [1], method=method)
        slab = chunk[0]
        for z0 in range(0, shape[0], slab):
            z1 = min(z0 + slab, shape[0])
            target[:, :, z0:z1, :].write(source[:, :, z0:z1, :].read().result()).result()
        layer = Layer(layer.ws, layer.name)
    return layer


def open_layer(ws: Workspace, name: str) -> Layer:
    return Layer(ws, name)
