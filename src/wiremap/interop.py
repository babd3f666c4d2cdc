"""Import volumes into a workspace and export layers out of it.

What can be imported is any ``wiremap.sources`` path (NumPy, TIFF, PNG/TIFF
section directories, HDF5, Zarr / OME-Zarr).  Volumes are read and written
in z-slabs whose size follows the chunk grid of the layer, so memory stays
bounded by one slab, not the volume.

Everything that can be checked is checked before the workspace is touched:
shape, dtype against the layer kind, section shapes and dtypes, and negative
labels.  A failure during the copy (a corrupt section deep in a stack)
removes what was written; a layer being replaced (``overwrite``) is staged
under ``tmp/`` and only swapped in once complete, so it is never lost.
Exports go to a temporary file beside the destination, renamed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tifffile

from wiremap.errors import InputError, LayerExistsError
from wiremap.roi import Roi
from wiremap.sources import HDF5_SUFFIXES, READ_ERRORS, VolumeSource, open_volume_source, split_key
from wiremap.volume import KINDS, Layer, build_pyramid, create_layer
from wiremap.workspace import Workspace

#: Bytes of one z-slab read or written at a time (rounded to whole layer chunks).
SLAB_BYTES = 64 * 2**20
EXPORT_SUFFIXES = (".npy", ".tif", ".tiff", *HDF5_SUFFIXES)
DEFAULT_H5_KEY = "/data"

#: Called after each slab with (sections done, sections in all), e.g. to drive a progress bar.
Progress = Callable[[int, int], None]


# -- import -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportResult:
    """What ``import_volume`` did: the new layer and notes on conversions."""

    layer: Layer
    source: str
    source_dtype: str
    notes: tuple[str, ...]


def storage_dtype(dtype: np.dtype, kind: str) -> tuple[np.dtype, str | None, bool]:
    """(stored dtype, note on the conversion or None, whether values must be checked ≥ 0)."""
    dtype = np.dtype(dtype)
    if kind == "segmentation":
        if dtype.kind == "f":
            raise InputError(f"segmentation labels must be integers, got {dtype}")
        if dtype in (np.uint32, np.uint64):
            return dtype, None, False
        target = np.dtype(np.uint64 if dtype.itemsize == 8 else np.uint32)
        return target, f"labels cast from {dtype} to {target}", dtype.kind == "i"
    if dtype in (np.uint8, np.uint16, np.uint32, np.uint64, np.float32):
        return dtype, None, False
    if dtype.kind == "b":
        return np.dtype(np.uint8), "bool image stored as uint8 (0/1)", False
    if dtype.kind == "i":
        target = np.dtype(f"uint{8 * dtype.itemsize}")
        return target, f"image cast from {dtype} to {target}", True
    if dtype.kind == "f":
        return np.dtype(np.float32), f"image cast from {dtype} to float32", False
    raise InputError(f"an image layer cannot hold {dtype}")


def import_volume(
    ws: Workspace,
    src: str | Path,
    name: str,
    *,
    resolution_nm: Sequence[float],
    kind: str = "image",
    overwrite: bool = False,
    num_scales: int = 1,
    slab_bytes: int = SLAB_BYTES,
    progress: Progress | None = None,
) -> ImportResult:
    """Copy a volume file into layer ``name`` slab by slab; provenance ``import-<name>``."""
    if kind not in KINDS:
        raise InputError(f"layer kind must be one of {KINDS}, got {kind!r}")
    resolution = tuple(float(r) for r in resolution_nm)
    if len(resolution) != 3 or not all(np.isfinite(resolution)) or min(resolution) <= 0:
        raise InputError(f"resolution must be 3 positive numbers in nm (z, y, x), got {tuple(resolution_nm)}")
    if num_scales < 1:
        raise InputError(f"number of scales must be at least 1, got {num_scales}")
    replacing = ws.has_layer(name)
    if replacing and not overwrite:
        raise LayerExistsError(f"layer {name!r} already exists in {ws.url} (use --overwrite)")
    with open_volume_source(src) as source:
        try:
            target, note, check_sign = storage_dtype(source.dtype, kind)
        except InputError as exc:
            raise InputError(f"{source.name}: {exc}") from None
        notes = [note] if note else []
        slab = _slab_z(source.shape, source.dtype.itemsize, slab_bytes)
        if check_sign:
            _check_non_negative(source, slab, kind)
        staging = f"tmp/import-{name.replace('/', '_')}-{uuid.uuid4().hex[:8]}" if replacing else name
        done = False
        try:
            shape = source.shape
            layer = create_layer(ws, staging, shape_zyx=shape, resolution_nm=resolution, dtype=target, kind=kind)
            slab = _slab_z(source.shape, source.dtype.itemsize, slab_bytes, layer.info.chunk_zyx[0])
            for z0 in range(0, source.shape[0], slab):
                z1 = min(z0 + slab, source.shape[0])
                layer.write(source.read(z0, z1).astype(target, copy=False), (z0, 0, 0))
                if progress is not None:
                    progress(z1, source.shape[0])
            if num_scales > 1:
                build_pyramid(layer, num_scales)
            done = True
        finally:
            if not done:
                ws.delete_prefix(f"{ws.layer_key(staging)}/")
    if replacing:
        _move_layer(ws, staging, name)
    ws.write_provenance(
        f"import-{name}",
        parameters={
            "source": str(Path(split_key(str(src))[0]).absolute()),
            "source_name": source.name,
            "source_dtype": source.dtype.name,
            "dtype": target.name,
            "kind": kind,
            "shape_zyx": list(source.shape),
            "resolution_nm": list(resolution),
            "num_scales": num_scales,
            "notes": notes,
        },
        inputs=[],
        outputs=[name],
    )
    return ImportResult(Layer(ws, name), source.name, source.dtype.name, tuple(notes))


def _slab_z(shape: Sequence[int], itemsize: int, slab_bytes: int, chunk_z: int = 1) -> int:
    """Sections per slab: a whole number of chunks, about ``slab_bytes`` (at least one chunk)."""
    per_section = max(1, shape[1] * shape[2] * max(itemsize, 8))  # room for a uint64 cast
    chunks = max(1, slab_bytes // (per_section * chunk_z))
    return int(chunks * chunk_z)


def _check_non_negative(source: VolumeSource, slab: int, kind: str) -> None:
    for z0 in range(0, source.shape[0], slab):
        low = source.read(z0, min(z0 + slab, source.shape[0])).min()
        if low < 0:
            what = "labels" if kind == "segmentation" else "image values"
            raise InputError(
                f"{source.name}: holds negative values (min {low} in sections from {z0}); {kind} {what} must be ≥ 0"
            )


def _move_layer(ws: Workspace, staging: str, name: str) -> None:
    """Replace layer ``name`` by the finished staging layer: chunks first, ``info`` last."""
    src_prefix = f"{ws.layer_key(staging)}/"
    dst_prefix = f"{ws.layer_key(name)}/"
    ws.delete_prefix(dst_prefix)
    keys = ws.list(src_prefix)
    for key in sorted(keys, key=lambda k: k.endswith("/info")):
        ws.write_bytes(dst_prefix + key[len(src_prefix) :], ws.read_bytes(key))
    ws.delete_prefix(src_prefix)


# -- export -----------------------------------------------------------------------------------
def export_volume(
    layer: Layer,
    dest: str | Path,
    roi: Roi | None = None,
    *,
    slab_bytes: int = SLAB_BYTES,
    progress: Progress | None = None,
) -> Path:
    """Write ``roi`` of ``layer`` (default: all) to ``.npy``, ``.tif`` or ``.h5[:/key]``.

    The file appears only when complete (temporary file beside it, then rename);
    exporting into an existing HDF5 file replaces only the named dataset.
    """
    path, key = _split_export_dest(str(dest))
    roi = roi or layer.roi
    if roi.empty or not layer.roi.contains(roi):
        raise InputError(f"ROI {roi} is empty or lies outside layer {layer.name!r} (extent {layer.roi})")
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    dtype = np.dtype(layer.info.dtype)
    slab = _slab_z(roi.shape, dtype.itemsize, slab_bytes, layer.info.chunk_zyx[0])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")

    def slabs() -> Iterator[tuple[int, np.ndarray]]:
        (z0, y0, x0), (z1, y1, x1) = roi.offset, roi.end
        for z in range(z0, z1, slab):
            ze = min(z + slab, z1)
            yield z - z0, layer.read(Roi((z, y0, x0), (ze - z, y1 - y0, x1 - x0)))
            if progress is not None:
                progress(ze - z0, z1 - z0)

    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            # Header, then slabs appended in z (C order): no memory map, whose dirty pages
            # would stay resident up to the file size.
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
            with tmp.open("wb") as fh:
                np.lib.format.write_array_header_1_0(fh, {**header, "shape": roi.shape})
                for _, data in slabs():
                    np.ascontiguousarray(data).tofile(fh)
        elif suffix in (".tif", ".tiff"):
            sections = (section for _, data in slabs() for section in data)
            tifffile.imwrite(
                tmp,
                sections,
                shape=roi.shape,
                dtype=dtype,
                photometric="minisblack",
                bigtiff=roi.size * dtype.itemsize > 2**31,
            )
        else:
            _export_hdf5(layer, path, tmp, key or DEFAULT_H5_KEY, roi, dtype, slabs())
        os.replace(tmp, path)
    except READ_ERRORS as exc:
        raise InputError(f"{dest}: cannot write export: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _split_export_dest(text: str) -> tuple[Path, str | None]:
    head, sep, key = text.rpartition(":")
    if sep and Path(head).suffix.lower() in HDF5_SUFFIXES:
        path, inner = Path(head), key or None
    else:
        path, inner = Path(text), None
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise InputError(f"{text}: unsupported export format {path.suffix!r} (use .npy, .tif/.tiff or .h5)")
    return path, inner


def _export_hdf5(
    layer: Layer,
    path: Path,
    tmp: Path,
    key: str,
    roi: Roi,
    dtype: np.dtype,
    slabs: Iterator[tuple[int, np.ndarray]],
) -> None:
    if path.exists():
        if not h5py.is_hdf5(path):
            raise InputError(f"{path}: exists and is not an HDF5 file; not replacing it")
        shutil.copyfile(path, tmp)  # keep the file's other datasets
    with h5py.File(tmp, "a") as h5:
        if key in h5:
            del h5[key]
        chunks = tuple(min(c, s) for c, s in zip((16, 256, 256), roi.shape, strict=True))
        dset = h5.create_dataset(key, shape=roi.shape, dtype=dtype, chunks=chunks, compression="gzip")
        for z, data in slabs:
            dset[z : z + len(data)] = data
        dset.attrs["axes"] = "zyx"
        dset.attrs["resolution_nm"] = np.asarray(layer.info.resolution_nm)
        dset.attrs["offset_zyx"] = np.asarray(roi.offset)
        dset.attrs["source_layer"] = layer.name
