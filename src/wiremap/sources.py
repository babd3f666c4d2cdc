"""External volumes (files a lab already has), opened lazily as ``(z, y, x)`` sources.

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
A source is read in z-slabs, so memory stays bounded by one slab.  Section
shapes and dtypes of slice directories are checked from their headers before
any pixel is read; unreadable files raise :class:`InputError` naming them.
``wiremap.interop`` copies sources into workspace layers.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tifffile
import zarr
import zarr.errors
from PIL import Image

from wiremap.errors import InputError, WiremapError

SLICE_SUFFIXES = (".png", ".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")

# What the readers raise on unreadable, truncated or malformed files.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, IndexError, TypeError, EOFError, RuntimeError,
    zipfile.BadZipFile, tifffile.TiffFileError, zarr.errors.BaseZarrError,
)  # fmt: skip


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
                f"{self.name}: sections {z0}:{z1} read as {data.dtype} {data.shape}, expected {self.dtype} {expected}"
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
    path, key = split_key(str(src))
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


def split_key(text: str) -> tuple[Path, str | None]:
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
        return VolumeSource(name, (1, *shape), dtype, lambda z0, z1: np.asarray(arr[:, :])[None][z0:z1], closer)
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
            raise InputError(f"{path}: pages of different shapes or types ({shapes}); need one stack")
        series = tif.series[0]
        pages = [page for page in series.pages if page is not None]
        if len(series.shape) == 3 and len(pages) == series.shape[0] and pages[0].shape == series.shape[1:]:
            # One page per section: read only the pages of each slab.
            def read_pages(z0: int, z1: int) -> np.ndarray:
                return np.stack([pages[i].asarray() for i in range(z0, z1)])

            return VolumeSource(str(path), series.shape, np.dtype(series.dtype), read_pages, tif.close)
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
        (p for p in directory.iterdir() if p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")),
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
        raise InputError(f"{files[0]}: a section must be one 2D grey-value image, got shape {shape}")
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
                raise InputError(f"{path}: decodes as {section.dtype} {section.shape}, not {dtype} {shape}")
            sections.append(section)
        return np.stack(sections)

    return VolumeSource(f"{directory}/", (len(files), *shape), dtype, reader)  # type: ignore[arg-type]


def _open_hdf5(path: Path, key: str | None) -> VolumeSource:
    h5 = h5py.File(path, "r")
    try:
        datasets: list[str] = []
        h5.visititems(lambda n, obj: datasets.append("/" + n) if isinstance(obj, h5py.Dataset) else None)
        if key is None:
            if len(datasets) != 1:
                listing = ", ".join(datasets) or "none"
                raise InputError(f"{path}: holds {len(datasets)} datasets ({listing}); name one as {path}:/path")
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
            arrays = [n for n, member in node.members(max_depth=None) if isinstance(member, zarr.Array)]
            if len(arrays) != 1:
                listing = ", ".join(sorted(arrays)) or "none"
                raise InputError(f"{path}: Zarr group holds {len(arrays)} arrays ({listing}); name one as {path}:name")
            key = arrays[0]
        node = node[str(key)]
        name = f"{path}:{key}"
    if not isinstance(node, zarr.Array):
        raise InputError(f"{name}: not a Zarr array")
    return _array_source(name, node)
