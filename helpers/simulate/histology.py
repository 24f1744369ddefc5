"""Simulated H&E histology with ground truth.

Images are composed the way a stained section forms: per-pixel hematoxylin (H) and eosin (E) optical densities
are painted for stroma fibres, gland epithelium, lumina, fat and nuclei, then turned into RGB through the
Beer-Lambert stain model (``skimage.color.hed2rgb``). Every image comes with the masks a real data set lacks:
nuclei instances and types (neoplastic / non-neoplastic, as PanNuke), tumour, glands, lumina, stroma, fat,
tissue, tissue edge, artefacts.

Lengths are given in micrometres and converted with ``um_per_px`` (default 1.0 µm/px, about 10x), so the same
scene can be rendered finer for users with a GPU.

Entry points: :func:`render_slide` (a section with polygon tumour annotations), :func:`render_grade_patch`
(7 DiagSet-like grades A, N, R1–R5 with overlapping appearance between neighbours),
:func:`render_regression_patch` (cellularity / orientation-coherence driven patches for MD, FA and cell count),
and :func:`render_patch` underneath them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.color import hed2rgb
from skimage.draw import polygon as draw_polygon

from ..data.formats import GRADES, grade_index

# Bump when the rendering changes: caches record it, so images of an older simulator are never reused.
SIMULATOR_VERSION = 7

NUCLEUS_TYPES = {0: "background", 1: "neoplastic", 2: "non-neoplastic"}
H_UNIT, E_UNIT, D_UNIT = 0.11, 0.17, 0.06
MASK_NAMES = ("tissue", "edge", "tumour", "glands", "lumen", "stroma", "fat", "artefact")


@dataclass(frozen=True)
class Rendering:
    """How the painted tissue becomes pixels: stroma texture, nuclear texture, stain grain and optics.

    These knobs change only intensities, never geometry: every mask, nucleus and annotation of a scene is the same
    whatever they are (the random draws that place things are never skipped or reordered; the extra noise fields
    some knobs need come from a child of the scene's generator). The defaults are simulator version 7: version 6
    (:data:`RENDERING_VERSION_6`) with the three changes ``benchmarks/realism_calibration.py`` chose against real
    H&E on validation halves (paler stroma and epithelium haematoxylin, the scan saved as JPEG at quality 80; issue
    33, item 4). Lengths are in micrometres, except ``optics_sigma_px``.
    """

    fibre_wavelength_um: float = 11.0   # spacing of the stroma fibres
    fibre_length: float = 0.12          # bandwidth along a fibre, relative to 1/spacing: smaller = longer fibres
    looseness: float = 0.6              # offset of the bundle threshold: lower = more pale clefts between bundles
    bundle_sharpness: float = 2.5       # slope of that threshold: higher = crisper bundle edges
    cleft_eosin: float = 0.05           # eosin between the bundles
    bundle_eosin: float = 0.24          # eosin added inside a bundle
    stroma_hema: float = 0.1            # haematoxylin background of the stroma (version 6: 0.17)
    hema_follows_bundles: float = 0.0   # 0: haematoxylin background everywhere; 1: only inside the bundles
    cleft_clearing: float = 0.0         # share of every stain (and the residual tint) missing between bundles: 1 = glass
    epithelium_hema: float = 0.12       # haematoxylin of gland epithelium (cytoplasm), neoplastic +0.08 (v6: 0.30)
    chromatin_contrast: float = 0.15    # std of the multiplicative chromatin texture inside nuclei
    chromatin_grain_um: float = 0.0     # its correlation length (0: independent from pixel to pixel)
    rim_base: float = 0.8               # nuclear stain at the centre ...
    rim_gain: float = 0.3               # ... rising by this much towards the membrane (vesicular nuclei: low base)
    nuclear_stain: float = 1.0          # factor on every nucleus' haematoxylin
    stain_grain: float = 0.12           # std of the multiplicative grain on both stains
    stain_grain_um: float = 0.0         # its correlation length (0: independent from pixel to pixel)
    residual_base: float = 0.25         # the third (DAB) channel's residual over all tissue, clefts and lumina too
    camera_noise: float = 0.012         # std of the additive noise per RGB channel
    optics_sigma_px: float = 0.5        # Gaussian blur of the optics, in pixels
    jpeg_quality: float = 80            # 0: none; 1–100: the scan saved as JPEG at this quality, as SVS tiles are (v6: 0)

    def __post_init__(self):
        for name, value in vars(self).items():
            # looseness is an offset and may be negative; every other knob is an amount, a length or a share
            if not (np.isfinite(value) and (value >= 0 or name == "looseness")):
                raise ValueError(f"Rendering({name}={value!r}): every knob but looseness is a finite number ≥ 0.")
        for name in ("fibre_wavelength_um", "fibre_length", "bundle_sharpness"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Rendering({name}={getattr(self, name)!r}) must be positive.")
        for name in ("hema_follows_bundles", "cleft_clearing"):
            if getattr(self, name) > 1:
                raise ValueError(f"Rendering({name}={getattr(self, name)!r}) is a share, 0 to 1.")
        if self.jpeg_quality > 100 or self.jpeg_quality != int(self.jpeg_quality):
            raise ValueError(f"Rendering(jpeg_quality={self.jpeg_quality!r}): 0 (no JPEG) or a whole number 1–100.")


RENDERING = Rendering()   # what every render_* function uses unless told otherwise
# The rendering before the calibration: the calibration's starting point, and the "before" of every moved number.
RENDERING_VERSION_6 = Rendering(stroma_hema=0.17, epithelium_hema=0.30, jpeg_quality=0)


def _texture_rng(rng):
    """A generator for the extra noise fields of non-default knobs, independent of ``rng``'s stream (spawning
    does not draw from it), so the scene's geometry stays that of the default rendering."""
    return rng.spawn(1)[0]


@dataclass
class Scene:
    """One rendered image and its ground truth."""

    rgb: np.ndarray                      # H×W×3 uint8
    nuclei_instances: np.ndarray         # H×W int32, 0 = no nucleus, k = k-th nucleus
    nuclei_types: np.ndarray             # H×W uint8, 0 background, 1 neoplastic, 2 non-neoplastic
    masks: dict                          # name → H×W bool (see MASK_NAMES)
    nuclei: dict = field(default_factory=dict)   # per-nucleus arrays: y, x, ry, rx, angle, type
    maps: dict = field(default_factory=dict)     # continuous ground-truth maps (cellularity, coherence)

    @property
    def n_nuclei(self) -> int:
        return int(len(self.nuclei.get("y", ())))


# ----------------------------------------------------------------------------------------------- textures
def _smooth_noise(rng, shape, sigma_px, low_res=True):
    """Zero-mean, unit-std Gaussian-filtered noise; large sigmas are made at low resolution then zoomed."""
    shape = tuple(int(s) for s in shape)
    factor = int(max(1, sigma_px // 4)) if low_res else 1
    small = tuple(max(2, s // factor + 2) for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma_px / factor, mode="wrap")
    if factor > 1:
        noise = ndimage.zoom(noise, factor, order=1)[: shape[0], : shape[1]]
        if noise.shape != shape:  # zoom rounding: pad by edge values
            noise = np.pad(noise, [(0, shape[0] - noise.shape[0]), (0, shape[1] - noise.shape[1])], mode="edge")
    else:
        noise = noise[: shape[0], : shape[1]]
    noise = noise - noise.mean()
    return noise / (noise.std() + 1e-8)


def _fibre_texture(rng, shape, theta, coherence, wavelength_px, n_orient=6, length=0.12):
    """Stroma fibre texture: noise band-passed along ``n_orient`` directions, blended by the local fibre
    direction ``theta`` (radians, x to the right, y down) with sharpness ``coherence`` (0 isotropic, 1 aligned).
    Returns a zero-mean, unit-std float32 field."""
    from scipy import fft as sfft

    h, w = shape
    spectrum = sfft.rfft2(rng.standard_normal((h, w), dtype=np.float32), workers=-1)
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f0 = np.float32(1.0 / wavelength_px)

    def band(gain):
        out = sfft.irfft2(spectrum * gain, s=(h, w), workers=-1)
        return (out - out.mean()) / (out.std() + 1e-8)

    iso = band(np.exp(-(((np.hypot(fx, fy) - f0) / (0.6 * f0)) ** 2)))
    theta = np.broadcast_to(np.asarray(theta, np.float32), shape)
    sharp = 1.0 + 7.0 * np.clip(np.broadcast_to(np.asarray(coherence, np.float32), shape), 0.0, 1.0)
    oriented = np.zeros(shape, np.float32)
    total = np.zeros(shape, np.float32)
    for a in np.arange(n_orient) * np.pi / n_orient:
        along = fx * np.cos(a) + fy * np.sin(a)          # frequency along the fibre: kept small (long fibres)
        across = -fx * np.sin(a) + fy * np.cos(a)        # across the fibre: the fibre spacing
        gain = np.exp(-((along / (length * f0)) ** 2)) * np.exp(-(((np.abs(across) - f0) / (0.5 * f0)) ** 2))
        # von Mises-like weight on the doubled angle (a fibre at theta equals one at theta + pi); max exponent 0
        weight = np.exp((np.cos(2 * (theta - np.float32(a))) - 1.0) * sharp)
        oriented += weight * band(gain.astype(np.float32))
        total += weight
    oriented /= total
    oriented /= oriented.std() + 1e-8
    c = np.clip(np.broadcast_to(np.asarray(coherence, np.float32), shape), 0.0, 1.0)
    mixed = c * oriented + (1.0 - c) * iso
    return (mixed - mixed.mean()) / (mixed.std() + 1e-8)


# ------------------------------------------------------------------------------------------------ nuclei
def _nuclei_arrays(n=0):
    return {k: np.zeros(n, dtype=np.float64) for k in ("y", "x", "ry", "rx", "angle", "dark", "priority")} | {
        "type": np.zeros(n, dtype=np.uint8)}


def _concat_nuclei(parts):
    parts = [p for p in parts if len(p["y"])]
    if not parts:
        return _nuclei_arrays(0)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _make_nuclei(y, x, ry, rx, angle, ntype, dark, priority):
    n = len(y)
    full = lambda v, dt=np.float64: np.broadcast_to(np.asarray(v, dtype=dt), (n,)).copy()  # noqa: E731
    return {"y": full(y), "x": full(x), "ry": full(ry), "rx": full(rx), "angle": full(angle),
            "dark": full(dark), "priority": full(priority), "type": full(ntype, np.uint8)}


def _resolve_overlaps(nuclei, shape):
    """Drop nuclei outside the canvas and, of every pair closer than 0.9 × the sum of their mean radii, the one
    with the lower priority. Elongated nuclei may then touch or overlap slightly, as real ones do."""
    from scipy.spatial import cKDTree

    h, w = shape
    keep = (nuclei["y"] >= 0) & (nuclei["y"] <= h - 1) & (nuclei["x"] >= 0) & (nuclei["x"] <= w - 1)
    nuclei = {k: v[keep] for k, v in nuclei.items()}
    n = len(nuclei["y"])
    if n < 2:
        return nuclei
    radius = np.sqrt(nuclei["ry"] * nuclei["rx"])
    pts = np.column_stack([nuclei["y"], nuclei["x"]])
    pairs = cKDTree(pts).query_pairs(r=2 * 0.9 * radius.max(), output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        dist = np.hypot(*(pts[i] - pts[j]).T)
        clash = dist < 0.9 * (radius[i] + radius[j])
        i, j = i[clash], j[clash]
        # lower priority loses; ties broken by index so the result is deterministic
        pi, pj = nuclei["priority"][i], nuclei["priority"][j]
        loser = np.where((pi > pj) | ((pi == pj) & (i < j)), j, i)
        alive = np.ones(n, bool)
        alive[loser] = False
        nuclei = {k: v[alive] for k, v in nuclei.items()}
    return nuclei


def _paint_nuclei(rng, shape, nuclei, hema, eosin, tissue, rendering=RENDERING, px=1.0):
    """Rasterise all nuclei at once (one window per nucleus); returns instance and type maps and paints H/E.
    A nucleus on the section's edge is cut by it: no stain and no mask outside ``tissue``."""
    r = rendering
    h, w = shape
    inst = np.zeros(shape, np.int32)
    types = np.zeros(shape, np.uint8)
    n = len(nuclei["y"])
    if n == 0:
        return inst, types
    win = int(np.ceil(max(nuclei["ry"].max(), nuclei["rx"].max()) + 1.5))
    d = np.arange(-win, win + 1)
    cy = np.rint(nuclei["y"]).astype(int)
    cx = np.rint(nuclei["x"]).astype(int)
    yy = cy[:, None, None] + d[None, :, None]
    xx = cx[:, None, None] + d[None, None, :]
    dy = yy - nuclei["y"][:, None, None]
    dx = xx - nuclei["x"][:, None, None]
    ca, sa = np.cos(nuclei["angle"])[:, None, None], np.sin(nuclei["angle"])[:, None, None]
    u = dx * ca + dy * sa          # along the nucleus' long (rx) axis
    v = -dx * sa + dy * ca
    r2 = (u / nuclei["rx"][:, None, None]) ** 2 + (v / nuclei["ry"][:, None, None]) ** 2
    inside_canvas = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    yy = np.broadcast_to(yy, r2.shape)
    xx = np.broadcast_to(xx, r2.shape)
    inside_canvas = inside_canvas & tissue[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    # soft edge for the stain (anti-aliasing), hard edge for the mask
    soft = np.clip((1.15 - r2) / 0.3, 0.0, 1.0) * inside_canvas
    chromatin = 1.0 + r.chromatin_contrast * rng.standard_normal(r2.shape)
    if r.chromatin_grain_um > 0:   # granular chromatin: one smooth field over the canvas, read through each window
        grain = _smooth_noise(_texture_rng(rng), shape, r.chromatin_grain_um * px, low_res=False)
        chromatin = 1.0 + r.chromatin_contrast * grain[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    rim = r.rim_base + r.rim_gain * np.clip(r2, 0, 1)
    density = soft * nuclei["dark"][:, None, None] * rim * chromatin
    if r.nuclear_stain != 1.0:
        density = density * r.nuclear_stain
    sel = soft > 0
    np.maximum.at(hema, (yy[sel], xx[sel]), density[sel])
    eosin[yy[sel], xx[sel]] *= 1.0 - 0.6 * soft[sel]
    hard = (r2 <= 1.0) & inside_canvas
    ids = np.broadcast_to(np.arange(1, n + 1)[:, None, None], r2.shape)
    inst[yy[hard], xx[hard]] = ids[hard]
    tmap = np.broadcast_to(nuclei["type"][:, None, None], r2.shape)
    types[yy[hard], xx[hard]] = tmap[hard]
    # where two nuclei overlap the later one is drawn on top; every nucleus keeps at least its centre pixel
    inst[cy, cx] = np.arange(1, n + 1)
    types[cy, cx] = nuclei["type"]
    return inst, types


# ------------------------------------------------------------------------------------------------ glands
def _place_discs(rng, region, radii_fn, gap_px, n_candidates, max_count=None):
    """Dart throwing inside ``region``: returns (y, x, r) of non-overlapping discs separated by ``gap_px``."""
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return np.zeros((0, 3))
    pick = rng.integers(0, len(ys), size=n_candidates)
    cand_r = radii_fn(n_candidates)
    acc = np.zeros((0, 3))
    for y, x, r in zip(ys[pick], xs[pick], cand_r):
        if len(acc):
            dist = np.hypot(acc[:, 0] - y, acc[:, 1] - x)
            if np.any(dist < acc[:, 2] + r + gap_px):
                continue
        acc = np.vstack([acc, [y, x, r]])
        if max_count and len(acc) >= max_count:
            break
    return acc


def _paint_glands(rng, shape, glands, px, hema, eosin, masks, neoplastic, severity, tissue, rendering=RENDERING):
    """Paint gland epithelium and lumina; returns the nuclei lining each gland."""
    h, w = shape
    parts = []
    for k, (gy, gx, r) in enumerate(glands):
        sev = severity[int(gy), int(gx)] if neoplastic else 0.0
        aspect = rng.uniform(0.7, 1.0)
        ang = rng.uniform(0, np.pi)
        n_lobes = rng.integers(3, 8)
        amp = (0.12 if not neoplastic else 0.05) * rng.uniform(0.3, 1.0, size=n_lobes) / np.arange(1, n_lobes + 1) ** 0.3
        phase = rng.uniform(0, 2 * np.pi, size=n_lobes)
        freq = np.arange(2, 2 + n_lobes)
        R = int(np.ceil(r * 1.25)) + 2
        y0, y1 = max(0, int(gy) - R), min(h, int(gy) + R + 1)
        x0, x1 = max(0, int(gx) - R), min(w, int(gx) + R + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - gy, xx - gx
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / aspect
        phi = np.arctan2(v, u)
        wobble = 1.0 + (amp[:, None, None] * np.cos(freq[:, None, None] * phi + phase[:, None, None])).sum(0)
        rho = np.hypot(u, v) / (r * wobble)
        # epithelium thickness: columnar cells in benign glands; tumour glands lose their lumen as grade rises
        thick_um = (rng.uniform(10, 14) if not neoplastic else rng.uniform(7, 10) + 1.2 * sev)
        t = min(0.95, thick_um * px / r)
        lumen_scale = 1.0 - t
        if neoplastic and sev > 3.2 and rng.random() < min(0.9, (sev - 3.2) / 1.5):
            lumen_scale = 0.0  # solid nest without lumen
        sub = (slice(y0, y1), slice(x0, x1))
        inside = tissue[sub]  # a gland never spills over the section's edge
        epi = (rho < 1.0) & (rho >= lumen_scale) & inside
        lum = (rho < lumen_scale) & inside
        eosin[sub][epi] = 0.17 + 0.05 * rng.random() + (0.03 if neoplastic else 0.0)
        hema[sub][epi] = rendering.epithelium_hema + (0.08 if neoplastic else 0.0)
        eosin[sub][lum] = 0.015 + 0.02 * (rng.random() < 0.35)   # some lumina hold pale secretion
        hema[sub][lum] = 0.004
        masks["glands"][sub] |= (rho < 1.0) & inside
        masks["lumen"][sub] |= lum
        # nuclei lining the gland, at the basal side of the epithelium
        n_rings = 1 if not neoplastic else (1 + int(sev > 1.5) + int(sev > 3.0))
        r_nuc = (3.0 if not neoplastic else 3.3 + 0.22 * sev) / px
        for ring in range(n_rings):
            rho_n = 1.0 - (0.3 + 0.5 * ring / max(1, n_rings)) * t
            if lumen_scale == 0.0:
                rho_n = rho_n * rng.uniform(0.2, 1.0)
            circumference = 2 * np.pi * r * rho_n
            count = max(3, int(circumference / (2.3 * r_nuc)))
            phis = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(0, 2 * np.pi)
            phis = phis + rng.normal(0, 0.15 / count * 2 * np.pi, count)
            wob = 1.0 + (amp[:, None] * np.cos(freq[:, None] * phis[None, :] + phase[:, None])).sum(0)
            rr = r * rho_n * wob * (1 + rng.normal(0, 0.03 + 0.02 * sev, count))
            uu, vv = rr * np.cos(phis), rr * np.sin(phis) * aspect
            ny = gy + uu * np.sin(ang) + vv * np.cos(ang)
            nx = gx + uu * np.cos(ang) - vv * np.sin(ang)
            pleo = 1.0 + (0.08 + 0.06 * sev if neoplastic else 0.06) * rng.standard_normal(count)
            ry = np.clip(r_nuc * 0.75 * pleo, 1.2, None)
            rx = np.clip(r_nuc * 1.1 * pleo, 1.4, None)
            # columnar nuclei point towards the gland centre
            outward = np.arctan2(ny - gy, nx - gx) + rng.normal(0, 0.2 + 0.15 * sev, count)
            dark = (0.95 if not neoplastic else 1.05 + 0.07 * sev) * rng.uniform(0.85, 1.15, count)
            iy = np.clip(np.rint(ny).astype(int), 0, h - 1)
            ix = np.clip(np.rint(nx).astype(int), 0, w - 1)
            on = tissue[iy, ix]
            parts.append(_make_nuclei(ny[on], nx[on], ry[on], rx[on], outward[on], 1 if neoplastic else 2, dark[on],
                                      3.0 - 0.1 * ring))
    return _concat_nuclei(parts)


# ------------------------------------------------------------------------------------------------- scene
def _check_um_per_px(um_per_px) -> float:
    value = float(um_per_px)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"um_per_px={um_per_px!r}: the pixel size must be a positive number of micrometres "
                         "(1.0 ≈ 10× magnification, 0.5 ≈ 20×).")
    return value


def render_patch(rng, shape, *, tissue=None, tumour=None, severity=0.0, um_per_px=1.0, benign_glands=True,
                 gland_density=1.0, stroma_cellularity=1.0, theta=None, coherence=0.5, fat=None,
                 lymphocytes=0.3, stain=None, artefacts=(), edge_um=25.0, spindle_tumour=False,
                 rendering=None) -> Scene:
    """Render one H&E scene with its ground truth.

    tissue, tumour: H×W bool masks (default: all tissue, no tumour); severity: tumour grade 0–5 (scalar or map);
    theta / coherence: stroma fibre direction (radians) and alignment 0–1 (scalar or map); fat: bool mask of
    adipose tissue; stain: dict with ``h``, ``e`` intensity factors (per-slide staining variation);
    artefacts: any of "blur", "fold", "pen", "bubble"; spindle_tumour: neoplastic spindle cells in the stroma
    (meningioma-like fascicles, used by the regression patches); rendering: a :class:`Rendering` (default
    :data:`RENDERING`), which changes the pixels and never the ground truth.
    """
    r = RENDERING if rendering is None else rendering
    if not isinstance(r, Rendering):
        raise TypeError(f"rendering={rendering!r}: give a histology.Rendering (or None for the default).")
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape={tuple(shape)}: a patch needs at least 1 × 1 pixels.")
    shape = (h, w)
    px = 1.0 / _check_um_per_px(um_per_px)  # pixels per micrometre
    tissue = np.ones(shape, bool) if tissue is None else np.asarray(tissue, bool)
    tumour = np.zeros(shape, bool) if tumour is None else (np.asarray(tumour, bool) & tissue)
    severity_map = np.broadcast_to(np.asarray(severity, float), shape)
    theta = _smooth_noise(rng, shape, 60 * px) * 0.9 + rng.uniform(0, np.pi) if theta is None else theta
    theta = np.broadcast_to(np.asarray(theta, float), shape)
    coherence_map = np.broadcast_to(np.clip(np.asarray(coherence, float), 0, 1), shape)
    fat = np.zeros(shape, bool) if fat is None else (np.asarray(fat, bool) & tissue & ~tumour)
    stain = {"h": 1.0, "e": 1.0} if stain is None else stain

    masks = {name: np.zeros(shape, bool) for name in MASK_NAMES}
    masks["tissue"] = tissue.copy()
    masks["tumour"] = tumour.copy()
    masks["fat"] = fat.copy()

    # stroma: eosinophilic fibres with faint hematoxylin
    fibres = _fibre_texture(rng, shape, theta, coherence_map, wavelength_px=max(4.0, r.fibre_wavelength_um * px),
                            length=r.fibre_length)
    # collagen bundles with pale clefts between them: a soft threshold of the fibre texture
    looseness = r.looseness + 0.5 * _smooth_noise(rng, shape, 25 * px)   # denser and looser stroma in patches
    bundles = 1.0 / (1.0 + np.exp(-r.bundle_sharpness * (fibres + looseness)))
    eosin = np.where(tissue, r.cleft_eosin + r.bundle_eosin * bundles + 0.03 * _smooth_noise(rng, shape, 20 * px),
                     0.0)
    eosin = np.clip(eosin, 0.02, None) * tissue
    hema = np.where(tissue, r.stroma_hema + 0.03 * _smooth_noise(rng, shape, 10 * px), 0.0)
    if r.hema_follows_bundles > 0:
        hema *= 1.0 - r.hema_follows_bundles * (1.0 - bundles)
    presence = 1.0 - r.cleft_clearing * (1.0 - bundles)   # how much section there is between the bundles
    if r.cleft_clearing > 0:
        eosin *= presence
        hema *= presence

    parts = []
    gland_free = tissue & ~fat
    if benign_glands and gland_density > 0:
        region = ndimage.binary_erosion(gland_free & ~tumour, iterations=max(1, int(8 * px)))
        area_um2 = region.sum() / px**2
        n_cand = int(gland_density * area_um2 / 900) + 1
        glands = _place_discs(rng, region, lambda n: rng.uniform(22, 50, n) * px, 22 * px, n_cand)
        parts.append(_paint_glands(rng, shape, glands, px, hema, eosin, masks, False, severity_map, tissue, r))
    if tumour.any():
        sev_mean = float(severity_map[tumour].mean())
        region = tumour & ~fat
        area_um2 = region.sum() / px**2
        # tumour glands: smaller, more crowded as the grade rises
        n_cand = int(area_um2 / max(60.0, 500 - 80 * sev_mean)) + 1
        r_lo, r_hi = max(6.0, 24 - 3.6 * sev_mean), max(9.0, 34 - 4.4 * sev_mean)
        gap = max(2.0, 14 - 2.4 * sev_mean) * px
        glands = _place_discs(rng, region, lambda n: rng.uniform(r_lo, r_hi, n) * px, gap, n_cand)
        parts.append(_paint_glands(rng, shape, glands, px, hema, eosin, masks, True, severity_map, region, r))
        # high grades: cords and sheets of tumour cells between the glands
        cord_weight = 1.0 / (1.0 + np.exp(-(severity_map - 3.3) * 2.2))
        cords = (_smooth_noise(rng, shape, 6 * px) > 1.2 - 1.9 * cord_weight) & region & ~masks["glands"]
        area = cords.sum()
        if area:
            n = int(area / (2 * (3.8 * px) ** 2 * 1.1))
            ys, xs = np.nonzero(cords)
            pick = rng.integers(0, len(ys), n)
            sev = severity_map[ys[pick], xs[pick]]
            rn = (3.4 + 0.25 * sev) * px * (1 + 0.12 * rng.standard_normal(n))
            parts.append(_make_nuclei(ys[pick] + rng.uniform(-.5, .5, n), xs[pick] + rng.uniform(-.5, .5, n),
                                      np.clip(rn * 0.85, 1.2, None), np.clip(rn * 1.1, 1.4, None),
                                      rng.uniform(0, np.pi, n), 1, 1.1 + 0.06 * sev, 2.0))
            hema[cords] = np.maximum(hema[cords], 0.07)
            eosin[cords] = np.maximum(eosin[cords], 0.15)

    # stroma nuclei: spindle fibroblasts along the fibres, a few round lymphocytes
    stroma = tissue & ~masks["glands"] & ~fat
    masks["stroma"] = stroma & ~tumour if not spindle_tumour else stroma.copy()
    ys, xs = np.nonzero(stroma)
    if len(ys):
        n = rng.poisson(stroma_cellularity * len(ys) / (px**2) / 260.0)
        pick = rng.integers(0, len(ys), n)
        py, pxx = ys[pick] + rng.uniform(-.5, .5, n), xs[pick] + rng.uniform(-.5, .5, n)
        kappa = coherence_map[ys[pick], xs[pick]]
        spread = (1.0 - kappa) * np.pi / 2 + 0.08
        ang = theta[ys[pick], xs[pick]] + rng.normal(0, 1, n) * spread
        size = 1.0 + 0.12 * rng.standard_normal(n)
        if spindle_tumour:
            ry, rx, dark, ntype = 2.3 * px * size, 5.2 * px * size, 1.0, 1
        else:
            ry, rx, dark, ntype = 1.5 * px * size, 4.8 * px * size, 0.9, 2
        parts.append(_make_nuclei(py, pxx, np.clip(ry, 1.2, None), np.clip(rx, 1.6, None), ang, ntype,
                                  dark * rng.uniform(0.85, 1.15, n), 1.0))
        n_lym = rng.poisson(lymphocytes * len(ys) / (px**2) / 2500.0)
        pick = rng.integers(0, len(ys), n_lym)
        rl = 2.5 * px * (1 + 0.08 * rng.standard_normal(n_lym))
        parts.append(_make_nuclei(ys[pick] + 0.0, xs[pick] + 0.0, np.clip(rl, 1.2, None), np.clip(rl, 1.2, None),
                                  0.0, 2, 1.35, 1.5))

    if fat.any():
        _paint_fat(rng, fat, px, hema, eosin)

    grain = 1.0 + np.float32(r.stain_grain) * rng.standard_normal(shape, dtype=np.float32)
    if r.stain_grain_um > 0:
        grain = 1.0 + np.float32(r.stain_grain) * _smooth_noise(_texture_rng(rng), shape, r.stain_grain_um * px,
                                                                low_res=False)
    eosin *= grain
    hema *= grain
    nuclei = _resolve_overlaps(_concat_nuclei(parts), shape)
    nuclei.pop("priority")
    inst, types = _paint_nuclei(rng, shape, nuclei, hema, eosin, tissue, r, px)

    # tissue edge band: the outer rim of each tissue piece (crushed, often darker)
    if tissue.all():
        masks["edge"] = np.zeros(shape, bool)
    else:
        dist = ndimage.distance_transform_edt(tissue)
        masks["edge"] = tissue & (dist <= edge_um * px)
        hema *= np.where(masks["edge"], 1.15, 1.0)

    if r.cleft_clearing > 0:   # the residual tint follows the section: less of it in the clefts of the stroma
        cleft = stroma & ~tumour if not spindle_tumour else stroma
        tissue_weight = np.where(cleft, presence, tissue.astype(np.float64))
    else:
        tissue_weight = tissue
    rgb = _to_rgb(rng, hema * stain["h"], eosin * stain["e"], tissue_weight, r)
    for kind in artefacts:
        _apply_artefact(rng, kind, rgb, masks, px)
    rgb = np.clip(rgb, 0, 1)
    rgb8 = (rgb * 255 + 0.5).astype(np.uint8)
    if r.jpeg_quality > 0:
        rgb8 = _jpeg(rgb8, int(r.jpeg_quality))

    nuclear = inst > 0
    maps = {
        "cellularity": ndimage.gaussian_filter(nuclear.astype(np.float32), 8 * px),
        "coherence": np.asarray(coherence_map, np.float32).copy(),
    }
    return Scene(rgb=rgb8, nuclei_instances=inst, nuclei_types=types, masks=masks, nuclei=nuclei, maps=maps)


def _jpeg(rgb8, quality: int) -> np.ndarray:
    """The image saved as JPEG and read back (Pillow, its default 4:2:0 chroma subsampling), as a scanner stores tiles."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb8).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _paint_fat(rng, fat, px, hema, eosin):
    """Adipocytes: large empty cells whose thin membranes form a Voronoi net."""
    from scipy.spatial import cKDTree

    ys, xs = np.nonzero(fat)
    n_cells = max(2, int(len(ys) / (px**2) / (np.pi * 28**2)))
    seeds = np.column_stack([ys, xs])[rng.integers(0, len(ys), n_cells)] + rng.uniform(-.5, .5, (n_cells, 2))
    d, _ = cKDTree(seeds).query(np.column_stack([ys, xs]), k=2)
    membrane = (d[:, 1] - d[:, 0]) < 1.6 * max(1.0, px)
    eosin[ys, xs] = np.where(membrane, 0.16, 0.008)
    hema[ys, xs] = np.where(membrane, 0.02, 0.002)


def _to_rgb(rng, hema, eosin, tissue, rendering=RENDERING):
    """Beer-Lambert composition through skimage's H&E-DAB stain matrix, with a little camera noise."""
    hed = np.zeros(hema.shape + (3,), np.float32)
    # density units → skimage's HED optical densities, calibrated on real H&E (rgb2hed percentiles of the
    # stardist, tiatoolbox and CMU-1 images: nuclei H ≈ 0.10–0.15, stroma E ≈ 0.03–0.05)
    hed[..., 0] = H_UNIT * hema
    hed[..., 1] = E_UNIT * eosin
    # real scans leave a residual in skimage's third (DAB) channel; without it the colours are too magenta
    hed[..., 2] = D_UNIT * (rendering.residual_base * tissue + 1.3 * eosin + 0.25 * hema)
    rgb = hed2rgb(hed).astype(np.float32)
    rgb = rgb * np.float32(0.96) + np.float32(0.02)  # scanner white level / black offset
    rgb += np.float32(rendering.camera_noise) * rng.standard_normal(rgb.shape, dtype=np.float32)
    sigma = rendering.optics_sigma_px
    return ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0))  # optics


def _apply_artefact(rng, kind, rgb, masks, px):
    h, w = rgb.shape[:2]
    area = np.zeros((h, w), bool)
    if kind == "blur":
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.mgrid[0:h, 0:w]
        area = np.hypot(yy - cy, xx - cx) < rng.uniform(0.5, 0.9) * max(h, w)
        blurred = ndimage.gaussian_filter(rgb, sigma=(rng.uniform(2.5, 4.5) * px, rng.uniform(2.5, 4.5) * px, 0))
        rgb[area] = blurred[area]
    elif kind == "fold":
        # a fold doubles the section: a band where the stain is (roughly) squared, i.e. darker and more saturated
        yy, xx = np.mgrid[0:h, 0:w]
        ang = rng.uniform(0, np.pi)
        off = rng.uniform(-0.3, 0.3) * max(h, w)
        dist = (xx - w / 2) * np.sin(ang) - (yy - h / 2) * np.cos(ang) - off
        area = (np.abs(dist) < rng.uniform(0.12, 0.3) * max(h, w)) & masks["tissue"]
        rgb[area] = rgb[area] ** rng.uniform(1.8, 2.6)
    elif kind == "pen":
        # marker ink: a broad stroke of green/blue/black absorbance laid over the tissue
        colour = np.array([[0.55, 0.15, 0.35], [0.8, 0.45, 0.1], [0.6, 0.6, 0.55]][rng.integers(0, 3)])
        t = np.linspace(0, 1, 200)
        y = rng.uniform(0, h) + (rng.uniform(-1, 1) * h) * t + 0.1 * h * np.sin(6 * t + rng.uniform(0, 6))
        x = rng.uniform(0, w) * (1 - t) + rng.uniform(0, w) * t
        line = np.zeros((h, w), bool)
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        line[y[ok].astype(int), x[ok].astype(int)] = True
        area = ndimage.binary_dilation(line, iterations=max(2, int(rng.uniform(0.08, 0.2) * min(h, w))))
        absorb = np.exp(-colour * rng.uniform(1.2, 2.2))
        rgb[area] = rgb[area] * absorb
    elif kind == "bubble":
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.25, 0.5) * min(h, w)
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.hypot(yy - cy, xx - cx)
        area = d < r
        ring = np.abs(d - r) < 1.5 * max(1.0, px)
        rgb[area] = 0.35 * rgb[area] + 0.6
        rgb[ring] *= 0.45
    else:
        raise ValueError(f"unknown artefact {kind!r}; choose from 'blur', 'fold', 'pen', 'bubble'.")
    masks["artefact"] |= area


# ------------------------------------------------------------------------------------------------ slides
@dataclass
class Slide:
    scene: Scene
    annotations: list          # tumour polygons, each an (n, 2) array of (row, col) vertices
    label: int                 # 1 if the slide holds cancer
    severity: list             # grade (1–5) of each tumour polygon
    slide_id: str = ""


def _star_polygon(rng, cy, cx, radius, n_vertices=18, irregularity=0.35):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = radius * (1 + irregularity * ndimage.gaussian_filter1d(rng.standard_normal(n_vertices), 1.2, mode="wrap"))
    return np.column_stack([cy + radii * np.sin(angles), cx + radii * np.cos(angles)])


def render_slide(seed, size=1536, positive=True, um_per_px=1.0, n_tumours=None, artefacts=None, slide_id="",
                 benign_glands=True, rendering=None) -> Slide:
    """A tissue section of ``size``×``size`` px with 0 (negative) or 1–3 tumour polygons (positive).

    Tumour sizes range from small foci to large areas (paper 002: small lesions are the hard cases);
    each tumour gets its own grade. Staining intensity varies from slide to slide. ``benign_glands=False`` leaves
    the benign glands out (stroma and fat around any tumour, as in tissue without glands such as the dermis); the
    section's outline, tumour polygons, fat and staining are drawn before the glands, so they stay those of the default.
    ``rendering`` (a :class:`Rendering`) changes the pixels only: the annotations and masks stay those of the default.
    """
    if size < 64:
        raise ValueError(f"slide size {size} px is too small; use at least 64 px.")
    rng = np.random.default_rng(seed)
    px = 1.0 / _check_um_per_px(um_per_px)
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    # one or two tissue pieces: an irregular blob from thresholded smooth noise inside an ellipse
    cy, cx = rng.uniform(0.4, 0.6, 2)
    ay, ax = rng.uniform(0.30, 0.42, 2)
    ellipse = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2
    field = 1.0 - ellipse + 0.22 * _smooth_noise(rng, shape, size / 10)
    tissue = field > 0
    tissue = ndimage.binary_fill_holes(ndimage.binary_opening(tissue, iterations=3))
    labels, n = ndimage.label(tissue)
    if n > 1:  # keep the pieces larger than 2 % of the slide
        sizes = ndimage.sum(tissue, labels, range(1, n + 1))
        tissue = np.isin(labels, 1 + np.nonzero(sizes > 0.02 * size * size)[0])
    inner = ndimage.binary_erosion(tissue, iterations=int(40 * px))
    annotations, severities = [], []
    tumour = np.zeros(shape, bool)
    severity = np.zeros(shape)
    if positive:
        k = int(n_tumours) if n_tumours is not None else int(rng.integers(1, 4))
        ys, xs = np.nonzero(inner if inner.any() else tissue)
        for _ in range(k):
            i = rng.integers(0, len(ys))
            radius = float(np.exp(rng.uniform(np.log(0.05), np.log(0.25))) * size)
            poly = _star_polygon(rng, ys[i], xs[i], radius)
            rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape)
            region = np.zeros(shape, bool)
            region[rr, cc] = True
            grade = int(rng.integers(1, 6))
            severity[region] = grade + rng.normal(0, 0.3)
            tumour |= region
            annotations.append(np.clip(poly, 0, size - 1))
            severities.append(grade)
        tumour &= tissue
    fat = (_smooth_noise(rng, shape, size / 14) > 1.4) & tissue & ~tumour
    theta = _smooth_noise(rng, shape, 80 * px) * 1.2 + rng.uniform(0, np.pi)
    coherence = np.clip(0.5 + 0.25 * _smooth_noise(rng, shape, 60 * px), 0, 1)
    if artefacts is None:
        artefacts = [a for a, p in (("pen", 0.15), ("fold", 0.15)) if rng.random() < p]
    stain = {"h": rng.uniform(0.8, 1.2), "e": rng.uniform(0.8, 1.2)}
    scene = render_patch(rng, shape, tissue=tissue, tumour=tumour, severity=severity, um_per_px=um_per_px,
                         benign_glands=bool(benign_glands), gland_density=rng.uniform(0.5, 1.0), theta=theta,
                         coherence=coherence, fat=fat, stain=stain, artefacts=artefacts, rendering=rendering)
    return Slide(scene=scene, annotations=annotations, label=int(bool(positive)), severity=severities,
                 slide_id=slide_id)


# ---------------------------------------------------------------------------------------- grading patches
def render_grade_patch(seed, grade, size=96, um_per_px=1.0, overlap=0.45) -> Scene:
    """A DiagSet-like patch of one of the 7 grades (A, N, R1–R5).

    R-grades draw their severity from ``grade ± overlap`` (normal noise), so neighbouring grades share
    appearance and a classifier must make some errors; A patches are tissue spoiled by blur, folds, pen or
    bubbles, some of them on top of tumour.
    """
    gi = grade_index(grade) if isinstance(grade, str) else int(grade)
    if not 0 <= gi < len(GRADES):
        raise ValueError(f"grade index {grade!r} out of range 0–{len(GRADES) - 1} ({', '.join(GRADES)}).")
    rng = np.random.default_rng(seed)
    shape = (size, size)
    stain = {"h": rng.uniform(0.85, 1.15), "e": rng.uniform(0.85, 1.15)}
    if GRADES[gi] == "A":
        tumour = rng.random() < 0.4
        kinds = list(rng.choice(["blur", "fold", "pen", "bubble"], size=rng.integers(1, 3), replace=False))
        tissue = None
        if rng.random() < 0.4:  # tissue edge with empty glass
            yy, xx = np.mgrid[0:size, 0:size]
            ang = rng.uniform(0, 2 * np.pi)
            tissue = (xx - size / 2) * np.cos(ang) + (yy - size / 2) * np.sin(ang) < rng.uniform(-0.2, 0.2) * size
        return render_patch(rng, shape, tissue=tissue, tumour=(np.ones(shape, bool) if tumour else None),
                            severity=rng.uniform(1, 5), um_per_px=um_per_px, stain=stain, artefacts=kinds)
    if GRADES[gi] == "N":
        return render_patch(rng, shape, um_per_px=um_per_px, gland_density=rng.uniform(0.8, 1.6), stain=stain,
                            coherence=rng.uniform(0.3, 0.8))
    severity = float(np.clip(gi - 1 + rng.normal(0, overlap), 0.6, 5.4))
    return render_patch(rng, shape, tumour=np.ones(shape, bool), severity=severity, um_per_px=um_per_px,
                        benign_glands=False, stain=stain, coherence=rng.uniform(0.3, 0.8))


# ------------------------------------------------------------------------------------- regression patches
def regression_sample_params(n_samples=16, seed=0):
    """Per-sample (tumour) parameters: mean cellularity and fibre coherence, plus MD/FA shifts.

    Samples differ systematically (paper 003's 16 meningiomas), so a model trained on two samples has to
    extrapolate to the others.
    """
    rng = np.random.default_rng(seed + 7919)
    return {
        "cellularity": rng.uniform(0.4, 5.0, n_samples),
        "coherence": rng.uniform(0.15, 0.9, n_samples),
        "md_shift": rng.normal(0, 0.03, n_samples),
        "fa_shift": rng.normal(0, 0.015, n_samples),
        "stain_h": rng.uniform(0.85, 1.15, n_samples),
        "stain_e": rng.uniform(0.85, 1.15, n_samples),
    }


def md_fa_from_tissue(nuclear_fraction, coherence, md_shift=0.0, fa_shift=0.0, rng=None, noise=(0.008, 0.006)):
    """The simulator's diffusion model: MD (µm²/ms) falls with nuclear area fraction (restriction by cells),
    FA rises with the coherence of fibre and nuclear orientation; plus sample shifts and measurement noise."""
    nuclear_fraction = np.asarray(nuclear_fraction, float)
    coherence = np.asarray(coherence, float)
    e1 = e2 = 0.0
    if rng is not None:
        e1 = rng.normal(0, noise[0], nuclear_fraction.shape)
        e2 = rng.normal(0, noise[1], coherence.shape)
    md = 1.45 - 2.2 * nuclear_fraction + md_shift + e1
    fa = 0.08 + 0.55 * coherence + fa_shift + e2
    return md, np.clip(fa, 0.0, 1.0)


def render_regression_patch(seed, sample_params, sample, size=96, um_per_px=1.0):
    """A meningioma-like patch of fascicles of spindle tumour cells; returns the scene and its targets.

    Targets: CC = number of nuclei (exactly the instances in the mask), MD from the nuclear area fraction,
    FA from the mean fibre/nuclear orientation coherence (:func:`md_fa_from_tissue`).
    """
    rng = np.random.default_rng(seed)
    p = {k: v[sample] for k, v in sample_params.items()}
    shape = (size, size)
    cell = float(np.clip(p["cellularity"] * np.exp(rng.normal(0, 0.3)), 0.2, 6.0))
    coh_mean = float(np.clip(p["coherence"] + rng.normal(0, 0.12), 0.02, 0.98))
    coherence = np.clip(coh_mean + 0.15 * _smooth_noise(rng, shape, 20 / um_per_px), 0, 1)
    theta = rng.uniform(0, np.pi) + 0.5 * _smooth_noise(rng, shape, 40 / um_per_px)
    scene = render_patch(rng, shape, um_per_px=um_per_px, benign_glands=False, stroma_cellularity=cell,
                         theta=theta, coherence=coherence, lymphocytes=0.1, spindle_tumour=True,
                         stain={"h": p["stain_h"], "e": p["stain_e"]})
    nuclear_fraction = float((scene.nuclei_instances > 0).mean())
    md, fa = md_fa_from_tissue(nuclear_fraction, float(coherence.mean()), p["md_shift"], p["fa_shift"], rng)
    targets = {"cc": scene.n_nuclei, "md": float(md), "fa": float(fa),
               "nuclear_fraction": nuclear_fraction, "coherence": float(coherence.mean())}
    return scene, targets
