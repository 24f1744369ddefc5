"""The simulated data sets of the notebooks, rendered in parallel, once, and cached under ``DATA_DIR/cache``.

Every data set has a ``default`` and a ``smoke`` size (:data:`helpers.presets.DATA`), so that all notebooks that call
``ensure_*(DATA_DIR, smoke=SMOKE, seed=SEED)`` get the very same arrays. A cache is keyed by its configuration,
the simulator's version and a fingerprint of the simulator's code, so images of other code are never reused.
"""
from __future__ import annotations

import os

import numpy as np

from .. import cache, presets
from ..data.formats import GRADES
from ..data.tissue import tile_slide
from . import histology

N_JOBS = max(1, min(4, os.cpu_count() or 1))

_TAGS = {"tile_slides": 1, "grading": 2, "segmentation": 3, "regression": 4, "sic_slides": 5}


def dataset_config(name: str, smoke: bool = False, **overrides) -> dict:
    """The configuration of a simulated data set (``default`` or ``smoke``), with optional overrides."""
    return presets.data(name, smoke, **overrides) | {"simulator_version": histology.SIMULATOR_VERSION,
                                                             "simulator_code": cache.source_fingerprint(histology)}


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
# ------------------------------------------------------------------------------------------ mask bit packing
def pack_masks(masks: dict) -> np.ndarray:
    """Pack the boolean masks named in :data:`histology.MASK_NAMES` into one uint8 bit field."""
    packed = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for bit, name in enumerate(histology.MASK_NAMES):
        packed |= (np.asarray(masks[name], bool).astype(np.uint8) << bit)
    return packed


def unpack_mask(packed: np.ndarray, name: str) -> np.ndarray:
    """One boolean mask (by name) from a packed bit field."""
    if name not in histology.MASK_NAMES:
        raise ValueError(f"unknown mask {name!r}; masks are {', '.join(histology.MASK_NAMES)}.")
    return (np.asarray(packed) >> histology.MASK_NAMES.index(name)) & 1 == 1


# ---------------------------------------------------------------------------------------------- tile slides
def _slide_job(seed_seq, size, um_per_px, positive, slide_id):
    slide = histology.render_slide(seed_seq, size=size, positive=positive, um_per_px=um_per_px, slide_id=slide_id)
    sc = slide.scene
    return (sc.rgb, sc.nuclei_instances, sc.nuclei_types, pack_masks(sc.masks),
            [a.tolist() for a in slide.annotations], slide.severity, slide.label)


def ensure_tile_slides(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Simulated whole slides for paper 000 (and 002): RGB, nuclei instances/types, packed masks, tumour
    polygons, labels and the train/test split. Returns (arrays, meta) from the validated cache."""
    cfg = dataset_config("tile_slides", smoke, **overrides) | {"seed": int(seed)}
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

    return cache.ensure_arrays(cache.folder_for(data_dir, "tile_slides", cfg), cfg, build)


def ensure_sic_slides(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Positive slides for paper 002's click protocol (notebook 04): RGB, packed masks, tumour polygons, from a seed
    stream of their own (no slide of :func:`ensure_tile_slides`, so the tile classifier never saw them). Returns
    (arrays, meta) from the validated cache."""
    cfg = dataset_config("sic_slides", smoke, **overrides) | {"seed": int(seed)}
    if cfg["n"] < 1:
        raise ValueError(f"sic_slides: n={cfg['n']}; ask for at least one slide.")
    ids = [f"sic_{i:03d}" for i in range(cfg["n"])]
    jobs = [(_seed(seed, "sic_slides", i), cfg["size"], cfg["um_per_px"], True, sid) for i, sid in enumerate(ids)]

    def build():
        out = _parallel(_slide_job, jobs, "rendering slides")
        arrays = {"rgb": np.stack([o[0] for o in out]), "masks": np.stack([o[3] for o in out]),
                  "label": np.array([o[6] for o in out], np.int64)}
        return arrays, {"slide_ids": ids, "annotations": [o[4] for o in out], "tumour_grades": [o[5] for o in out]}

    return cache.ensure_arrays(cache.folder_for(data_dir, "sic_slides", cfg), cfg, build)


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


# ------------------------------------------------------------------------------------------ grading patches
def _grade_job(seed_seq, grade, size, um_per_px, overlap):
    sc = histology.render_grade_patch(seed_seq, grade, size=size, um_per_px=um_per_px, overlap=overlap)
    return sc.rgb, sc.nuclei_instances, sc.nuclei_types, pack_masks(sc.masks)


def ensure_grading_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """DiagSet-like 7-class patches (A, N, R1–R5), balanced per split as paper 001 §3.1.

    Arrays: images (N×S×S×3 uint8), label (index into GRADES), split (0 train, 1 val, 2 test), nuclei
    instances and types, packed masks."""
    cfg = dataset_config("grading", smoke, **overrides) | {"seed": int(seed)}
    counts = [("train", cfg["train"]), ("val", cfg["val"]), ("test", cfg["test"])]
    jobs, labels, splits = [], [], []
    for si, (_, n) in enumerate(counts):
        for gi in range(len(GRADES)):
            for _ in range(n):
                jobs.append((_seed(seed, "grading", len(jobs)), gi, cfg["size"], cfg["um_per_px"], cfg["overlap"]))
                labels.append(gi)
                splits.append(si)

    def build():
        out = _parallel(_grade_job, jobs, "rendering grading patches")
        arrays = {"images": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                  "nuclei_types": np.stack([o[2] for o in out]), "masks": np.stack([o[3] for o in out]),
                  "label": np.array(labels, np.int64), "split": np.array(splits, np.int64)}
        return arrays, {"classes": list(GRADES), "splits": ["train", "val", "test"]}

    return cache.ensure_arrays(cache.folder_for(data_dir, "grading", cfg), cfg, build)


# ------------------------------------------------------------------------------------- segmentation patches
def _seg_job(seed_seq, size, um_per_px):
    rng = np.random.default_rng(seed_seq)
    grade = int(rng.integers(1, len(GRADES)))  # N or R1–R5: benign and tumour nuclei in varying mixes
    sc = histology.render_grade_patch(rng.integers(2**31), grade, size=size, um_per_px=um_per_px)
    return sc.rgb, sc.nuclei_instances, sc.nuclei_types


def ensure_segmentation_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """PanNuke-like nuclei segmentation patches: images, nuclei instances, nuclei types (1 neoplastic,
    2 non-neoplastic). :func:`to_pannuke_masks` turns them into PanNuke's 6-channel layout."""
    cfg = dataset_config("segmentation", smoke, **overrides) | {"seed": int(seed)}
    jobs = [(_seed(seed, "segmentation", i), cfg["size"], cfg["um_per_px"]) for i in range(cfg["n"])]

    def build():
        out = _parallel(_seg_job, jobs, "rendering segmentation patches")
        return ({"images": np.stack([o[0] for o in out]), "nuclei_instances": np.stack([o[1] for o in out]),
                 "nuclei_types": np.stack([o[2] for o in out])}, {"types": histology.NUCLEUS_TYPES})

    return cache.ensure_arrays(cache.folder_for(data_dir, "segmentation", cfg), cfg, build)


# --------------------------------------------------------------------------------------- regression patches
def _reg_job(seed_seq, params, sample, size, um_per_px):
    sc, t = histology.render_regression_patch(seed_seq, params, sample, size=size, um_per_px=um_per_px)
    return (sc.rgb, sc.nuclei_instances, sc.maps["cellularity"].astype(np.float16),
            sc.maps["coherence"].astype(np.float16), t)


def ensure_regression_patches(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Paper 003's data in simulation: patches from ``n_samples`` tumours with targets CC (exact nuclei
    count), MD and FA, plus the ground-truth nuclei instances and cellularity / coherence maps. Samples listed in
    ``extra_samples`` (the training samples) get ``extra_per_sample`` more patches."""
    cfg = dataset_config("regression", smoke, **overrides) | {"seed": int(seed)}
    params = histology.regression_sample_params(cfg["n_samples"], seed)
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

    return cache.ensure_arrays(cache.folder_for(data_dir, "regression", cfg), cfg, build)
