"""Import volumes into a workspace and export layers out of it.

Sources are named by a path, with an optional inner key after a colon::

    vol.npy               NumPy array (memory-mapped slab by slab)
    vol.npz[:key]         NumPy archive: the named array, or the first one (loaded whole:
                          zip members cannot be memory-mapped)
    stack.tif             multi-page TIFF (one page per section, read page by page)
    slices/               directory of PNG/TIFF sections, in natural order (2 < 10)
    vol.h5[:/group/data]  HDF5 dataset (the only dataset if no key is given)
    vol.zarr[:path]       Zarr v2/v3 array, or a member of a Zarr group / OME-Zarr image

Every source becomes a ``(z, y, x)`` volume: a 2D array is one section
(z = 1); extra axes (channel, time) are accepted only when they have size 1.
Volumes are read and written in z-slabs whose size follows the chunk grid of
the layer, so memory stays bounded by one slab, not the volume.

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
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tifffile
import zarr
import zarr.errors
from PIL import Image

from wiremap.errors import InputError, LayerExistsError, WiremapError
from wiremap.roi import Roi
from wiremap.volume import KINDS, Layer, build_pyramid, create_layer
from wiremap.workspace import Workspace

#: Bytes of one z-slab read or written at a time (rounded to whole layer chunks).
SLAB_BYTES = 64 * 2**20
SLICE_SUFFIXES = (".png", ".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
EXPORT_SUFFIXES = (".npy", ".tif", ".tiff", *HDF5_SUFFIXES)
DEFAULT_H5_KEY = "/data"

# What the readers raise on unreadable, truncated or malformed files.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, IndexError, TypeError, EOFError, RuntimeError,
    zipfile.BadZipFile, tifffile.TiffFileError, zarr.errors.BaseZarrError,
)  # fmt: skip
#: Called after each slab with (sections done, sections in all), e.g. to drive a progress bar.
Progress = Callable[[int, int], None]


# -- sources ----------------------------------------------------------------------------------
class VolumeSource:
    """A ``(z, y, x)`` volume in a file, read slab by slab; use as a context manager."""

    def __init__(
        self,
        name: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        reader: Callable[[int, int], np.ndarray],
        closer: Callable[[], None] | None = None,
    ) -> None:
        self.name = name  # how messages name it: "vol.h5:/data"
        self.shape = shape
        self.dtype = dtype
        self._reader = reader
        self._closer = closer

    def read(self, z0: int = 0, z1: int | None = None) -> np.ndarray:
        """Sections ``z0:z1`` as a ``(z, y, x)`` array; unreadable data is an ``InputError``."""
        z1 = self.shape[0] if z1 is None else z1
        try:
            data = np.asarray(self._reader(z0, z1))
        except WiremapError:
            raise
        except READ_ERRORS as exc:
            raise InputError(f"{self.name}: cannot read sections {z0}:{z1}: {exc}") from exc
        expected = (z1 - z0, *self.shape[1:])
        if data.shape != expected or data.dtype != self.dtype:
            raise InputError(
                f"{self.name}: sections {z0}:{z1} read as {data.dtype} {data.shape}, "
                f"expected {self.dtype} {expected}"
            )
        return data

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_volume_source(src: str | Path) -> np.ndarray:
    """The whole volume of ``src`` (see the module docstring) as a ``(z, y, x)`` array."""
    with open_volume_source(src) as source:
        return source.read()


def open_volume_source(src: str | Path) -> VolumeSource:
    """Open ``src`` lazily, checking its shape and dtype; ``InputError`` on anything wrong."""
    path, key = _split_key(str(src))
    try:
        if path.is_dir():
            if _is_zarr(path):
                return _open_zarr(path, key, str(src))
            _no_key(path, key, "a directory of slices")
            return _open_slices(path)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            _no_key(path, key, ".npy")
            with path.open("rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise InputError(f"{src}: not a NumPy .npy file (no NUMPY header)")
            return _array_source(str(path), _NpyFile(path))
        if suffix == ".npz":
            return _open_npz(path, key)
        if suffix in (".tif", ".tiff"):
            _no_key(path, key, "TIFF")
            return _open_tiff(path)
        if suffix in HDF5_SUFFIXES:
            return _open_hdf5(path, key)
    except WiremapError:
        raise
    except READ_ERRORS as exc:
        raise InputError(f"{src}: not a readable {path.suffix or 'volume'} file: {exc}") from exc
    raise InputError(
        f"{src}: unsupported volume format {path.suffix!r} "
        "(use .npy, .npz, .tif/.tiff, .h5, .zarr or a directory of PNG/TIFF slices)"
    )


def _split_key(text: str) -> tuple[Path, str | None]:
    """``"vol.h5:/a/b"`` -> (Path("vol.h5"), "/a/b"); an existing path is never split."""
    if Path(text).exists():
        return Path(text), None
    head, sep, key = text.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head), key or None
    raise InputError(f"{text}: no such file or directory")


def _no_key(path: Path, key: str | None, what: str) -> None:
    if key is not None:
        raise InputError(f"{path}:{key}: {what} has no inner keys (drop ':{key}')")


def _array_source(name: str, arr: Any, closer: Callable[[], None] | None = None) -> VolumeSource:
    """A source over any sliceable array (ndarray, memmap, h5py/zarr array), made (z, y, x).

    The caller closes ``closer``'s file if this raises.
    """
    shape = tuple(int(s) for s in arr.shape)
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biuf":
        raise InputError(f"{name}: unsupported dtype {dtype} (need integers, floats or bool)")
    if len(shape) < 2:
        raise InputError(f"{name}: a volume needs 2 or 3 axes (z, y, x), got shape {shape}")
    if min(shape) < 1:
        raise InputError(f"{name}: empty volume of shape {shape}")
    if len(shape) == 2:
        return VolumeSource(
            name, (1, *shape), dtype, lambda z0, z1: np.asarray(arr[:, :])[None][z0:z1], closer
        )
    drop: list[int] = []
    for axis, size in enumerate(shape):
        if len(shape) - len(drop) > 3 and size == 1:
            drop.append(axis)
    if len(shape) - len(drop) > 3:
        raise InputError(
            f"{name}: shape {shape} has {len(shape)} axes; wiremap volumes are single-channel "
            "(z, y, x), extra axes (channel, time) must have size 1"
        )
    keep = [a for a in range(len(shape)) if a not in drop]

    def reader(z0: int, z1: int) -> np.ndarray:
        index: list[Any] = [0 if a in drop else slice(None) for a in range(len(shape))]
        index[keep[0]] = slice(z0, z1)
        return np.asarray(arr[tuple(index)])

    zyx = tuple(shape[a] for a in keep)
    return VolumeSource(name, zyx, dtype, reader, closer)  # type: ignore[arg-type]


class _NpyFile:
    """A ``.npy`` file sliced through a fresh memory map per read.

    A long-lived map keeps every page it touched resident, so resident memory would grow to
    the file size; a map per slab is dropped with the slab.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        self.shape, self.dtype = arr.shape, arr.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])


def _open_npz(path: Path, key: str | None) -> VolumeSource:
    # npz members are compressed zip entries: they cannot be memory-mapped, so the array is loaded.
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if not names:
            raise InputError(f"{path}: the .npz archive holds no arrays")
        key = key or names[0]
        if key not in names:
            raise InputError(f"{path}: no array {key!r} in the archive (has: {', '.join(names)})")
        return _array_source(f"{path}:{key}", archive[key])


def _open_tiff(path: Path) -> VolumeSource:
    tif = tifffile.TiffFile(path)
    try:
        if not tif.series:
            raise InputError(f"{path}: holds no readable image (corrupt or empty TIFF)")
        if len(tif.series) != 1:
            shapes = ", ".join(str(s.shape) for s in tif.series)
            raise InputError(
                f"{path}: pages of different shapes or types ({shapes}); need one stack"
            )
        series = tif.series[0]
        pages = [page for page in series.pages if page is not None]
        if (
            len(series.shape) == 3
            and len(pages) == series.shape[0]
            and pages[0].shape == series.shape[1:]
        ):
            # One page per section: read only the pages of each slab.
            def read_pages(z0: int, z1: int) -> np.ndarray:
                return np.stack([pages[i].asarray() for i in range(z0, z1)])

            return VolumeSource(
                str(path), series.shape, np.dtype(series.dtype), read_pages, tif.close
            )
        return _array_source(str(path), series.asarray(), tif.close)
    except BaseException:
        tif.close()
        raise


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _slice_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one section file, from its header only (nothing decoded)."""
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            probe = np.asarray(Image.new(im.mode, (1, 1)))  # dtype and channels of this mode
            return (im.height, im.width, *probe.shape[2:]), probe.dtype
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path}: holds no readable image (corrupt or empty TIFF)")
        return tuple(tif.series[0].shape), np.dtype(tif.series[0].dtype)


def _read_slice(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            return np.asarray(im)
    return tifffile.imread(path)


def _open_slices(directory: Path) -> VolumeSource:
    files = sorted(
        (
            p
            for p in directory.iterdir()
            if p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise InputError(f"{directory}: no .png/.tif/.tiff slices in this directory")
    headers = []
    for path in files:
        try:
            headers.append(_slice_header(path))
        except READ_ERRORS as exc:
            raise InputError(f"{path}: not a readable image: {exc}") from exc
    shape, dtype = headers[0]
    if len(shape) != 2:
        raise InputError(
            f"{files[0]}: a section must be one 2D grey-value image, got shape {shape}"
        )
    for path, (other_shape, other_dtype) in zip(files, headers, strict=True):
        if other_shape != shape or other_dtype != dtype:
            raise InputError(
                f"{path}: section is {other_dtype} {other_shape}, but {files[0].name} is "
                f"{dtype} {shape} (all slices must share shape and dtype)"
            )

    def reader(z0: int, z1: int) -> np.ndarray:
        sections = []
        for path in files[z0:z1]:
            try:
                section = _read_slice(path)
            except READ_ERRORS as exc:
                raise InputError(f"{path}: cannot read this section: {exc}") from exc
            if section.shape != shape or section.dtype != dtype:
                raise InputError(
                    f"{path}: decodes as {section.dtype} {section.shape}, not {dtype} {shape}"
                )
            sections.append(section)
        return np.stack(sections)

    return VolumeSource(f"{directory}/", (len(files), *shape), dtype, reader)  # type: ignore[arg-type]


def _open_hdf5(path: Path, key: str | None) -> VolumeSource:
    h5 = h5py.File(path, "r")
    try:
        datasets: list[str] = []
        h5.visititems(
            lambda n, obj: datasets.append("/" + n) if isinstance(obj, h5py.Dataset) else None
        )
        if key is None:
            if len(datasets) != 1:
                listing = ", ".join(datasets) or "none"
                raise InputError(
                    f"{path}: holds {len(datasets)} datasets ({listing}); name one as {path}:/path"
                )
            key = datasets[0]
        node = h5.get(key)
        if not isinstance(node, h5py.Dataset):
            what = "a group, not a dataset" if node is not None else "not found"
            raise InputError(f"{path}:{key}: {what} (datasets: {', '.join(datasets) or 'none'})")
        return _array_source(f"{path}:{key}", node, h5.close)
    except BaseException:
        h5.close()
        raise


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any(
        (path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup")
    )


def _open_zarr(path: Path, key: str | None, name: str) -> VolumeSource:
    node = zarr.open(store=str(path), mode="r")
    if key is not None:
        if not isinstance(node, zarr.Group) or key.strip("/") not in node:
            raise InputError(f"{name}: no array {key!r} in {path}")
        node = node[key.strip("/")]
    if isinstance(node, zarr.Group):
        # OME-Zarr keeps full resolution as the first dataset of its first multiscale.
        attrs: dict[str, Any] = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            key = str(multiscales[0]["datasets"][0]["path"])
        else:
            arrays = [
                n for n, member in node.members(max_depth=None) if isinstance(member, zarr.Array)
            ]
            if len(arrays) != 1:
                listing = ", ".join(sorted(arrays)) or "none"
                raise InputError(
                    f"{path}: Zarr group holds {len(arrays)} arrays ({listing}); "
                    f"name one as {path}:name"
                )
            key = arrays[0]
        node = node[str(key)]
        name = f"{path}:{key}"
    if not isinstance(node, zarr.Array):
        raise InputError(f"{name}: not a Zarr array")
    return _array_source(name, node)


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
        raise InputError(
            f"resolution must be 3 positive numbers in nm (z, y, x), got {tuple(resolution_nm)}"
        )
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
        staging = (
            f"tmp/import-{name.replace('/', '_')}-{uuid.uuid4().hex[:8]}" if replacing else name
        )
        done = False
        try:
            shape = source.shape
            layer = create_layer(
                ws, staging, shape_zyx=shape, resolution_nm=resolution, dtype=target, kind=kind
            )
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
            "source": str(Path(_split_key(str(src))[0]).absolute()),
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
                f"{source.name}: holds negative values (min {low} in sections from {z0}); "
                f"{kind} {what} must be ≥ 0"
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
        raise InputError(
            f"ROI {roi} is empty or lies outside layer {layer.name!r} (extent {layer.roi})"
        )
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
        raise InputError(
            f"{text}: unsupported export format {path.suffix!r} (use .npy, .tif/.tiff or .h5)"
        )
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
        dset = h5.create_dataset(
            key, shape=roi.shape, dtype=dtype, chunks=chunks, compression="gzip"
        )
        for z, data in slabs:
            dset[z : z + len(data)] = data
        dset.attrs["axes"] = "zyx"
        dset.attrs["resolution_nm"] = np.asarray(layer.info.resolution_nm)
        dset.attrs["offset_zyx"] = np.asarray(roi.offset)
        dset.attrs["source_layer"] = layer.name
