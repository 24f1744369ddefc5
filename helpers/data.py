"""Data sets of the collection: simulated histology (cached, validated), tiling, torch datasets, and loaders
for the papers' own formats (PanNuke folds, DiagSet-like patch folders, DigestPath pairs, whole-slide images).

Every simulated data set has a ``default`` and a ``smoke`` preset, so that all notebooks that call
``ensure_*(DATA_DIR, smoke=SMOKE, seed=SEED)`` get the very same arrays, built once and cached under
``DATA_DIR/cache``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import cache, synth
from .report import ensure_writable_dir

N_JOBS = max(1, min(4, os.cpu_count() or 1))

PRESETS = {
    # paper 000: 16 positive + 8 negative training slides; test slides for slide-level accuracy.
    # Paper scale: 512 px tiles, stride 256, centre 256 at 0.344 µm/px; here 128/64/64 at 1 µm/px.
    "tile_slides": {
        "default": dict(n_train_pos=16, n_train_neg=8, n_test_pos=6, n_test_neg=6, size=1536, um_per_px=1.0),
        "smoke": dict(n_train_pos=3, n_train_neg=2, n_test_pos=2, n_test_neg=2, size=640, um_per_px=1.0),
    },
    # paper 001: DiagSet patches, 7 balanced classes, train/validation/test per class
    "grading": {
        "default": dict(train=280, val=50, test=70, size=96, um_per_px=1.0, overlap=0.35),
        "smoke": dict(train=16, val=6, test=8, size=64, um_per_px=1.0, overlap=0.35),
    },
    # paper 001 §3.6: PanNuke-like nuclei segmentation patches (neoplastic / non-neoplastic)
    "segmentation": {
        "default": dict(n=600, size=96, um_per_px=1.0),
        "smoke": dict(n=40, size=64, um_per_px=1.0),
    },
    # paper 003: patches from 16 samples with CC, MD, FA targets; the training samples (3 and 4, 0-based 2 and 3)
    # get extra patches, as in the thesis where they held thousands of patches each
    "regression": {
        "default": dict(n_samples=16, per_sample=120, size=96, um_per_px=1.0, extra_samples=(2, 3),
                        extra_per_sample=480),
        "smoke": dict(n_samples=16, per_sample=12, size=64, um_per_px=1.0, extra_samples=(2, 3),
                      extra_per_sample=12),
    },
}
_TAGS = {"tile_slides": 1, "grading": 2, "segmentation": 3, "regression": 4}


def choose_preset(table: dict, name: str, smoke: bool, overrides: dict, what: str = "data set") -> dict:
    """``table[name]["smoke" | "default"]`` with ``overrides`` applied; unknown names and options are refused."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}.")
    cfg = dict(table[name]["smoke" if smoke else "default"])
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {what} {name!r}; valid: {sorted(cfg)}.")
    cfg.update(overrides)
    return cfg


def preset(name: str, smoke: bool = False, **overrides) -> dict:
    """The configuration of a simulated data set (``default`` or ``smoke``), with optional overrides."""
    return choose_preset(PRESETS, name, smoke, overrides) | {"simulator_version": synth.SIMULATOR_VERSION,
                                                             "simulator_code": cache.source_fingerprint(synth)}


def check_data_dir(data_dir) -> Path:
    """DATA_DIR must exist and be writable (caches go to DATA_DIR/cache); returns the cache root."""
    root = ensure_writable_dir(data_dir, what="DATA_DIR", create=False)
    cache_root = root / "cache"
    cache_root.mkdir(exist_ok=True)
    return cache_root


def _seed(seed: int, name: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _TAGS[name], int(index)])


def _parallel(fn, items, desc):
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    items = list(items)
    if N_JOBS == 1 or len(items) < 8:
        return [fn(*it) for it in tqdm(items, desc=desc, leave=False)]
    return Parallel(n_jobs=N_JOBS, batch_size="auto")(delayed(fn)(*it) for it in tqdm(items, desc=desc, leave=False))


# ------------------------------------------------------------------------------------------ mask bit packing
def pack_masks(masks: dict) -> np.ndarray:
    """Pack the boolean masks named in :data:`synth.MASK_NAMES` into one uint8 bit field."""
    packed = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for bit, name in enumerate(synth.MASK_NAMES):
        packed |= (np.asarray(masks[name], bool).astype(np.uint8) << bit)
    return packed


def unpack_mask(packed: np.ndarray, name: str) -> np.ndarray:
    """One boolean mask (by name) from a packed bit field."""
    if name not in synth.MASK_NAMES:
        raise ValueError(f"unknown mask {name!r}; masks are {', '.join(synth.MASK_NAMES)}.")
    return (np.asarray(packed) >> synth.MASK_NAMES.index(name)) & 1 == 1


# ---------------------------------------------------------------------------------------------- tile slides
def _slide_job(seed_seq, size, um_per_px, positive, slide_id):
    slide = synth.render_slide(seed_seq, size=size, positive=positive, um_per_px=um_per_px, slide_id=slide_id)
    sc = slide.scene
    return (sc.rgb, sc.nuclei_instances, sc.nuclei_types, pack_masks(sc.masks),
            [a.tolist() for a in slide.annotations], slide.severity, slide.label)


def ensure_tile_slides(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Simulated whole slides for paper 000 (and 002): RGB, nuclei instances/types, packed masks, tumour
    polygons, labels and the train/test split. Returns (arrays, meta) from the validated cache."""
    cfg = preset("tile_slides", smoke, **overrides) | {"seed": int(seed)}
    jobs, split, ids = [], [], []
    for part in ("train", "test"):
        for positive in (True, False):
            n = cfg[f"n_{part}_{'pos' if positive else 'neg'}"]
            for _ in range(n):
                index = len(jobs)
                sid = f"{part}_{'pos' if positive else 'neg'}_{index:03d}"
                jobs.append((_seed(seed, "tile_slides", index), cfg["size"], cfg["um_per_px"], positive, sid))
                split.append(part)
                ids.append(sid)
    if not jobs:
        raise ValueError("tile_slides: every slide count is 0; ask for at least one slide.")

    def build():
        out = _parallel(_slide_job, jobs, "rendering slides")
        arrays = {"rgb": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                  "nuclei_types": np.stack([o[2] for o in out]), "masks": np.stack([o[3] for o in out]),
                  "label": np.array([o[6] for o in out], np.int64),
                  "is_test": np.array([s == "test" for s in split])}
        meta = {"slide_ids": ids, "annotations": [o[4] for o in out], "tumour_grades": [o[5] for o in out],
                "split": split}
        return arrays, meta

    folder = check_data_dir(data_dir) / f"tile_slides-{cache.config_key(cfg)}"
    return cache.ensure_arrays(folder, cfg, build)


# ------------------------------------------------------------------------------------------ grading patches
def _grade_job(seed_seq, grade, size, um_per_px, overlap):
    sc = synth.render_grade_patch(seed_seq, grade, size=size, um_per_px=um_per_px, overlap=overlap)
    return sc.rgb, sc.nuclei_instances, sc.nuclei_types, pack_masks(sc.masks)


def ensure_grading_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """DiagSet-like 7-class patches (A, N, R1–R5), balanced per split as paper 001 §3.1.

    Arrays: images (N×S×S×3 uint8), label (index into synth.GRADES), split (0 train, 1 val, 2 test), nuclei
    instances and types, packed masks."""
    cfg = preset("grading", smoke, **overrides) | {"seed": int(seed)}
    counts = [("train", cfg["train"]), ("val", cfg["val"]), ("test", cfg["test"])]
    jobs, labels, splits = [], [], []
    for si, (_, n) in enumerate(counts):
        for gi in range(len(synth.GRADES)):
            for _ in range(n):
                jobs.append((_seed(seed, "grading", len(jobs)), gi, cfg["size"], cfg["um_per_px"], cfg["overlap"]))
                labels.append(gi)
                splits.append(si)

    def build():
        out = _parallel(_grade_job, jobs, "rendering grading patches")
        arrays = {"images": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                  "nuclei_types": np.stack([o[2] for o in out]), "masks": np.stack([o[3] for o in out]),
                  "label": np.array(labels, np.int64), "split": np.array(splits, np.int64)}
        return arrays, {"classes": list(synth.GRADES), "splits": ["train", "val", "test"]}

    folder = check_data_dir(data_dir) / f"grading-{cache.config_key(cfg)}"
    return cache.ensure_arrays(folder, cfg, build)


# ------------------------------------------------------------------------------------- segmentation patches
def _seg_job(seed_seq, size, um_per_px):
    rng = np.random.default_rng(seed_seq)
    grade = int(rng.integers(1, len(synth.GRADES)))  # N or R1–R5: benign and tumour nuclei in varying mixes
    sc = synth.render_grade_patch(rng.integers(2**31), grade, size=size, um_per_px=um_per_px)
    return sc.rgb, sc.nuclei_instances, sc.nuclei_types


def ensure_segmentation_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """PanNuke-like nuclei segmentation patches: images, nuclei instances, nuclei types (1 neoplastic,
    2 non-neoplastic). :func:`to_pannuke_masks` turns them into PanNuke's 6-channel layout."""
    cfg = preset("segmentation", smoke, **overrides) | {"seed": int(seed)}
    jobs = [(_seed(seed, "segmentation", i), cfg["size"], cfg["um_per_px"]) for i in range(cfg["n"])]

    def build():
        out = _parallel(_seg_job, jobs, "rendering segmentation patches")
        return ({"images": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                 "nuclei_types": np.stack([o[2] for o in out])}, {"types": synth.NUCLEUS_TYPES})

    folder = check_data_dir(data_dir) / f"segmentation-{cache.config_key(cfg)}"
    return cache.ensure_arrays(folder, cfg, build)


# --------------------------------------------------------------------------------------- regression patches
def _reg_job(seed_seq, params, sample, size, um_per_px):
    sc, t = synth.render_regression_patch(seed_seq, params, sample, size=size, um_per_px=um_per_px)
    return (sc.rgb, sc.nuclei_instances, sc.maps["cellularity"].astype(np.float16),
            sc.maps["coherence"].astype(np.float16), t)


def ensure_regression_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Paper 003's data in simulation: patches from ``n_samples`` tumours with targets CC (exact nuclei
    count), MD and FA, plus the ground-truth nuclei instances and cellularity / coherence maps. Samples listed in
    ``extra_samples`` (the training samples) get ``extra_per_sample`` more patches."""
    cfg = preset("regression", smoke, **overrides) | {"seed": int(seed)}
    params = synth.regression_sample_params(cfg["n_samples"], seed)
    jobs, samples = [], []
    for s in range(cfg["n_samples"]):
        extra = cfg["extra_per_sample"] if s in cfg["extra_samples"] else 0
        for _ in range(cfg["per_sample"] + extra):
            jobs.append((_seed(seed, "regression", len(jobs)), params, s, cfg["size"], cfg["um_per_px"]))
            samples.append(s)

    def build():
        out = _parallel(_reg_job, jobs, "rendering regression patches")
        targets = {k: np.array([o[4][k] for o in out]) for k in out[0][4]}
        arrays = {"images": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                  "cellularity": np.stack([o[2] for o in out]), "coherence_map": np.stack([o[3] for o in out]),
                  "sample": np.array(samples, np.int64), "cc": targets["cc"].astype(np.int64),
                  "md": targets["md"], "fa": targets["fa"], "nuclear_fraction": targets["nuclear_fraction"],
                  "coherence": targets["coherence"]}
        return arrays, {"sample_params": {k: v.tolist() for k, v in params.items()}, "md_unit": "um^2/ms"}

    folder = check_data_dir(data_dir) / f"regression-{cache.config_key(cfg)}"
    return cache.ensure_arrays(folder, cfg, build)


# ---------------------------------------------------------------------------------------------------- tiling
def _integral(mask):
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    ii[1:, 1:] = np.cumsum(np.cumsum(mask, 0, dtype=np.int64), 1)
    return ii


def _box_sums(ii, ys, xs, size):
    return ii[ys + size, xs + size] - ii[ys, xs + size] - ii[ys + size, xs] + ii[ys, xs]


def tile_slide(tissue, tile: int, stride: int, min_tissue: float = 0.5, label_mask=None, centre: int | None = None,
               centre_min_overlap: float = 0.0) -> dict:
    """Tile a slide as paper 000 does: a regular grid of ``tile``-px tiles every ``stride`` px, kept when at
    least ``min_tissue`` of the tile is tissue; a tile is labelled positive when its central ``centre``-px
    area overlaps ``label_mask`` by more than ``centre_min_overlap`` (0 = any overlap, the paper's rule).

    Returns a dict of arrays: ``coords`` (n×2 top-left row, col), ``tissue_fraction``, ``label`` (if a label
    mask is given) and ``centre_fraction``.
    """
    tissue = np.asarray(tissue, bool)
    if tissue.ndim != 2:
        raise ValueError(f"tissue mask must be 2-D (H×W), got shape {tissue.shape}.")
    h, w = tissue.shape
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be positive pixel counts.")
    if tile > h or tile > w:
        raise ValueError(f"tile size {tile} px is larger than the slide ({h}×{w} px); use a smaller TILE_SIZE "
                         f"or a larger slide.")
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"min_tissue={min_tissue} must be a fraction between 0 and 1.")
    ys = np.arange(0, h - tile + 1, stride)
    xs = np.arange(0, w - tile + 1, stride)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    gy, gx = gy.ravel(), gx.ravel()
    frac = _box_sums(_integral(tissue), gy, gx, tile) / float(tile * tile)
    keep = frac >= min_tissue
    if not keep.any():
        raise ValueError(f"no tile has at least {min_tissue:.0%} tissue (best: {frac.max():.0%}); lower the tissue "
                         f"threshold MIN_TISSUE or check the tissue mask.")
    out = {"coords": np.column_stack([gy[keep], gx[keep]]), "tissue_fraction": frac[keep]}
    if label_mask is not None:
        label_mask = np.asarray(label_mask, bool)
        if label_mask.shape != tissue.shape:
            raise ValueError(f"label mask shape {label_mask.shape} differs from the tissue mask {tissue.shape}.")
        c = tile if centre is None else int(centre)
        if not 0 < c <= tile:
            raise ValueError(f"centre area {c} px must be between 1 and the tile size {tile}.")
        off = (tile - c) // 2
        cf = _box_sums(_integral(label_mask), gy[keep] + off, gx[keep] + off, c) / float(c * c)
        out["centre_fraction"] = cf
        out["label"] = (cf > centre_min_overlap).astype(np.int64)
    return out


def tissue_mask_from_rgb(rgb, threshold: float | None = None, min_size: int = 64, closing: int = 2):
    """Tissue detection on an RGB image (real slides have no tissue mask): Otsu on saturation-weighted
    darkness, then morphological clean-up. Returns an H×W bool mask."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects
    from scipy import ndimage

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"expected an H×W×3 RGB image, got shape {rgb.shape}.")
    hsv = rgb2hsv(rgb[..., :3])
    score = hsv[..., 1] * 0.7 + (1 - hsv[..., 2]) * 0.3
    t = threshold_otsu(score) if threshold is None else threshold
    mask = ndimage.binary_closing(score > t, iterations=closing)
    mask = remove_small_objects(mask, max_size=min_size)
    # lumina and fat are white like glass but enclosed by tissue: they belong to the section
    return ndimage.binary_fill_holes(remove_small_holes(mask, max_size=min_size * 4))


# ----------------------------------------------------------------------------------------- torch datasets
def to_tensor_images(images):
    """N×H×W×3 (or H×W×3) → float32 torch tensor N×3×H×W in [0, 1].

    The value range is read from the dtype, never guessed from the values: uint8 is 0–255 (divided by 255),
    floating point must already lie in [0, 1] (anything else is refused with the fix)."""
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected images of shape N×H×W×3 (channels last), got {arr.shape}.")
    if arr.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 1.0
        if arr.size and not np.isfinite(arr).all():
            raise ValueError("images contain NaN or inf; clean them first.")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"float images must lie in [0, 1], got values from {arr.min():.3g} to {arr.max():.3g}; "
                             "for 0–255 values pass uint8 (e.g. images.astype(np.uint8)) or divide by 255.")
    else:
        raise TypeError(f"images of dtype {arr.dtype}: pass uint8 (0–255) or float (0–1) RGB images.")
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:      # a read-only memory map of a cache: torch wants its own (small uint8) copy
        arr = arr.copy()
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return x.div_(scale) if scale != 1.0 else x


class ArrayDataset:
    """A torch-style dataset over N×H×W×3 uint8 images and matching targets (any array with N rows)."""

    def __init__(self, images, targets, indices=None, transform=None):
        self.images, self.targets = images, targets
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets; they must match one to one.")
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        import torch

        j = int(self.indices[i])
        x = torch.from_numpy(np.array(self.images[j]))  # a copy: cached arrays are read-only memory maps
        x = x.permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.as_tensor(np.asarray(self.targets[j]))


class TileDataset:
    """Tiles cut on the fly from slide arrays (N_slides×H×W×3), so tiles never need their own copy."""

    def __init__(self, slides_rgb, slide_index, coords, labels, tile: int, transform=None):
        self.rgb, self.tile, self.transform = slides_rgb, int(tile), transform
        self.slide_index = np.asarray(slide_index)
        self.coords = np.asarray(coords)
        self.labels = np.asarray(labels)
        if not (len(self.slide_index) == len(self.coords) == len(self.labels)):
            raise ValueError("slide_index, coords and labels must have the same length.")

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, i):
        import torch

        s, (y, x) = int(self.slide_index[i]), self.coords[i]
        patch = np.array(self.rgb[s, y: y + self.tile, x: x + self.tile])  # copy of a read-only memory map
        t = torch.from_numpy(patch).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            t = self.transform(t)
        return t, torch.as_tensor(self.labels[i])


def tile_dataset_index(slides, tile: int, stride: int, centre: int, min_tissue: float = 0.5):
    """Tile every slide of an :func:`ensure_tile_slides` result; returns a dict of concatenated arrays
    (slide, coords, label, tissue_fraction, is_test)."""
    arrays = slides
    parts = []
    for s in range(len(arrays["rgb"])):
        masks = arrays["masks"][s]
        t = tile_slide(unpack_mask(masks, "tissue"), tile, stride, min_tissue, unpack_mask(masks, "tumour"), centre)
        n = len(t["coords"])
        parts.append({"slide": np.full(n, s), "coords": t["coords"], "label": t["label"],
                      "tissue_fraction": t["tissue_fraction"], "is_test": np.full(n, bool(arrays["is_test"][s]))})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------------------- the papers' real formats
PANNUKE_CHANNELS = ("neoplastic", "inflammatory", "connective", "dead", "epithelial", "background")


def to_pannuke_masks(instances, types):
    """Our instance + type maps → PanNuke's N×H×W×6 masks (instance ids per type channel, channel 5 =
    background). Neoplastic nuclei go to channel 0, non-neoplastic ones to channel 4 (epithelial)."""
    instances, types = np.asarray(instances), np.asarray(types)
    out = np.zeros(instances.shape + (6,), np.float32)
    out[..., 0] = np.where(types == 1, instances, 0)
    out[..., 4] = np.where(types == 2, instances, 0)
    out[..., 5] = (instances == 0).astype(np.float32)
    return out


def pannuke_binary_masks(masks):
    """Paper 001's two targets from PanNuke masks: (neoplastic, non-neoplastic), each N×H×W bool."""
    masks = np.asarray(masks)
    return masks[..., 0] > 0, (masks[..., 1:5] > 0).any(axis=-1)


def write_pannuke_fold(folder, images, masks, types):
    """Write a fold in PanNuke's layout (images.npy, masks.npy, types.npy); refuses to overwrite."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images.npy", "masks.npy", "types.npy"):
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name} exists; choose an empty folder (nothing is overwritten).")
    np.save(folder / "images.npy", np.asarray(images))
    np.save(folder / "masks.npy", np.asarray(masks))
    np.save(folder / "types.npy", np.asarray(types))


def load_pannuke_fold(folder, mmap: bool = True):
    """Load a PanNuke fold: images.npy (N×256×256×3), masks.npy (N×256×256×6), types.npy (N tissue names).

    Shapes and dtypes are checked, so a swapped or truncated file is reported by name instead of failing
    later inside training."""
    folder = Path(folder)
    paths = {n: folder / f"{n}.npy" for n in ("images", "masks", "types")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"PanNuke fold incomplete, missing: {', '.join(missing)}. A fold folder holds "
                                f"images.npy, masks.npy and types.npy (as in the PanNuke release).")
    mode = "r" if mmap else None

    def load(name, mmap_mode):
        try:
            return np.load(paths[name], mmap_mode=mmap_mode, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{paths[name]} cannot be read as a NumPy array ({err}); the file is truncated or not "
                             "a .npy file (PanNuke's release stores images.npy, masks.npy and types.npy).") from None

    images, masks, types = load("images", mode), load("masks", mode), load("types", None)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{paths['images']}: expected N×H×W×3 RGB images, got shape {images.shape}.")
    if masks.ndim != 4 or masks.shape[-1] != 6:
        raise ValueError(f"{paths['masks']}: expected N×H×W×6 masks (5 nucleus types + background), "
                         f"got shape {masks.shape}.")
    if images.shape[:3] != masks.shape[:3]:
        raise ValueError(f"images {images.shape[:3]} and masks {masks.shape[:3]} differ in N×H×W.")
    if len(types) != len(images):
        raise ValueError(f"types.npy has {len(types)} entries for {len(images)} images.")
    for name, arr in (("images", images), ("masks", masks)):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{paths[name]}: dtype {arr.dtype} is not numeric; PanNuke stores numbers.")
    if np.issubdtype(images.dtype, np.floating) and float(np.max(images[: min(8, len(images))])) <= 1.0:
        raise ValueError(f"{paths['images']}: values look like 0–1 floats; PanNuke images are 0–255.")
    return {"images": images, "masks": masks, "types": types}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_diagset_folder(root):
    """Index a DiagSet-like folder: one sub-folder per class named A, N, R1 … R5, image files inside.

    Returns (paths, labels) with labels indexing :data:`synth.GRADES`. Unknown class folders are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; point it at a folder with sub-folders A, N, R1 … R5.")
    paths, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        gi = synth.grade_index(sub.name)
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [gi] * len(files)
    if not paths:
        raise FileNotFoundError(f"no images under {root}; expected {root}/<class>/<image>.png with classes "
                                f"{', '.join(synth.GRADES)}.")
    return paths, np.array(labels, np.int64)


def load_digestpath_pairs(folder, mask_suffix: str = "_mask"):
    """Pair DigestPath images with their masks (``x.jpg`` with ``x_mask.jpg``); returns a list of pairs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of DigestPath image/mask pairs.")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and
                    not p.stem.endswith(mask_suffix))
    pairs, unpaired = [], []
    for img in images:
        cands = [img.with_name(img.stem + mask_suffix + s) for s in (img.suffix, ".png", ".jpg")]
        mask = next((c for c in cands if c.exists()), None)
        (pairs.append((img, mask)) if mask else unpaired.append(img.name))
    if unpaired:
        raise FileNotFoundError(f"{len(unpaired)} image(s) without a '{mask_suffix}' mask, e.g. {unpaired[0]}.")
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs in {folder}.")
    return pairs


def read_image(path) -> np.ndarray:
    """Read an image file as uint8 RGB (H×W×3) (TIFF through tifffile, others through imageio)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {path} not found.")
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".svs"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            arr = iio.imread(path)
    except Exception as err:  # noqa: BLE001 - each reader raises its own types for a broken file
        raise ValueError(f"{path} cannot be read as an image ({type(err).__name__}: {err}); the file is truncated "
                         "or not an image.") from None
    return np.asarray(arr)


def load_digestpath_pair(image_path, mask_path):
    img = read_image(image_path)[..., :3]
    mask = read_image(mask_path)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if mask.shape != img.shape[:2]:
        raise ValueError(f"{mask_path}: mask {mask.shape} does not match image {img.shape[:2]}.")
    return img, mask > 127


def wsi_info(path) -> dict:
    """Pyramid levels of a whole-slide image (SVS / pyramidal TIFF) read with tifffile."""
    import tifffile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide {path} not found.")
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        levels = [tuple(lv.shape) for lv in series.levels]
        mpp = None
        desc = tf.pages[0].description or ""
        if "MPP" in desc:
            try:
                mpp = float(desc.split("MPP = ")[1].split("|")[0])
            except (IndexError, ValueError):
                mpp = None
    return {"levels": levels, "mpp": mpp}


def read_wsi(path, level: int = 0, region=None, backend: str = "tifffile") -> np.ndarray:
    """Read a whole-slide image level (optionally a region ``(row, col, height, width)``) as RGB uint8.

    ``backend="openslide"`` uses openslide-python (``pip install openslide-python openslide-bin``) for the
    formats tifffile cannot read (MRXS, NDPI variants)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide {path} not found; point REAL_SLIDE_PATH (the notebooks' parameter) or the "
                                "path you pass at an existing .svs/.tif file.")
    if backend == "openslide":
        import openslide  # optional dependency

        with openslide.OpenSlide(str(path)) as osl:
            if level >= osl.level_count:
                raise ValueError(f"{path} has {osl.level_count} levels; level {level} does not exist.")
            w, h = osl.level_dimensions[level]
            r, c, hh, ww = region if region is not None else (0, 0, h, w)
            ds = osl.level_downsamples[level]
            img = osl.read_region((int(c * ds), int(r * ds)), level, (ww, hh))
            return np.asarray(img)[..., :3]
    if backend != "tifffile":
        raise ValueError(f"unknown backend {backend!r}; use 'tifffile' or 'openslide'.")
    import tifffile

    with tifffile.TiffFile(path) as tf:
        levels = tf.series[0].levels
        if not 0 <= level < len(levels):
            raise ValueError(f"{path} has {len(levels)} pyramid level(s); level {level} does not exist.")
        arr = levels[level].asarray()
    arr = np.asarray(arr)
    if arr.ndim == 2:                        # a greyscale slide: three equal channels, not rows taken as pixels
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise ValueError(f"{path} level {level} has shape {arr.shape}; expected an RGB(A) image H×W×3 or greyscale.")
    arr = arr[..., :3]
    if region is not None:
        r, c, hh, ww = (int(v) for v in region)
        height, width = arr.shape[:2]
        if hh < 1 or ww < 1 or r < 0 or c < 0 or r + hh > height or c + ww > width:
            raise ValueError(f"region (row={r}, col={c}, height={hh}, width={ww}) is not inside {path.name}'s level "
                             f"{level} of {height}×{width} px; give a region within the slide.")
        arr = arr[r: r + hh, c: c + ww]
    return arr


def stain_statistics(images, tissue_masks=None) -> dict:
    """Median and 95th percentile of hematoxylin and eosin optical density (``skimage.color.rgb2hed``) over
    tissue pixels of a stack of RGB images: a quantitative check that simulated tiles stain like real ones."""
    from skimage.color import rgb2hed

    hs, es = [], []
    for i, img in enumerate(images):
        hed = rgb2hed(np.asarray(img)[..., :3])
        sel = np.ones(hed.shape[:2], bool) if tissue_masks is None else np.asarray(tissue_masks[i], bool)
        hs.append(hed[..., 0][sel])
        es.append(hed[..., 1][sel])
    h, e = np.concatenate(hs), np.concatenate(es)
    return {"h_median": float(np.median(h)), "h_p95": float(np.percentile(h, 95)),
            "e_median": float(np.median(e)), "e_p95": float(np.percentile(e, 95))}


def random_tiles(image, tissue, tile: int, n: int, seed: int = 0, min_tissue: float = 0.8):
    """``n`` random tissue tiles (``tile`` px) from a large image, for galleries."""
    t = tile_slide(tissue, tile, max(1, tile // 2), min_tissue)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(t["coords"]), size=min(n, len(t["coords"])), replace=False)
    return [np.asarray(image[y: y + tile, x: x + tile]) for y, x in t["coords"][pick]]
