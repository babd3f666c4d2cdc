"""Volume import/export: every format round-trips exactly; every bad input is a clear InputError
that leaves the workspace as it was; exports never leave half-written files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from wiremap import interop
from wiremap.cli import main
from wiremap.errors import InputError, LayerExistsError, LayerNotFoundError, WiremapError
from wiremap.interop import export_volume, import_volume, storage_dtype
from wiremap.roi import Roi
from wiremap.sources import open_volume_source, read_volume_source
from wiremap.volume import Layer, write_volume
from wiremap.workspace import Workspace

RES = (40.0, 4.0, 4.0)
DTYPES = ("uint8", "uint32", "uint64")


def make_volume(dtype: str, shape: tuple[int, int, int] = (5, 12, 10), seed: int = 0) -> np.ndarray:
    """Random values over the whole dtype range, extremes included (exactness of uint64)."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, info.max, size=shape, dtype=dtype, endpoint=True)
    vol[0, 0, 0], vol[-1, -1, -1], vol[1, 2, 3] = info.max, 0, info.max - 1
    return vol


def kind_of(dtype: str) -> str:
    return "image" if dtype == "uint8" else "segmentation"


def snapshot(ws: Workspace) -> dict[str, bytes]:
    return {key: ws.read_bytes(key) for key in ws.list()}


# -- writers of every source format --------------------------------------------------------------
def write_npy(tmp: Path, vol: np.ndarray) -> str:
    np.save(tmp / "vol.npy", vol)
    return str(tmp / "vol.npy")


def write_npz_first(tmp: Path, vol: np.ndarray) -> str:
    np.savez(tmp / "vol.npz", vol, np.zeros(3))
    return str(tmp / "vol.npz")


def write_npz_key(tmp: Path, vol: np.ndarray) -> str:
    np.savez_compressed(tmp / "vol.npz", other=np.zeros((2, 2, 2)), labels=vol)
    return f"{tmp / 'vol.npz'}:labels"


def write_tiff(tmp: Path, vol: np.ndarray) -> str:
    tifffile.imwrite(tmp / "stack.tif", vol)
    return str(tmp / "stack.tif")


def write_tiff_slices(tmp: Path, vol: np.ndarray) -> str:
    (tmp / "slices").mkdir()
    for z, section in enumerate(vol):
        tifffile.imwrite(tmp / "slices" / f"s{z}.tiff", section)
    return str(tmp / "slices")


def write_h5(tmp: Path, vol: np.ndarray) -> str:
    with h5py.File(tmp / "vol.h5", "w") as h5:
        h5.create_dataset("volumes/raw", data=vol, chunks=(1, 4, 4))
        h5.create_dataset("meta/ids", data=np.arange(3))
    return f"{tmp / 'vol.h5'}:/volumes/raw"


def write_zarr2(tmp: Path, vol: np.ndarray) -> str:
    arr = zarr.create_array(tmp / "vol.zarr", shape=vol.shape, dtype=vol.dtype, chunks=(2, 5, 5), zarr_format=2)
    arr[:] = vol
    return str(tmp / "vol.zarr")


def write_zarr3_member(tmp: Path, vol: np.ndarray) -> str:
    group = zarr.open_group(tmp / "vol.zarr", mode="w", zarr_format=3)
    group.create_array("seg/full", shape=vol.shape, dtype=vol.dtype, chunks=(2, 5, 5))[:] = vol
    group.create_array("other", shape=(2, 2, 2), dtype="uint8")
    return f"{tmp / 'vol.zarr'}:seg/full"


WRITERS = {
    "npy": write_npy,
    "npz": write_npz_first,
    "npz-key": write_npz_key,
    "tiff": write_tiff,
    "tiff-slices": write_tiff_slices,
    "h5": write_h5,
    "zarr2": write_zarr2,
    "zarr3-member": write_zarr3_member,
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_import_round_trip_exact(workspace, tmp_path, fmt, dtype):
    vol = make_volume(dtype)
    src = WRITERS[fmt](tmp_path, vol)
    assert np.array_equal(read_volume_source(src), vol)
    result = import_volume(workspace, src, "vol", resolution_nm=RES, kind=kind_of(dtype))
    assert result.notes == ()
    layer = Layer(workspace, "vol")
    assert layer.info.dtype == dtype
    assert layer.info.shape_zyx == vol.shape
    assert layer.info.resolution_nm == RES
    out = layer.read()
    assert out.dtype == vol.dtype
    assert np.array_equal(out, vol)


def test_png_slices_natural_order(workspace, tmp_path):
    (tmp_path / "png").mkdir()
    vol = make_volume("uint8", (12, 6, 7))
    for z, section in enumerate(vol):  # names sort as 1 < 2 < 10 only when natural
        Image.fromarray(section).save(tmp_path / "png" / f"sec_{z + 1}.png")
    (tmp_path / "png" / "README.txt").write_text("not a slice")
    assert np.array_equal(read_volume_source(tmp_path / "png"), vol)
    sixteen = make_volume("uint16", (3, 4, 5))
    (tmp_path / "png16").mkdir()
    for z, section in enumerate(sixteen):
        Image.fromarray(section).save(tmp_path / "png16" / f"{z}.png")
    assert np.array_equal(read_volume_source(tmp_path / "png16"), sixteen)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", [".npy", ".tif", ".tiff", ".h5", ".h5:/deep/labels"])
def test_export_round_trip_exact(workspace, tmp_path, dtype, suffix):
    vol = make_volume(dtype, (6, 9, 11))
    layer = write_volume(workspace, "vol", vol, resolution_nm=RES, kind=kind_of(dtype))
    dest = str(tmp_path / "out") + suffix
    path = export_volume(layer, dest)
    assert path.exists()
    if path.suffix == ".h5":
        key = dest.split(":")[1] if ":" in dest else "/data"
        with h5py.File(path, "r") as h5:
            out = h5[key][...]
            assert tuple(h5[key].attrs["resolution_nm"]) == RES
    else:
        out = read_volume_source(path)
    assert out.dtype == vol.dtype
    assert np.array_equal(out, vol)
    assert np.array_equal(read_volume_source(dest), vol)  # and it imports back
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, "ws"]  # no temp files


def test_export_roi_in_slabs(workspace, tmp_path, monkeypatch):
    vol = make_volume("uint32", (40, 8, 9))
    layer = write_volume(workspace, "seg", vol, resolution_nm=RES, kind="segmentation")
    reads = []
    original = Layer.read

    def spy(self, roi=None, scale=0):
        reads.append(roi)
        return original(self, roi, scale)

    monkeypatch.setattr(Layer, "read", spy)
    roi = Roi.parse("3:37,1:7,2:9")
    done = []
    path = export_volume(layer, tmp_path / "crop.npy", roi, slab_bytes=1, progress=lambda *a: done.append(a))
    assert np.array_equal(np.load(path), vol[3:37, 1:7, 2:9])
    assert done == [(16, 34), (32, 34), (34, 34)]
    # One chunk of z (16) per slab, as slab_bytes is tiny: 34 sections need 3 reads.
    assert [r.shape[0] for r in reads] == [16, 16, 2]


def test_import_reads_in_bounded_slabs(workspace, tmp_path, monkeypatch):
    vol = make_volume("uint64", (40, 6, 5))
    np.save(tmp_path / "big.npy", vol)
    calls = []
    original = interop.VolumeSource.read

    def spy(self, z0=0, z1=None):
        calls.append((z0, z1))
        return original(self, z0, z1)

    monkeypatch.setattr(interop.VolumeSource, "read", spy)
    done = []
    import_volume(
        workspace,
        tmp_path / "big.npy",
        "seg",
        resolution_nm=RES,
        kind="segmentation",
        slab_bytes=1,
        progress=lambda n, total: done.append((n, total)),
    )
    assert calls == [(0, 16), (16, 32), (32, 40)]
    assert done == [(16, 40), (32, 40), (40, 40)]
    assert np.array_equal(Layer(workspace, "seg").read(), vol)
    # npy sources are memory-mapped, not loaded.
    with open_volume_source(tmp_path / "big.npy") as source:
        assert source.shape == (40, 6, 5)


def test_shapes_2d_and_singleton_channels(tmp_path):
    section = make_volume("uint8", (2, 6, 7))[0]
    np.save(tmp_path / "a.npy", section)
    assert read_volume_source(tmp_path / "a.npy").shape == (1, 6, 7)
    vol = make_volume("uint8", (3, 6, 7))
    np.save(tmp_path / "zyxc.npy", vol[..., None])
    np.save(tmp_path / "czyx.npy", vol[None])
    np.save(tmp_path / "tczyx.npy", vol[None, None])
    for name in ("zyxc", "czyx", "tczyx"):
        assert np.array_equal(read_volume_source(tmp_path / f"{name}.npy"), vol)


def test_ome_zarr_picks_full_resolution(tmp_path):
    vol = make_volume("uint8", (4, 6, 6))
    group = zarr.open_group(tmp_path / "img.ome.zarr", mode="w", zarr_format=2)
    group.create_array("0", shape=vol.shape, dtype=vol.dtype)[:] = vol
    group.create_array("1", shape=(4, 3, 3), dtype=vol.dtype)
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}]}]
    assert np.array_equal(read_volume_source(tmp_path / "img.ome.zarr"), vol)


@pytest.mark.parametrize(
    ("dtype", "kind", "stored", "noted"),
    [
        ("int32", "segmentation", "uint32", True),
        ("int64", "segmentation", "uint64", True),
        ("uint16", "segmentation", "uint32", True),
        ("uint64", "segmentation", "uint64", False),
        ("int16", "image", "uint16", True),
        ("bool", "image", "uint8", True),
        ("float64", "image", "float32", True),
        ("float32", "image", "float32", False),
        ("uint16", "image", "uint16", False),
    ],
)
def test_dtype_conversions(workspace, tmp_path, dtype, kind, stored, noted):
    vol = (np.arange(60).reshape(3, 4, 5) % 7).astype(dtype)
    np.save(tmp_path / "v.npy", vol)
    result = import_volume(workspace, tmp_path / "v.npy", "v", resolution_nm=RES, kind=kind)
    assert bool(result.notes) == noted
    out = Layer(workspace, "v").read()
    assert out.dtype == np.dtype(stored)
    assert np.array_equal(out, vol.astype(stored))
    assert storage_dtype(np.dtype(dtype), kind)[0] == np.dtype(stored)


# -- bad inputs -----------------------------------------------------------------------------------
def _bad_sources(tmp: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (source, kind, text the message must contain)."""
    good = make_volume("uint8", (3, 4, 5))
    (tmp / "garbage.npy").write_bytes(b"this is not numpy")
    np.save(tmp / "short.npy", good)
    (tmp / "short.npy").write_bytes((tmp / "short.npy").read_bytes()[:-7])
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04 broken zip")
    (tmp / "garbage.tif").write_bytes(b"II*\x00garbage")
    (tmp / "garbage.h5").write_bytes(b"\x89HDF nope")
    (tmp / "vol.txt").write_text("1 2 3")
    np.save(tmp / "line.npy", np.arange(5, dtype=np.uint8))
    np.save(tmp / "rgb.npy", np.zeros((2, 4, 5, 3), np.uint8))
    np.save(tmp / "floats.npy", np.full((2, 3, 3), 1.5))
    np.save(tmp / "negative.npy", np.array([[[0, 5], [-1, 2]]], np.int32))
    np.save(tmp / "complex.npy", np.zeros((2, 2, 2), np.complex64))
    np.save(tmp / "objects.npy", np.array([[["a"]]], dtype=object), allow_pickle=True)
    np.savez(tmp / "arch.npz", a=good)
    with h5py.File(tmp / "multi.h5", "w") as h5:
        h5["a"] = good
        h5["g/b"] = good
    group = zarr.open_group(tmp / "g.zarr", mode="w")
    group.create_array("a", shape=(2, 2, 2), dtype="uint8")
    group.create_array("b", shape=(2, 2, 2), dtype="uint8")
    (tmp / "not.zarr").mkdir()
    for name in ("shapes", "dtypes", "rgb", "corrupt", "empty", "badtif"):
        (tmp / name).mkdir()
    for z in range(3):
        Image.fromarray(good[z]).save(tmp / "shapes" / f"{z}.png")
        Image.fromarray(good[z]).save(tmp / "rgb" / f"{z}.png")
        Image.fromarray(good[z]).save(tmp / "corrupt" / f"{z}.png")
        tifffile.imwrite(tmp / "dtypes" / f"{z}.tif", good[z].astype("uint16" if z == 2 else "uint8"))
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp / "shapes" / "1.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp / "rgb" / "0.png")
    (tmp / "corrupt" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n rubbish")
    tifffile.imwrite(tmp / "badtif" / "a1.tif", good[0])
    (tmp / "badtif" / "a2.tif").write_bytes(b"II*\x00garbage")
    return {
        "missing": (str(tmp / "nope.npy"), "image", "no such file"),
        "unsupported": (str(tmp / "vol.txt"), "image", "unsupported volume format"),
        "garbage-npy": (str(tmp / "garbage.npy"), "image", "not a NumPy .npy file"),
        "truncated-npy": (str(tmp / "short.npy"), "image", "short.npy"),
        "garbage-npz": (str(tmp / "garbage.npz"), "image", "garbage.npz"),
        "garbage-tif": (str(tmp / "garbage.tif"), "image", "no readable image"),
        "garbage-h5": (str(tmp / "garbage.h5"), "image", "garbage.h5"),
        "1d": (str(tmp / "line.npy"), "image", "2 or 3 axes"),
        "rgb-4d": (str(tmp / "rgb.npy"), "image", "single-channel"),
        "float-labels": (str(tmp / "floats.npy"), "segmentation", "must be integers"),
        "negative-labels": (str(tmp / "negative.npy"), "segmentation", "negative"),
        "negative-image": (str(tmp / "negative.npy"), "image", "negative"),
        "complex": (str(tmp / "complex.npy"), "image", "complex64"),
        "objects": (str(tmp / "objects.npy"), "image", "objects.npy"),
        "npz-key": (f"{tmp / 'arch.npz'}:b", "image", "no array 'b'"),
        "h5-ambiguous": (str(tmp / "multi.h5"), "image", "holds 2 datasets"),
        "h5-missing-key": (f"{tmp / 'multi.h5'}:/nope", "image", "not found"),
        "h5-group": (f"{tmp / 'multi.h5'}:/g", "image", "a group"),
        "zarr-ambiguous": (str(tmp / "g.zarr"), "image", "holds 2 arrays"),
        "zarr-missing-key": (f"{tmp / 'g.zarr'}:c", "image", "no array 'c'"),
        "zarr-empty": (str(tmp / "not.zarr"), "image", "not.zarr"),
        "npy-with-key": (f"{tmp / 'line.npy'}:x", "image", "no inner keys"),
        "slices-shapes": (str(tmp / "shapes"), "image", "1.png"),
        "slices-dtypes": (str(tmp / "dtypes"), "image", "2.tif"),
        "slices-rgb": (str(tmp / "rgb"), "image", "0.png"),
        "slices-corrupt": (str(tmp / "corrupt"), "image", "2.png"),
        "slices-empty": (str(tmp / "empty"), "image", "no .png/.tif/.tiff slices"),
        "slices-garbage-tif": (str(tmp / "badtif"), "image", "a2.tif: holds no readable image"),
    }


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory):
    return _bad_sources(tmp_path_factory.mktemp("bad"))


BAD_NAMES = [
    "missing", "unsupported", "garbage-npy", "truncated-npy", "garbage-npz", "garbage-tif",
    "garbage-h5", "1d", "rgb-4d", "float-labels", "negative-labels", "negative-image", "complex",
    "objects", "npz-key", "h5-ambiguous", "h5-missing-key", "h5-group", "zarr-ambiguous",
    "zarr-missing-key", "zarr-empty", "npy-with-key", "slices-shapes", "slices-dtypes",
    "slices-rgb", "slices-corrupt", "slices-empty", "slices-garbage-tif",
]  # fmt: skip


def test_bad_names_cover_all(bad_sources):
    assert sorted(bad_sources) == sorted(BAD_NAMES)


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_input_is_input_error_and_workspace_unchanged(workspace, bad_sources, case):
    src, kind, text = bad_sources[case]
    write_volume(workspace, "keep", make_volume("uint8", (2, 3, 4)), resolution_nm=RES)
    before = snapshot(workspace)
    with pytest.raises(InputError) as err:
        import_volume(workspace, src, "new", resolution_nm=RES, kind=kind)
    assert text in str(err.value)
    assert snapshot(workspace) == before
    # Replacing an existing layer from a bad source keeps the old layer intact.
    with pytest.raises(InputError):
        import_volume(workspace, src, "keep", resolution_nm=RES, kind=kind, overwrite=True)
    assert snapshot(workspace) == before


def test_corrupt_section_deep_in_stack_removes_partial_layer(workspace, tmp_path):
    """Headers are fine, pixel data of the last section is truncated: found only while writing."""
    (tmp_path / "s").mkdir()
    vol = make_volume("uint8", (20, 16, 16))
    for z, section in enumerate(vol):
        Image.fromarray(section).save(tmp_path / "s" / f"{z}.png")
    last = tmp_path / "s" / "19.png"
    last.write_bytes(last.read_bytes()[:60])
    old = make_volume("uint8", (2, 3, 4), seed=5)
    write_volume(workspace, "raw", old, resolution_nm=RES)
    before = snapshot(workspace)
    for name, overwrite in (("new", False), ("raw", True)):
        with pytest.raises(InputError, match="19.png"):
            import_volume(
                workspace,
                tmp_path / "s",
                name,
                resolution_nm=RES,
                overwrite=overwrite,
                slab_bytes=1,
            )
        assert snapshot(workspace) == before
    assert np.array_equal(Layer(workspace, "raw").read(), old)


def test_existing_layer_needs_overwrite(workspace, tmp_path):
    old, new = make_volume("uint8", (2, 3, 4), seed=1), make_volume("uint8", (5, 6, 7), seed=2)
    np.save(tmp_path / "new.npy", new)
    write_volume(workspace, "raw", old, resolution_nm=RES)
    with pytest.raises(LayerExistsError):
        import_volume(workspace, tmp_path / "new.npy", "raw", resolution_nm=RES)
    assert np.array_equal(Layer(workspace, "raw").read(), old)
    import_volume(workspace, tmp_path / "new.npy", "raw", resolution_nm=(30, 8, 8), overwrite=True)
    layer = Layer(workspace, "raw")
    assert np.array_equal(layer.read(), new)
    assert layer.info.resolution_nm == (30, 8, 8)
    assert workspace.layers() == ["raw"]
    assert workspace.list("tmp/") == []


@pytest.mark.parametrize(
    ("resolution", "kind", "scales"),
    [((40, 4), "image", 1), ((40, 0, 4), "image", 1), (RES, "labels", 1), (RES, "image", 0)],
)
def test_bad_parameters(workspace, tmp_path, resolution, kind, scales):
    np.save(tmp_path / "v.npy", make_volume("uint8", (2, 3, 4)))
    with pytest.raises(InputError):
        import_volume(
            workspace,
            tmp_path / "v.npy",
            "v",
            resolution_nm=resolution,
            kind=kind,
            num_scales=scales,
        )
    assert workspace.layers() == []


# -- export errors -------------------------------------------------------------------------------
def test_export_errors_leave_nothing(workspace, tmp_path):
    layer = write_volume(workspace, "raw", make_volume("uint8", (4, 5, 6)), resolution_nm=RES)
    with pytest.raises(LayerNotFoundError):
        Layer(workspace, "absent")
    with pytest.raises(InputError, match="outside"):
        export_volume(layer, tmp_path / "a.npy", Roi.parse("0:5,0:5,0:6"))
    with pytest.raises(InputError, match="unsupported export format"):
        export_volume(layer, tmp_path / "a.png")
    with pytest.raises(InputError, match="does not exist"):
        export_volume(layer, tmp_path / "nodir" / "a.npy")
    (tmp_path / "not.h5").write_text("text")
    with pytest.raises(InputError, match="not an HDF5"):
        export_volume(layer, tmp_path / "not.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.h5", "ws"]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
def test_export_failure_midway_keeps_old_file(workspace, tmp_path, monkeypatch, suffix):
    vol = make_volume("uint8", (40, 5, 6))
    layer = write_volume(workspace, "raw", vol, resolution_nm=RES)
    dest = tmp_path / f"out{suffix}"
    dest.write_bytes(b"previous")
    if suffix == ".h5":
        dest.unlink()
        with h5py.File(dest, "w") as h5:
            h5["keep"] = np.arange(4)
    before = dest.read_bytes()
    original, calls = Layer.read, []

    def failing(self, roi=None, scale=0):
        calls.append(roi)
        if len(calls) == 2:
            raise InputError("disk on fire")
        return original(self, roi, scale)

    monkeypatch.setattr(Layer, "read", failing)
    with pytest.raises(InputError, match="disk on fire"):
        export_volume(layer, dest, slab_bytes=1)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, "ws"])


def test_export_into_existing_h5_keeps_other_datasets(workspace, tmp_path):
    vol = make_volume("uint64", (3, 4, 5))
    layer = write_volume(workspace, "seg", vol, resolution_nm=RES, kind="segmentation")
    with h5py.File(tmp_path / "out.h5", "w") as h5:
        h5["raw"] = np.arange(6)
        h5["data"] = np.zeros(2)
    export_volume(layer, tmp_path / "out.h5")
    with h5py.File(tmp_path / "out.h5", "r") as h5:
        assert np.array_equal(h5["raw"][...], np.arange(6))
        assert np.array_equal(h5["data"][...], vol)


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_import_export(tmp_path, capsys):
    ws_dir = str(tmp_path / "ws")
    assert main(["init", ws_dir]) == 0
    vol = make_volume("uint64", (6, 8, 10))
    np.save(tmp_path / "seg.npy", vol)
    args = ["import-volume", str(tmp_path / "seg.npy"), ws_dir, "--layer", "seg"]
    args += ["--resolution", "40,8,8", "--kind", "segmentation", "--scales", "2"]
    assert main(args) == 0
    ws = Workspace.open(ws_dir)
    layer = Layer(ws, "seg")
    assert layer.info.num_scales == 2
    assert np.array_equal(layer.read(), vol)
    prov = ws.provenance("import-seg")
    assert prov["outputs"] == ["seg"]
    assert prov["parameters"]["resolution_nm"] == [40.0, 8.0, 8.0]
    assert prov["parameters"]["source"] == str((tmp_path / "seg.npy").absolute())
    assert main(args) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    out = tmp_path / "crop.tif"
    assert main(["export-volume", ws_dir, "seg", str(out), "--roi", "1:4,2:8,0:10"]) == 0
    assert np.array_equal(tifffile.imread(out), vol[1:4, 2:8, 0:10])
    assert main(["status", ws_dir]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["import-volume", "{tmp}/missing.npy", "{ws}", "--layer", "a", "--resolution", "40,4,4"],
        ["import-volume", "{tmp}/v.npy", "{ws}", "--layer", "a", "--resolution", "40,4"],
        ["import-volume", "{tmp}/v.npy", "{ws}", "--layer", "a", "--resolution", "x,4,4"],
        ["import-volume", "{tmp}/v.npy", "{ws}", "--layer", "a", "--resolution", "40,4,4",
         "--kind", "segmentation"],
        ["import-volume", "{tmp}/v.npy", "{tmp}/nows", "--layer", "a", "--resolution", "40,4,4"],
        ["export-volume", "{ws}", "absent", "{tmp}/o.npy"],
        ["export-volume", "{ws}", "raw", "{tmp}/o.npy", "--roi", "0:9,0:2,0:2"],
        ["export-volume", "{ws}", "raw", "{tmp}/o.npy", "--roi", "0:2,0:2"],
        ["export-volume", "{ws}", "raw", "{tmp}/o.bmp"],
    ],
)  # fmt: skip
def test_cli_errors_exit_2(tmp_path, argv, capsys):
    ws_dir = str(tmp_path / "ws")
    assert main(["init", ws_dir]) == 0
    np.save(tmp_path / "v.npy", np.linspace(0, 1, 24).reshape(2, 3, 4))
    assert main(["import-volume", str(tmp_path / "v.npy"), ws_dir, "--layer", "raw",
                 "--resolution", "40,4,4"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main([a.format(tmp=tmp_path, ws=ws_dir) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()
    assert Workspace.open(ws_dir).layers() == ["raw"]


def test_wiremap_error_is_base(bad_sources):
    with pytest.raises(WiremapError):
        read_volume_source(bad_sources["missing"][0])
