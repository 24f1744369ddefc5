"""Simulated CT for paper 004 (Ryan et al.): 2-D lung slices whose clusters differ in one factor of an
abnormality (§4.1) and 3-D lung volumes of a cohort with clinical outcomes (§5). Lung voxels take HU values drawn
from the real thoracic CT slice bundled with pydicom (:func:`helpers.data.bundled.ct_small_slice`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..data.bundled import ct_small_slice


# ============================================================================================ simulated CT
# Paper 004 (Ryan et al., §4.1): one axial lung slice, padded to a square with a null background, with a disc
# abnormality whose intensity, location or size varies (one factor at a time) between the true clusters; lung
# voxels take values drawn from the HU distribution of real lung (the pydicom CT slice).
CT_WINDOW = (-1000.0, 400.0)     # HU mapped to [0, 1] for the networks (air … dense tissue)
CT_BACKGROUND_HU = -1000.0       # the null padding around the body
CT_SCENARIOS = ("intensity", "location", "size")
CT_INTENSITY_RANGE = (0.0, 400.0)   # HU added inside the abnormality (paper: 0–400 in steps of 100)
CT_RADIUS_RANGE = (2.0, 6.0)        # px (paper: 2–6 in steps of 1)
# Abnormality sites for the location scenario (row, col on the 64-px slice), first K are used; spread over
# both lungs so neighbouring clusters never share pixels.
CT_SITES = ((21, 19), (41, 45), (41, 18), (21, 45), (31, 24))
CT_FIXED = {"intensity": 400.0, "radius": 4.0, "site": 4}   # the factors held constant in the other scenarios


def real_lung_hu(threshold_hu: float = -500.0) -> np.ndarray:
    """HU values of the lung pixels (below ``threshold_hu``) of the real thoracic CT slice bundled with pydicom:
    the empirical distribution the simulated lung parenchyma is drawn from."""
    hu = ct_small_slice()
    values = hu[hu < threshold_hu].astype(np.float32)
    if values.size < 100:
        raise RuntimeError(f"only {values.size} pixels below {threshold_hu} HU in the CT slice; expected lung.")
    return values


def hu_to_unit(hu) -> np.ndarray:
    """HU → [0, 1] through :data:`CT_WINDOW` (clipped), the networks' input scale."""
    low, high = CT_WINDOW
    hu = np.asarray(hu)
    if hu.size and not np.isfinite(hu).all():
        raise ValueError("HU values contain NaN or inf; fill them (e.g. with -1000 HU, air) before windowing.")
    return np.clip((np.asarray(hu, np.float32) - low) / (high - low), 0.0, 1.0)


def lung_slice_template(size: int = 64):
    """Masks of the simulated median axial slice: body (an ellipse wider than tall, so the square image needs
    padding), the two lung fields and a vertebra. Returns dict of H×W bool: body, lung, right_lung, left_lung, bone."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((yy - 0.5) / 0.33) ** 2 + ((xx - 0.5) / 0.47) ** 2 <= 1.0
    # radiological convention: the patient's right lung on the image's left
    right = (((yy - 0.48) / 0.23) ** 2 + ((xx - 0.29) / 0.14) ** 2 <= 1.0)
    left = (((yy - 0.48) / 0.23) ** 2 + ((xx - 0.71) / 0.14) ** 2 <= 1.0)
    bone = ((yy - 0.76) / 0.06) ** 2 + ((xx - 0.5) / 0.06) ** 2 <= 1.0
    return {"body": body, "lung": (right | left) & body, "right_lung": right & body, "left_lung": left & body,
            "bone": bone & body}


def disc(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _levels(low, high, k):
    return np.linspace(low, high, k)


@dataclass
class CTSlices:
    """A simulated scenario: HU images, the true cluster of every image and what made it (see paper 004 §4.1)."""
    images: np.ndarray          # N×H×W float32, HU
    labels: np.ndarray          # N int, true cluster 0…K-1 (ordered by the varied factor)
    lesions: np.ndarray         # N×H×W bool, the abnormality
    intensity: np.ndarray       # N float, HU added inside the abnormality
    radius: np.ndarray          # N float, px
    site: np.ndarray            # N int, index into CT_SITES
    template: dict              # masks of the slice (body, lung, …)
    scenario: str
    k: int

    @property
    def unit(self) -> np.ndarray:
        """Images on the networks' [0, 1] scale, N×1×H×W."""
        return hu_to_unit(self.images)[:, None]


def simulate_ct_scenario(scenario: str, k: int, n: int = 300, size: int = 64, seed: int = 0,
                         lung_hu: np.ndarray | None = None) -> CTSlices:
    """Paper 004's simulation: ``n`` slices in ``k`` equal true clusters that differ only in the abnormality's
    intensity (0–400 HU added), location (``CT_SITES``) or size (radius 2–6 px); the other two factors held at
    ``CT_FIXED``. For k < 5 the levels are spread evenly over the same range (e.g. 0, 200, 400 HU for k = 3)."""
    if scenario not in CT_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(CT_SCENARIOS)}.")
    if not 2 <= k <= len(CT_SITES):
        raise ValueError(f"k = {k}: the simulation has 2 to {len(CT_SITES)} true clusters.")
    if n < 2 * k:
        raise ValueError(f"n = {n} images cannot fill {k} clusters of at least 2 images; raise n.")
    if size != 64:
        raise ValueError("the simulated slice is 64×64 px (paper 004); resample afterwards for another size.")
    rng = np.random.default_rng([seed, CT_SCENARIOS.index(scenario), k])
    lung_hu = real_lung_hu() if lung_hu is None else np.asarray(lung_hu, np.float32)
    template = lung_slice_template(size)
    labels = np.sort(np.arange(n) % k)
    intensity = np.full(n, CT_FIXED["intensity"], np.float32)
    radius = np.full(n, CT_FIXED["radius"], np.float32)
    site = np.full(n, CT_FIXED["site"], np.int64)
    if scenario == "intensity":
        intensity = _levels(*CT_INTENSITY_RANGE, k)[labels].astype(np.float32)
    elif scenario == "size":
        radius = np.round(_levels(*CT_RADIUS_RANGE, k))[labels].astype(np.float32)
    else:
        site = labels.copy()
    images, lesions = _ct_slices(template, rng, lung_hu, intensity, radius, site)
    return CTSlices(images=images, labels=labels, lesions=lesions, intensity=intensity, radius=radius, site=site,
                    template=template, scenario=scenario, k=k)


def _ct_slices(template, rng, lung_hu, intensity, radius, site):
    """HU slices of the template with one abnormality each (``intensity`` HU added on a disc), and its masks."""
    n, shape = len(intensity), template["lung"].shape
    images = np.full((n,) + shape, CT_BACKGROUND_HU, np.float32)
    lesions = np.zeros((n,) + shape, bool)
    lung, body, bone = template["lung"], template["body"], template["bone"]
    for i in range(n):
        img = images[i]
        img[body] = rng.normal(40.0, 15.0, body.sum())                  # soft tissue
        img[bone] = rng.normal(700.0, 60.0, bone.sum())
        img[lung] = rng.choice(lung_hu, lung.sum())                       # real lung HU, resampled
        lesion = disc(shape, CT_SITES[site[i]], radius[i]) & lung
        img[lesion] += intensity[i]
        lesions[i] = lesion & (intensity[i] > 0)
    return images, lesions


def healthy_ct_reference(n: int = 100, size: int = 64, seed: int = 0, lung_hu: np.ndarray | None = None):
    """``n`` slices of the same template with no abnormality, on the networks' [0, 1] scale (N×1×H×W): the
    simulation's stand-in for a normal-anatomy atlas. Its mean image is the reference the CAE can be centred on
    (``clustering.pretrain(..., centre=reference)``), so the encoder sees how a slice deviates from health."""
    if n < 1:
        raise ValueError(f"n = {n}: the healthy reference needs at least one slice.")
    if size != 64:
        raise ValueError("the simulated slice is 64×64 px (paper 004); resample afterwards for another size.")
    rng = np.random.default_rng([seed, len(CT_SCENARIOS), 0])      # a stream no scenario uses
    lung_hu = real_lung_hu() if lung_hu is None else np.asarray(lung_hu, np.float32)
    zeros = np.zeros(n, np.float32)
    images, _ = _ct_slices(lung_slice_template(size), rng, lung_hu, zeros, zeros + CT_FIXED["radius"],
                           np.full(n, CT_FIXED["site"], np.int64))
    return hu_to_unit(images)[:, None]


# ----------------------------------------------------------------------------------- simulated CT cohort (3-D)
# Paper 004 §5 on a simulated sarcoidosis cohort: lung volumes with subject-specific anatomy (scaling, shift,
# smooth warp), two disease patterns — diffuse upper-lobe parenchymal disease vs hilar-localised disease —
# and demographics and outcomes tied to disease burden. Arrays are (z, y, x): z from apex (0) to base,
# y anterior → posterior, x the patient's right → left (radiological display).
COHORT_PATTERNS = ("upper", "hilar")
COHORT_OUTCOMES = ("fev1", "fvc", "dlco", "sobq", "fas", "crp")   # crp is unrelated to the disease (a null)
# "paper": the cohort as described above. "hard": the same patterns at half the contrast, with what makes real cohorts
# harder — larger anatomical warps, a lung-density shift per subject (inspiration level, about ±50 HU) and per scanner
# (calibration), and air trapping in the lower lung that lowers FEV1, FVC and raises SOBQ but belongs to neither pattern.
# "middle": every nuisance of "hard" at 0.8 of its strength (the same draws scaled: 0.6 of the contrast, warps of 2.3
# voxels, 0.8 of the density shifts and of the air trapping): at seed 0, k-means on the registered raw voxels falls below
# ARI 0.9 there while the deep clustering still finds the patterns (benchmarks/cohort_nuisance.py) — between a cohort
# any clustering separates ("paper") and one no clustering here separates ("hard"). The strength was picked at seed 0
# after seeing both clusterings there, so seed 0 cannot test dec_beats_raw_kmeans on this variant; other seeds can
COHORT_VARIANTS = ("paper", "middle", "hard")
COHORT_NUISANCE = {"paper": 0.0, "middle": 0.8, "hard": 1.0}   # strength of the "hard" nuisances in each variant
HARD_SCANNER_SHIFT_HU = {"LightSpeed VCT": 0.0, "Definition AS+": 25.0, "Definition": -30.0, "iCT 128": 40.0}
# Anatomical points in the simulator's normalised coordinates (z from the apex, y, x from the patient's right), inside
# the lungs and the hilum; each subject's warp puts them at other voxels, which is the truth a registration must undo
COHORT_LANDMARKS = {"right apex": (0.2, 0.48, 0.29), "left apex": (0.2, 0.48, 0.71),
                    "right lung centre": (0.5, 0.48, 0.29), "left lung centre": (0.5, 0.48, 0.71),
                    "right base": (0.8, 0.48, 0.29), "left base": (0.8, 0.48, 0.71),
                    "right hilum": (0.5, 0.5, 0.39), "left hilum": (0.5, 0.5, 0.61)}


def _lung_fields(zz, yy, xx):
    """Lung, hilum and body masks on normalised coordinates (0…1 along each axis)."""
    body = ((yy - 0.5) / 0.34) ** 2 + ((xx - 0.5) / 0.46) ** 2 <= 1.0
    right = ((zz - 0.5) / 0.44) ** 2 + ((yy - 0.48) / 0.24) ** 2 + ((xx - 0.29) / 0.15) ** 2 <= 1.0
    left = ((zz - 0.5) / 0.44) ** 2 + ((yy - 0.48) / 0.24) ** 2 + ((xx - 0.71) / 0.15) ** 2 <= 1.0
    hilum = (((zz - 0.5) / 0.12) ** 2 + ((yy - 0.5) / 0.09) ** 2
             + np.minimum((xx - 0.39) ** 2, (xx - 0.61) ** 2) / 0.06 ** 2) <= 1.0
    return body, (right | left) & body, hilum & body


def _subject_grid(rng, shape, warp_voxels):
    """Normalised coordinates of a subject: per-axis scaling (±10 %), a shift (±2 voxels) and a smooth random
    displacement (about ``warp_voxels``), so each subject's anatomy differs from the template's."""
    axes = [np.linspace(0, 1, s, dtype=np.float32) for s in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    out = []
    for g, s in zip(grid, shape):
        scale = rng.uniform(0.9, 1.1)
        shift = rng.uniform(-2, 2) / s
        warp = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=s / 6)
        warp *= warp_voxels / s / (warp.std() + 1e-8)
        out.append((g - 0.5) / scale + 0.5 + shift + warp)
    return out


def render_lung_volume(rng, shape=(48, 48, 48), pattern="hilar", burden=0.5, lung_hu=None, warp_voxels=1.5,
                       contrast: float = 1.0, lung_shift_hu: float = 0.0, air_trapping: float = 0.0):
    """One subject's CT volume (HU, z×y×x) and masks. ``pattern``: "upper" (nodules and ground glass
    concentrated towards the apex) or "hilar" (enlarged hilar nodes, few perihilar nodules); ``burden`` 0–1.
    The harder cohort's nuisances (:func:`simulate_cohort`, ``variant="hard"``): ``contrast`` scales the disease's HU,
    ``lung_shift_hu`` moves all lung voxels (inspiration level, scanner calibration) and ``air_trapping`` (0–1) lowers
    the density of the lower lung by up to 120 HU (small-airways disease, which neither pattern carries). They use
    no random numbers, so the defaults give the same volume as before they existed."""
    if pattern not in COHORT_PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(COHORT_PATTERNS)}.")
    lung_hu = real_lung_hu() if lung_hu is None else lung_hu
    zz, yy, xx = _subject_grid(rng, shape, warp_voxels)
    body, lung, hilum = _lung_fields(zz, yy, xx)
    vol = np.full(shape, CT_BACKGROUND_HU, np.float32)
    vol[body] = rng.normal(40.0, 15.0, body.sum())
    vol[lung] = rng.choice(lung_hu, lung.sum())
    disease = np.zeros(shape, np.float32)
    if pattern == "upper":
        apex_weight = np.exp(-np.clip(zz, 0, 1) / 0.3) * lung        # denser towards the apex
        n_nodules = int(round(10 + 50 * burden))
        probs = apex_weight.ravel() / apex_weight.sum()
        for idx in rng.choice(apex_weight.size, n_nodules, p=probs):
            centre = np.unravel_index(idx, shape)
            radius = rng.uniform(1.0, 2.2)
            sl = tuple(slice(max(0, c - 3), min(s, c + 4)) for c, s in zip(centre, shape))
            g = np.ogrid[sl]
            ball = sum((gi - c) ** 2 for gi, c in zip(g, centre)) <= radius ** 2
            disease[sl] = np.maximum(disease[sl], ball * contrast * rng.uniform(300, 650))
        disease += (lung * (zz < 0.45) * contrast * (150.0 + 200.0 * burden)).astype(np.float32)   # ground glass / fibrosis
        node_scale = 0.3
    else:
        node_scale = 1.0
    # enlarged hilar nodes (both patterns; the hilar pattern has more)
    nodes = hilum & (rng.random(shape) < 0.6 + 0.4 * burden)
    grow = int(round(node_scale * (1 + 2 * burden)))
    if grow > 0:   # scipy dilates until nothing changes when iterations < 1
        nodes = ndimage.binary_dilation(nodes, iterations=grow)
    disease[nodes & lung] = np.maximum(disease[nodes & lung], contrast * (500.0 + 300.0 * burden * node_scale))
    vol[lung] += disease[lung]
    if lung_shift_hu or air_trapping:
        vol[lung] += lung_shift_hu - (120.0 * air_trapping * np.clip((zz - 0.5) / 0.3, 0, 1))[lung]
    return vol, {"body": body, "lung": lung, "hilum": hilum, "disease": (disease > 100 * contrast) & lung,
                 "landmarks": _landmark_voxels((zz, yy, xx))}


def _landmark_voxels(grid) -> np.ndarray:
    """Where :data:`COHORT_LANDMARKS` lie in one subject: the voxel whose normalised coordinate is nearest to each
    (L × 3 voxel indices, z y x)."""
    stacked = np.stack(grid, -1).reshape(-1, 3)
    shape = grid[0].shape
    return np.array([np.unravel_index(int(np.argmin(((stacked - np.asarray(c, np.float32)) ** 2).sum(1))), shape)
                     for c in COHORT_LANDMARKS.values()])


def scadding_stage(pattern, burden, rng, misread: float = 0.25) -> np.ndarray:
    """The Scadding stage (0–4) a chest radiograph would assign: hilar disease reads as stage 1 (2 with a
    higher burden; 0 when it is slight), upper-lung parenchymal disease as stage 2, 3 or 4 as its burden grows.
    A radiograph is a coarse view: with probability ``misread`` the reading is one stage off (either way)."""
    pattern, burden = np.asarray(pattern), np.asarray(burden, float)
    hilar = np.where(burden < 0.2, 0, np.where(burden < 0.5, 1, 2))
    upper = np.where(burden < 0.45, 2, np.where(burden < 0.7, 3, 4))
    stage = np.where(pattern == "upper", upper, hilar)
    off = rng.random(len(stage)) < misread
    return np.clip(stage + off * rng.choice([-1, 1], len(stage)), 0, 4).astype(int)


def simulate_cohort(n: int = 80, shape=(48, 48, 48), seed: int = 0, upper_fraction: float = 0.4,
                    lung_hu=None, progress: bool = True, return_disease: bool = False, return_landmarks: bool = False,
                    variant: str = "paper", nuisance: float | None = None):
    """A sarcoidosis-like cohort: volumes (N×z×y×x HU float32), lung masks, and a table (pandas) with
    pattern, burden, demographics (age, sex, race, Hispanic ethnicity, height in inches, BMI, scanner), the
    Scadding stage a chest radiograph would give (:func:`scadding_stage`) and outcomes (FEV1 and FVC in litres,
    DLCO % predicted, SOBQ and FAS scores, CRP mg/L). Outcomes depend on the parenchymal burden and
    on demographics (height, age, sex) with noise; CRP depends on nothing (a negative control).
    ``return_disease=True`` adds a fourth result: each subject's true disease mask (N×z×y×x bool, inside the lung),
    the ground truth a real cohort does not have. ``return_landmarks=True`` adds, last, where each subject's warp put
    :data:`COHORT_LANDMARKS` (N × L × 3 voxel indices): a registration that undoes the warps brings them together.
    ``variant="hard"`` (see :data:`COHORT_VARIANTS`) keeps every draw of the paper variant (patterns, burdens,
    demographics, noise) and adds the nuisances from a separate random stream; its table gains the columns
    ``lung_shift_hu`` and ``air_trapping``. ``variant="middle"`` adds the same nuisance draws at 0.8 of their strength
    (:data:`COHORT_NUISANCE`); ``nuisance`` (0–1), when given, sets that strength in place of the variant's (0 is the
    paper variant, 1 the hard one), for a sweep between them."""
    import pandas as pd
    from tqdm.auto import tqdm

    if n < 4:
        raise ValueError(f"n = {n}: a cohort needs at least 4 subjects.")
    if variant not in COHORT_VARIANTS:
        raise ValueError(f"variant = {variant!r}: choose one of {', '.join(COHORT_VARIANTS)}.")
    rng = np.random.default_rng([seed, 4004])
    lung_hu = real_lung_hu() if lung_hu is None else lung_hu
    pattern = np.where(rng.random(n) < upper_fraction, "upper", "hilar")
    burden = np.where(pattern == "upper", rng.beta(4, 2, n), rng.beta(2, 3, n))
    male = rng.random(n) < 0.47
    age = np.clip(rng.normal(53, 10, n), 25, 80)
    height = np.where(male, rng.normal(70, 3, n), rng.normal(64.5, 2.7, n))
    bmi = np.clip(rng.normal(30.5, 6.5, n), 17, 55)
    white = rng.random(n) < 0.72
    scanner = rng.choice(["LightSpeed VCT", "Definition AS+", "Definition", "iCT 128"], n, p=[.4, .3, .15, .15])
    parenchymal = np.where(pattern == "upper", burden, 0.15 * burden)
    height_cm = height * 2.54
    fev1 = 0.041 * height_cm - 0.024 * age - 2.7 + 0.35 * male - 1.0 * parenchymal + rng.normal(0, 0.35, n)
    fvc = 0.052 * height_cm - 0.022 * age - 3.6 + 0.5 * male - 1.1 * parenchymal + rng.normal(0, 0.45, n)
    dlco = 92 - 35 * parenchymal - 4 * burden + rng.normal(0, 11, n)
    sobq = np.clip(18 + 30 * parenchymal + 0.3 * (bmi - 30) + rng.normal(0, 12, n), 0, 120)
    fas = np.clip(22 + 6 * parenchymal + rng.normal(0, 6, n), 10, 50)
    crp = np.exp(rng.normal(1.0, 0.8, n))
    # drawn after everything above, so that adding these columns left the earlier ones unchanged
    hispanic = rng.random(n) < 0.047
    scadding = scadding_stage(pattern, burden, rng)
    strength = COHORT_NUISANCE[variant] if nuisance is None else float(nuisance)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"nuisance = {nuisance!r}: give the strength of the hard variant's nuisances between 0 (the "
                         "paper variant) and 1 (the hard one), or None to take the variant's.")
    hard = strength > 0
    if hard:
        hard_rng = np.random.default_rng([seed, 4005])   # its own stream: [seed, 4004, i] is subject i's
        air_trapping = strength * hard_rng.beta(2, 4, n)
        lung_shift = strength * (hard_rng.normal(0.0, 50.0, n) + np.array([HARD_SCANNER_SHIFT_HU[s] for s in scanner]))
        fev1, fvc = fev1 - 0.8 * air_trapping, fvc - 0.3 * air_trapping
        sobq = np.clip(sobq + 15 * air_trapping, 0, 120)
    volumes = np.empty((n,) + tuple(shape), np.float32)
    lungs = np.empty((n,) + tuple(shape), bool)
    disease = np.empty((n,) + tuple(shape), bool)
    landmarks = np.empty((n, len(COHORT_LANDMARKS), 3), int)
    for i in tqdm(range(n), desc="simulating CT cohort", disable=not progress, leave=False):
        sub_rng = np.random.default_rng([seed, 4004, i])
        volumes[i], masks = render_lung_volume(sub_rng, shape, pattern[i], burden[i], lung_hu, **(
            dict(warp_voxels=1.5 + strength, contrast=1.0 - 0.5 * strength, lung_shift_hu=lung_shift[i],
                 air_trapping=air_trapping[i]) if hard else {}))
        lungs[i], disease[i], landmarks[i] = masks["lung"], masks["disease"], masks["landmarks"]
    table = pd.DataFrame({
        "subject": [f"sub-{i + 1:03d}" for i in range(n)], "pattern": pattern, "burden": burden,
        "male": male.astype(int), "white": white.astype(int), "age": age, "height_in": height, "bmi": bmi,
        "scanner": scanner, "fev1": fev1, "fvc": fvc, "dlco": dlco, "sobq": sobq, "fas": fas, "crp": crp,
        "hispanic": hispanic.astype(int), "scadding": scadding})
    if hard:
        table["lung_shift_hu"], table["air_trapping"] = lung_shift, air_trapping
    return (volumes, lungs, table) + ((disease,) if return_disease else ()) + ((landmarks,) if return_landmarks else ())


def cluster_site_masks(labels, site, k: int, lung, size: int = 64) -> np.ndarray:
    """The true abnormality of each fitted cluster in the location scenario: the disc (at :data:`CT_FIXED`'s
    radius, inside the lung) at the site most of the cluster's slices have. ``labels`` are the fitted clusters,
    ``site`` the simulation's :attr:`CTSlices.site`; an empty cluster gets the disc of site 0. Returns k×size×size
    bool."""
    labels, site = np.asarray(labels), np.asarray(site)
    if labels.shape != site.shape:
        raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {site.shape[0] if site.ndim else 0} "
                         "slices; give the fitted cluster of every simulated slice.")
    masks = []
    for c in range(k):
        members = labels == c
        common = int(np.bincount(site[members], minlength=len(CT_SITES)).argmax()) if members.any() else 0
        masks.append(disc((size, size), CT_SITES[common], CT_FIXED["radius"]) & lung)
    return np.stack(masks)
