"""Render synthetic tissue labels as an electron-microscopy image.

``render_em(tissue, config, seed)`` turns the ground truth of a
:class:`~wiremap.synth.model.Tissue` into a ``uint8`` image of shape
``(z, y, x)`` at the tissue's resolution: dark lipid membranes at every cell
boundary, grainy cytoplasm with microtubule streaks, dark mitochondria with
cristae, nuclei with chromatin and a dark envelope, very dark myelin with
lamellae, light glia with glycogen, and synapses (asymmetric excitatory /
symmetric inhibitory densities, round or flattened vesicles in the pre cell).

Why this split: the physics of staining is local and per section, so a
section ``z`` is drawn as a 2D image (vectorised numpy, no Python loop over
pixels); only the optics (a point-spread mixing neighbouring sections, as a
30 nm ssTEM slab is projected into one image) and the detector (shot noise,
drift) act across sections.  All lengths in :class:`RenderConfig` are in
nanometres and converted with ``tissue.resolution_nm``.  Grey levels are on
the 0-255 scale of the output, before noise.

Randomness comes from ``numpy.random.SeedSequence(seed)``: section ``z`` and
the synapses each get their own child stream, and per-cell properties (mean
brightness, streak phase) are hashed from ``(seed, cell id)``, so a cell looks
the same in every section.
"""

from __future__ import annotations

import math
from typing import Literal

import edt
import numpy as np
import pydantic
from scipy import ndimage as ndi

from wiremap.errors import InputError
from wiremap.realism import boundary_mask
from wiremap.synth.model import Compartment, Tissue
from wiremap.synth.textures import dark_band, grid, hash_uniform, label_axes, smooth_noise, stamp, stripes

__all__ = ["RenderConfig", "render_em"]


class RenderConfig(pydantic.BaseModel):
    """How synthetic tissue looks in EM; defaults resemble serial-section SEM/TEM.

    Grey levels are 0-255 before noise; lengths are nanometres; densities are
    per square micrometre of section.  ``RenderConfig.preset("fibsem")`` gives
    FIB-SEM at ~8 nm isotropic.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    # --- grey levels of the compartments (clean image, 0-255)
    cytoplasm_gray: float = 155.0  # mean neurite cytoplasm
    soma_gray: float = 145.0  # soma cytoplasm (more ER/ribosomes: a little darker)
    glia_gray: float = 172.0  # glial cytoplasm is lighter (electron-lucent)
    cell_gray_jitter: float = 8.0  # std of a per-cell offset of the mean
    extracellular_gray: float = 120.0  # extracellular space: lighter than membranes
    membrane_gray: float = 35.0  # lipid membrane (stained with osmium)
    cleft_gray: float = 105.0  # synaptic cleft: a gap with some dense material, lighter than PSDs
    mito_gray: float = 95.0  # mitochondrial matrix
    nucleus_gray: float = 150.0  # nucleoplasm
    myelin_gray: float = 22.0  # compact myelin

    # --- membranes
    membrane_thickness_nm: float = 15.0  # full width of the dark band where two cells touch
    mito_membrane_thickness_nm: float = 10.0  # outer membrane of mitochondria
    nuclear_envelope_thickness_nm: float = 18.0  # double membrane around nuclei

    # --- cytoplasm texture
    grain_contrast: float = 16.0  # std of fine grain (grey levels)
    grain_nm: float = 4.0  # correlation length of the grain
    cloud_contrast: float = 12.0  # std of coarse, cloudy variation
    cloud_nm: float = 30.0  # correlation length of the clouds
    speckle_nm: float = 12.0  # size of irregular dark specks (ER, ribosome clusters)
    speckle_contrast: float = 0.25  # darkening of the specks (fraction of grey level)
    speckle_threshold: float = 0.3  # specks where smooth noise exceeds this many std (sparser: higher)
    organelle_density: float = 50.0  # small dark rings (vesicles, ER, microtubule ends) per um^2
    organelle_radius_nm: tuple[float, float] = (10.0, 22.0)  # radius range of those rings
    organelle_contrast: float = 0.5  # darkening at a ring's wall (fraction of grey level)
    microtubule_spacing_nm: float = 55.0  # mean spacing of microtubule streaks in neurites
    microtubule_width_nm: float = 12.0  # width of one streak
    microtubule_contrast: float = 0.12  # darkening along a streak (fraction)

    # --- organelles
    cristae_spacing_nm: float = 32.0  # spacing of cristae across a mitochondrion
    cristae_width_nm: float = 8.0  # width of one crista membrane
    cristae_contrast: float = 0.45  # darkening at a crista (fraction of matrix grey)
    chromatin_contrast: float = 20.0  # std of chromatin clumps in nuclei (grey levels)
    chromatin_nm: float = 15.0  # size of the chromatin clumps
    myelin_period_nm: float = 12.0  # period of the myelin lamellae
    myelin_contrast: float = 10.0  # amplitude of the lamellae (grey levels)
    glycogen_density: float = 60.0  # glycogen granules in glia, per um^2
    glycogen_radius_nm: float = 12.0  # radius of a granule
    glycogen_contrast: float = 0.6  # darkening at a granule's centre (fraction)

    # --- synapses
    psd_gray: float = 30.0  # grey level of a synaptic density at full strength
    e_post_density_nm: float = 40.0  # excitatory (asymmetric): thick postsynaptic density
    e_pre_density_nm: float = 10.0  # excitatory: thin presynaptic density
    i_post_density_nm: float = 14.0  # inhibitory (symmetric): thin density, post side
    i_pre_density_nm: float = 14.0  # inhibitory: thin density, pre side
    e_density_strength: float = 0.9  # opacity of excitatory densities (0-1)
    i_density_strength: float = 0.6  # opacity of inhibitory densities (0-1)
    vesicle_diameter_nm: float = 40.0  # synaptic vesicle outer diameter (E: round)
    i_vesicle_aspect: float = 0.6  # minor/major axis of flattened inhibitory vesicles
    vesicles_per_synapse: float = 60.0  # vesicles per synapse of median cleft size
    vesicle_cloud_nm: float = 220.0  # radius of the vesicle cloud behind the active zone
    vesicle_wall_nm: float = 7.0  # thickness of a vesicle's membrane
    vesicle_contrast: float = 0.6  # darkening at a vesicle's wall (fraction)

    # --- imaging
    psf_sigma_xy_nm: float = 2.5  # Gaussian point-spread in the section plane
    psf_sigma_z_nm: float = 12.0  # mixing across sections (slab projection); 0 = none
    noise_gray: float = 12.0  # std of shot noise at grey 128 (scales with sqrt(grey))
    noise_correlation_nm: float = 2.0  # detector/scan blur of the noise; 0 = white
    drift_gray: float = 6.0  # std of slow per-section brightness drift
    gradient_gray: float = 8.0  # amplitude of a smooth in-plane illumination gradient

    @classmethod
    def preset(cls, name: Literal["sstem", "fibsem"]) -> RenderConfig:
        """Named presets: ``sstem`` (4x4x30-50 nm sections) or ``fibsem`` (~8 nm isotropic)."""
        if name == "sstem":
            return cls()
        if name == "fibsem":
            # tuned on FIB-SEM of fly medulla (gala, ~10 nm): blurrier, higher contrast
            return cls(
                psf_sigma_xy_nm=9.0,
                psf_sigma_z_nm=8.0,
                noise_gray=10.0,
                noise_correlation_nm=4.0,
                grain_nm=10.0,
                grain_contrast=16.0,
                cloud_contrast=16.0,
                speckle_contrast=0.35,
                membrane_thickness_nm=22.0,
                membrane_gray=30.0,
                cytoplasm_gray=205.0,
                soma_gray=195.0,
                glia_gray=220.0,
                mito_gray=78.0,
                cell_gray_jitter=16.0,
                drift_gray=3.0,
            )
        raise ValueError(f"unknown render preset {name!r}; expected 'sstem' or 'fibsem'")


# --------------------------------------------------------------------------- synapses


def _synapse_layers(
    tissue: Tissue, config: RenderConfig, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Synaptic densities (uint8 opacity volume) and the vesicles to draw.

    Densities: voxels of the post (pre) cell within the configured thickness
    of the synapse's cleft voxels, measured in 3D in nm.  Vesicles: points in
    a ball behind the cleft (opposite the pre->post normal), kept only where
    the voxel belongs to the pre cell and is not a mitochondrion.
    """
    shape = tissue.shape_zyx
    res = tuple(float(r) for r in tissue.resolution_nm)
    density = np.zeros(shape, dtype=np.uint8)
    st = tissue.synapse_table
    none = (np.empty((0, 6)), np.empty(0, np.uint64))
    if st is None or len(st) == 0 or not tissue.synapse_clefts.any():
        return density, none
    zz, yy, xx = np.nonzero(tissue.synapse_clefts)
    sid = tissue.synapse_clefts[zz, yy, xx]
    order = np.argsort(sid, kind="stable")
    zz, yy, xx, sid = zz[order], yy[order], xx[order], sid[order]
    uniq, start = np.unique(sid, return_index=True)
    stop = np.append(start[1:], len(sid))
    table = st.set_index("id")
    med_size = float(np.median(stop - start))
    t_max = max(config.e_post_density_nm, config.e_pre_density_nm, config.i_post_density_nm)
    ves_rows: list[np.ndarray] = []  # columns: section, y, x, ry, rx, angle (pixels, rad)
    ves_owner: list[np.ndarray] = []
    for s, a, b in zip(uniq.tolist(), start.tolist(), stop.tolist(), strict=True):
        if s not in table.index:
            continue
        row = table.loc[s]
        excit = str(row["ei"]).upper() == "E"
        pre, post = np.uint64(row["pre"]), np.uint64(row["post"])
        m = [int(math.ceil(t_max / r)) + 1 for r in res]
        lo = [max(0, int(c.min()) - mm) for c, mm in zip((zz[a:b], yy[a:b], xx[a:b]), m, strict=True)]
        hi = [min(n, int(c.max()) + mm + 1) for c, mm, n in zip((zz[a:b], yy[a:b], xx[a:b]), m, shape, strict=True)]
        sl = tuple(slice(l0, h0) for l0, h0 in zip(lo, hi, strict=True))
        cleft = tissue.synapse_clefts[sl] == s
        d = edt.edt(~cleft, anisotropy=res, black_border=False)
        cells = tissue.cells[sl]
        t_post = config.e_post_density_nm if excit else config.i_post_density_nm
        t_pre = config.e_pre_density_nm if excit else config.i_pre_density_nm
        strength = config.e_density_strength if excit else config.i_density_strength
        for cell, t in ((post, t_post), (pre, t_pre)):
            mask = (cells == cell) & (d <= t)
            # soft outer edge: full opacity near the cleft, fading over the last third
            op = strength * np.clip((t - d) / max(t / 3.0, 1e-6), 0.0, 1.0)
            val = np.where(mask, op * 255.0, 0.0).astype(np.uint8)
            np.maximum(density[sl], val, out=density[sl])
        # vesicles, in nm around the cleft centre, behind the pre membrane
        c_nm = np.array([zz[a:b].mean(), yy[a:b].mean(), xx[a:b].mean()]) * np.array(res)
        nrm = np.array([row["nz"], row["ny"], row["nx"]], dtype=np.float64) * np.array(res)
        nn = float(np.linalg.norm(nrm))
        nrm = nrm / nn if nn > 0 else np.array([0.0, 0.0, 1.0])
        n_ves = rng.poisson(config.vesicles_per_synapse * math.sqrt((b - a) / max(med_size, 1)))
        n_try = 4 * n_ves + 8
        dirs = rng.standard_normal((n_try, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs[(dirs @ nrm) > 0] *= -1  # hemisphere on the pre side
        rad = config.vesicle_cloud_nm * rng.random(n_try) ** 0.6  # clustered near the zone
        pts = c_nm + dirs * (rad[:, None] + config.vesicle_diameter_nm)
        vox = np.round(pts / np.array(res)).astype(np.intp)
        inside = np.all((vox >= 0) & (vox < np.array(shape)), axis=1)
        pts, vox = pts[inside], vox[inside]
        keep = (tissue.cells[vox[:, 0], vox[:, 1], vox[:, 2]] == pre) & (
            tissue.mitochondria[vox[:, 0], vox[:, 1], vox[:, 2]] == 0
        )
        pts = pts[keep][:n_ves]
        if len(pts) == 0:
            continue
        # drop overlapping vesicles (greedy, in draw order)
        if len(pts) > 1:
            dd = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=2)
            clash = np.triu(dd < 0.9 * config.vesicle_diameter_nm, 1).any(axis=0)
            pts = pts[~clash]
        r0 = 0.5 * config.vesicle_diameter_nm
        aspect = 1.0 if excit else config.i_vesicle_aspect
        ang = rng.uniform(0, math.pi, len(pts))
        # the section images the slab [k-0.5, k+0.5]*dz: a vesicle shows in every
        # section its sphere reaches, with its largest cross-section inside the slab
        zc = pts[:, 0] / res[0]
        for k in range(int(np.floor((zc - r0 / res[0]).min())), int(np.ceil((zc + r0 / res[0]).max())) + 1):
            if not 0 <= k < shape[0]:
                continue
            gap = np.maximum(np.abs(zc - k) - 0.5, 0.0) * res[0]
            vis = gap < r0 * 0.9
            if not vis.any():
                continue
            scale = np.sqrt(np.maximum(r0**2 - gap[vis] ** 2, 0)) / r0
            rr = r0 * scale
            ves_rows.append(
                np.column_stack(
                    [
                        np.full(vis.sum(), k, float),
                        pts[vis, 1] / res[1],
                        pts[vis, 2] / res[2],
                        rr / res[1],
                        rr * aspect / res[2],
                        ang[vis],
                    ]
                )
            )
            ves_owner.append(np.full(vis.sum(), pre, dtype=np.uint64))
    if not ves_rows:
        return density, (np.empty((0, 6)), np.empty(0, np.uint64))
    return density, (np.concatenate(ves_rows), np.concatenate(ves_owner))


# --------------------------------------------------------------------------- one section


def _gather(ids: np.ndarray, seed: int, salt: int, ren: np.ndarray) -> np.ndarray:
    """Per-pixel value of a per-cell hash (stable across sections)."""
    return hash_uniform(ids, seed, salt).astype(np.float32)[ren]


def _random_pixels(rng: np.random.Generator, mask: np.ndarray, density: float, px_um2: float):
    """Poisson number of uniformly placed points on ``mask`` (float y, x pixel coordinates)."""
    where = np.flatnonzero(mask)
    n = rng.poisson(density * len(where) * px_um2) if len(where) else 0
    if n == 0:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    flat = rng.choice(where, n)
    y, x = np.divmod(flat, mask.shape[1])
    return (y + rng.uniform(-0.5, 0.5, n)).astype(np.float32), (x + rng.uniform(-0.5, 0.5, n)).astype(np.float32)


def _render_section(
    tissue: Tissue,
    k: int,
    config: RenderConfig,
    rng: np.random.Generator,
    seed: int,
    density: np.ndarray,
    vesicles: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Clean (noise-free) image of section ``k``, in-plane blur included, float32 grey levels."""
    c = config
    res_y, res_x = float(tissue.resolution_nm[1]), float(tissue.resolution_nm[2])
    px = (res_y, res_x)
    pxm = 0.5 * (res_y + res_x)
    px_um2 = res_y * res_x * 1e-6
    # one stream per feature: switching a feature off leaves the others unchanged
    r_tex, r_mt, r_speck, r_org, r_gly, r_mito, r_nuc = rng.spawn(7)
    cells = tissue.cells[k]
    comp = np.minimum(tissue.compartments[k], 5).astype(np.intp)
    myelin = tissue.myelin[k].astype(bool)
    mito = tissue.mitochondria[k]
    nuc = tissue.nuclei[k].astype(bool)
    cleft = tissue.synapse_clefts[k] > 0
    shape = cells.shape
    gy, gx = grid(*shape)
    y_nm, x_nm = gy * np.float32(res_y), gx * np.float32(res_x)

    incell = cells > 0
    glia = incell & (comp == Compartment.GLIA)
    neurite = incell & ((comp == Compartment.AXON) | (comp == Compartment.DENDRITE))
    has_mito = mito > 0

    # base grey level per compartment, with a per-cell offset
    lut = np.array(
        [
            c.extracellular_gray,
            c.soma_gray,
            c.cytoplasm_gray,
            c.cytoplasm_gray,
            c.glia_gray,
            c.cytoplasm_gray,
        ],
        dtype=np.float32,
    )
    cos_c, sin_c, elong_c, ren, ids = label_axes(cells, y_nm, x_nm)
    jitter = (_gather(ids, seed, 1, ren) - 0.5) * np.float32(c.cell_gray_jitter * math.sqrt(12))
    img = np.where(incell, lut[comp] + jitter, np.float32(c.extracellular_gray))

    # texture: fine grain and clouds (half strength outside cells)
    grain = smooth_noise(r_tex, shape, c.grain_nm / pxm)
    cloud = smooth_noise(r_tex, shape, c.cloud_nm / pxm)
    tex_w = np.where(incell, np.float32(1.0), np.float32(0.5))
    img += tex_w * (c.grain_contrast * grain + c.cloud_contrast * cloud)

    # microtubules: streaks along the long axis of elongated neurite profiles
    if c.microtubule_contrast > 0 and neurite.any():
        phase = _gather(ids, seed, 2, ren) * np.float32(8192.0)
        across = -sin_c[ren] * x_nm + cos_c[ren] * y_nm + phase
        streak = stripes(across, r_mt, c.microtubule_spacing_nm, c.microtubule_width_nm)
        weight = np.clip((elong_c - 0.3) / 0.4, 0.0, 1.0)[ren] * neurite
        broken = np.clip(0.6 + 0.8 * cloud, 0.0, 1.0)  # streaks come and go along their length
        img *= 1.0 - np.float32(c.microtubule_contrast) * streak * weight * broken

    dark = np.zeros(shape, np.float32)  # darkening sprites (fraction of local grey)
    if c.speckle_contrast > 0:
        speck = smooth_noise(r_speck, shape, c.speckle_nm / pxm) - np.float32(c.speckle_threshold)
        np.clip(speck * np.float32(c.speckle_contrast), 0.0, 0.8, out=dark)
        dark *= incell
    # small dark rings in neuronal cytoplasm; glycogen granules in glia
    plain = incell & ~glia & ~has_mito & ~nuc
    cy, cx = _random_pixels(r_org, plain, c.organelle_density, px_um2)
    if len(cy):
        r_nm = r_org.uniform(*c.organelle_radius_nm, len(cy))
        asp = r_org.uniform(0.7, 1.0, len(cy))
        stamp(
            dark,
            cy,
            cx,
            (r_nm / res_y).astype(np.float32),
            (r_nm * asp / res_x).astype(np.float32),
            r_org.uniform(0, math.pi, len(cy)),
            (c.organelle_contrast * r_org.uniform(0.5, 1.0, len(cy))).astype(np.float32),
            wall=max(c.vesicle_wall_nm / pxm, 0.8),
            allowed=plain,
        )
    cy, cx = _random_pixels(r_gly, glia & ~has_mito, c.glycogen_density, px_um2)
    if len(cy):
        rr = np.full(len(cy), c.glycogen_radius_nm / pxm, np.float32)
        stamp(
            dark,
            cy,
            cx,
            rr,
            rr,
            np.zeros(len(cy)),
            np.full(len(cy), c.glycogen_contrast, np.float32),
            wall=0.0,
            allowed=glia,
        )
    # synaptic vesicles: only in the presynaptic cell's voxels
    rows, owners = vesicles
    sel = rows[:, 0] == k
    if sel.any():
        v = rows[sel]
        vdark = np.zeros(shape, np.float32)
        stamp(
            vdark,
            v[:, 1].astype(np.float32),
            v[:, 2].astype(np.float32),
            v[:, 3].astype(np.float32),
            v[:, 4].astype(np.float32),
            v[:, 5],
            np.full(len(v), c.vesicle_contrast, np.float32),
            wall=max(c.vesicle_wall_nm / pxm, 0.8),
            allowed=~has_mito,
            owner=owners[sel],
            owner_map=cells,
        )
        np.maximum(dark, vdark, out=dark)
    img *= 1.0 - dark

    # mitochondria: dark matrix, cristae across the long axis, outer membrane
    if has_mito.any():
        cos_m, sin_m, _, ren_m, ids_m = label_axes(mito, y_nm, x_nm)
        along = cos_m[ren_m] * x_nm + sin_m[ren_m] * y_nm + _gather(ids_m, seed, 3, ren_m) * 4096
        along += np.float32(0.3 * c.cristae_spacing_nm) * cloud  # wavy cristae
        cristae = stripes(along, r_mito, c.cristae_spacing_nm, c.cristae_width_nm)
        m_img = (c.mito_gray + 0.6 * c.grain_contrast * grain) * (1 - c.cristae_contrast * cristae)
        img = np.where(has_mito, m_img, img)
        band = dark_band(boundary_mask(mito), px, c.mito_membrane_thickness_nm) * (has_mito | incell)
        img += band * (np.float32(c.membrane_gray) - img)

    # nuclei: chromatin clumps, heterochromatin along the envelope, dark envelope
    if nuc.any():
        chrom = smooth_noise(r_nuc, shape, c.chromatin_nm / pxm)
        depth = edt.edt(nuc, anisotropy=px, black_border=False)
        hetero = np.exp(-depth / 60.0).astype(np.float32)
        n_img = c.nucleus_gray + c.chromatin_contrast * (chrom - 1.5 * hetero) + 0.6 * c.grain_contrast * grain
        img = np.where(nuc, n_img, img)
        band = dark_band(boundary_mask(nuc), px, c.nuclear_envelope_thickness_nm)
        img += band * (np.float32(c.membrane_gray) - img)

    # myelin: very dark, with lamellae parallel to the sheath
    if myelin.any():
        depth = edt.edt(myelin, anisotropy=px, black_border=False).astype(np.float32)
        lam = np.cos(np.float32(2 * math.pi / c.myelin_period_nm) * depth)
        img = np.where(myelin, c.myelin_gray + c.myelin_contrast * lam + 0.3 * c.grain_contrast * grain, img)

    img = np.where(cleft, np.float32(c.cleft_gray) + 0.5 * c.grain_contrast * grain, img)

    # plasma membranes at every boundary between cells / extracellular space / myelin
    lab = cells.copy()
    lab[myelin] = np.iinfo(lab.dtype).max
    band = dark_band(boundary_mask(lab), px, c.membrane_thickness_nm)
    mem = np.float32(c.membrane_gray) * (1.0 + 0.15 * grain)
    img += band * (mem - img)

    # synaptic densities
    if density.any():
        op = density.astype(np.float32) / 255.0
        op *= np.clip(0.85 + 0.1 * grain + 0.1 * cloud, 0.0, 1.0)  # densities are granular
        img += op * (np.float32(c.psd_gray) - img)

    if c.psf_sigma_xy_nm > 0:
        ndi.gaussian_filter(img, (c.psf_sigma_xy_nm / res_y, c.psf_sigma_xy_nm / res_x), output=img)
    return img.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- the volume


def _check(tissue: Tissue) -> None:
    shape = tissue.cells.shape
    if tissue.cells.ndim != 3:
        raise InputError(f"tissue.cells must be 3D (z, y, x), got shape {shape}")
    for name in ("compartments", "myelin", "mitochondria", "nuclei", "synapse_clefts"):
        arr = getattr(tissue, name)
        if arr.shape != shape:
            raise InputError(f"tissue.{name} has shape {arr.shape}, expected {shape} like tissue.cells")
    if len(tissue.resolution_nm) != 3 or min(tissue.resolution_nm) <= 0:
        raise InputError(f"tissue.resolution_nm must be 3 positive numbers, got {tissue.resolution_nm}")
    need = {"id", "pre", "post", "nz", "ny", "nx", "ei"}
    st = tissue.synapse_table
    if st is not None and len(st) and not need <= set(st.columns):
        raise InputError(f"synapse_table lacks columns {sorted(need - set(st.columns))}")


def _z_kernel(sigma_nm: float, dz_nm: float) -> np.ndarray:
    """Weights of neighbouring sections in one image: a Gaussian PSF sampled every section."""
    if sigma_nm <= 0:
        return np.ones(1)
    half = int(math.ceil(2.5 * sigma_nm / dz_nm))
    j = np.arange(-half, half + 1)
    w = np.exp(-0.5 * (j * dz_nm / sigma_nm) ** 2)
    return w / w.sum()


def _noise_gain(sigma_px: tuple[float, float]) -> float:
    """Factor restoring unit std to white noise after a Gaussian blur of ``sigma_px``."""
    if max(sigma_px) <= 0:
        return 1.0
    n = int(8 * max(sigma_px)) * 2 + 1
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1.0
    return 1.0 / float(np.sqrt((ndi.gaussian_filter(delta, sigma_px) ** 2).sum()))


def render_em(tissue: Tissue, config: RenderConfig, seed: int) -> np.ndarray:
    """Render ``tissue`` as an EM image: ``uint8`` array of shape ``tissue.shape_zyx``.

    Deterministic for a given ``seed``.  Works section by section (memory:
    two float32 copies of the volume); cost is about linear in voxels.

    >>> img = render_em(tissue, RenderConfig(), seed=0)  # doctest: +SKIP
    """
    _check(tissue)
    nz, ny, nx = tissue.shape_zyx
    res = tuple(float(r) for r in tissue.resolution_nm)
    streams = np.random.SeedSequence(seed).spawn(nz + 2)
    density, vesicles = _synapse_layers(tissue, config, np.random.default_rng(streams[0]))
    clean = np.empty((nz, ny, nx), np.float32)
    for k in range(nz):
        rng = np.random.default_rng(streams[2 + k])
        clean[k] = _render_section(tissue, k, config, rng, seed, density[k], vesicles)
    del density

    w = _z_kernel(config.psf_sigma_z_nm, res[0])
    if len(w) > 1 and nz > 1:
        clean = ndi.correlate1d(clean, w.astype(np.float32), axis=0, mode="nearest")

    rng = np.random.default_rng(streams[1])
    # slow drift of brightness over sections and a smooth illumination gradient
    walk = np.cumsum(rng.standard_normal(nz))
    walk -= walk.mean()
    sd = float(walk.std())
    drift = config.drift_gray * (walk / sd if sd > 0 else walk)
    tilt = rng.standard_normal(2) + 0.2 * np.cumsum(rng.standard_normal((nz, 2)), axis=0)
    tilt *= config.gradient_gray / max(float(np.abs(tilt).max()), 1e-9)
    gy, gx = grid(ny, nx)
    ry, rx = gy / max(ny - 1, 1) - 0.5, gx / max(nx - 1, 1) - 0.5
    sig = (config.noise_correlation_nm / res[1], config.noise_correlation_nm / res[2])
    gain = _noise_gain(sig)
    out = np.empty((nz, ny, nx), np.uint8)
    for k in range(nz):
        img = clean[k]
        if config.noise_gray > 0:
            noise = rng.standard_normal((ny, nx), dtype=np.float32)
            if max(sig) > 0:
                ndi.gaussian_filter(noise, sig, output=noise)
                noise *= np.float32(gain)
            img += noise * np.float32(config.noise_gray) * np.sqrt(np.maximum(img, 0) / 128.0)
        img += np.float32(drift[k]) + np.float32(tilt[k, 0]) * ry + np.float32(tilt[k, 1]) * rx
        np.clip(img, 0, 255, out=img)
        out[k] = np.rint(img).astype(np.uint8)
    return out
