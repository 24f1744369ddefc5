"""Scores of attribution maps: against ground truth (paper 001's six metrics, Quantus' localisation metrics,
relevance mass and correlation with a ground-truth map), against the model (deletion / insertion), and against
a randomised model (the parameter-randomisation sanity check)."""
from __future__ import annotations

import numpy as np
import torch

from .arrays import numeric
from .pixels import unit_float


def _check_pair(maps, truth, what: str):
    maps, truth = np.asarray(maps, np.float64), np.asarray(truth)
    if maps.ndim != 3:
        hint = " (one map: pass maps[None] and masks[None])" if maps.ndim == 2 else ""
        raise ValueError(f"attribution maps of shape {maps.shape}: expected a batch N × H × W{hint}; every score is "
                         "computed per map, and a single 2-D map would be read as one map per row.")
    if maps.shape != truth.shape:
        raise ValueError(f"attribution maps {maps.shape} and {what} {truth.shape} differ in shape; resize one to "
                         f"the other (maps are N × H × W at input resolution).")
    if not np.isfinite(maps).all():
        raise ValueError("maps: the attribution maps hold NaN or inf values; fix the explanation before scoring it.")
    if truth.dtype.kind in "fc" and not np.isfinite(truth).all():
        raise ValueError(f"{what} hold NaN or inf values; a score against them would be NaN or silently wrong "
                         "(e.g. np.nan_to_num the mask, or drop those images).")
    return maps, truth


def relevance_mass(maps, masks) -> np.ndarray:
    """Relevance mass accuracy (Arras et al.; Quantus' definition): the share of the positive attribution that
    falls inside the mask, per map (NaN when a map has no positive attribution or the mask is empty)."""
    maps, masks = _check_pair(maps, masks, "masks")
    pos = np.clip(maps, 0, None).reshape(len(maps), -1)
    inside_mask = masks.reshape(len(masks), -1).astype(bool)
    inside = (pos * inside_mask).sum(1)
    total = pos.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((total > 0) & inside_mask.any(1), inside / total, np.nan)


def map_correlation(maps, truth_maps) -> np.ndarray:
    """Pearson correlation between each attribution map and its ground-truth map (NaN where one is constant)."""
    maps, truth = _check_pair(maps, truth_maps, "ground-truth maps")
    a = maps.reshape(len(maps), -1)
    b = truth.reshape(len(truth), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)


# --------------------------------------------------------------------- paper 001's six metrics (§3.5)
ATTRIBUTION_THRESHOLD = 0.3   # paper 001: a normalised attribution counts as "on" above 0.3
MASK_THRESHOLD = 0.5          # and a (soft) segmentation mask above 0.5


def normalise_map(maps) -> np.ndarray:
    """Paper 001's preprocessing: |attribution|, min-max scaled to [0, 1] per map (a constant map becomes 0)."""
    maps = np.abs(np.asarray(maps, np.float64))
    if maps.ndim != 3:
        raise ValueError(f"maps must be N × H × W, got shape {maps.shape}.")
    if not np.isfinite(maps).all():
        raise ValueError("attribution maps hold NaN or inf values; fix the explanation before scoring it.")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def _check_thresholds(attribution_threshold, mask_threshold):
    for name, value in (("attribution_threshold", attribution_threshold), ("mask_threshold", mask_threshold)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}={value}: maps are normalised to [0, 1], so a threshold lies in [0, 1).")


def binarise(maps, masks, attribution_threshold: float = ATTRIBUTION_THRESHOLD,
             mask_threshold: float = MASK_THRESHOLD):
    """Binary attribution (normalised > 0.3) and binary mask (> 0.5), checked to have the same shape. A boolean
    map is already binary and is used as it is (e.g. the "full map" baseline, which min-max scaling would empty)."""
    _check_thresholds(attribution_threshold, mask_threshold)
    is_binary = np.asarray(maps).dtype == bool
    maps, masks = _check_pair(maps, masks, "masks")
    attributed = maps.astype(bool) if is_binary else normalise_map(maps) > attribution_threshold
    return attributed, np.asarray(masks, np.float64) > mask_threshold


def paper_code_binarise(maps, masks, attribution_threshold: float = ATTRIBUTION_THRESHOLD,
                        mask_threshold: float = MASK_THRESHOLD):
    """Binary attribution and mask as paper 001's published code makes them (its ``return_tensor``): every map
    *and every mask* min–max scaled on its own, then kept where ≥ the threshold (the text says "> 0.3"). Scaling
    the U-Net's mask means a patch with a faint U-Net output still gets a mask (its brightest half); a constant
    mask (the code divides 0 by 0) gets none. Boolean maps and masks are used as they are."""
    _check_thresholds(attribution_threshold, mask_threshold)
    map_is_binary, mask_is_binary = np.asarray(maps).dtype == bool, np.asarray(masks).dtype == bool
    maps, masks = _check_pair(maps, masks, "masks")
    attributed = maps.astype(bool) if map_is_binary else normalise_map(maps) >= attribution_threshold
    truth = masks.astype(bool) if mask_is_binary else normalise_map(masks) >= mask_threshold
    # a constant map: the code's 0/0 gives NaN, and NaN ≥ t is False (normalise_map gives 0, which ≥ 0 would keep)
    attributed &= map_is_binary or (np.ptp(maps.reshape(len(maps), -1), 1) > 0)[:, None, None]
    truth &= mask_is_binary or (np.ptp(masks.reshape(len(masks), -1), 1) > 0)[:, None, None]
    return attributed, truth


def paper_metrics(maps, masks, attribution_threshold: float = ATTRIBUTION_THRESHOLD,
                  mask_threshold: float = MASK_THRESHOLD) -> dict:
    """Paper 001's six scores per map, as its §3.5 defines them, on the binarised attribution and mask: IoU
    (Jaccard), precision, recall and F1 of the attributed pixels against the mask pixels (the positive class;
    0 where undefined, as scikit-learn's ``zero_division=0``), Spearman's rank correlation of the two binary
    images (NaN where one is constant, as scipy), and pixel accuracy (share of pixels where both agree).
    Returns a dict of arrays of length N."""
    return overlap_scores(*binarise(maps, masks, attribution_threshold, mask_threshold))


def overlap_scores(attributed, masks) -> dict:
    """The six scores of :func:`paper_metrics` for maps that are already binary (N × H × W booleans): e.g. a
    baseline that attributes every pixel, which min-max scaling would turn into an empty map."""
    pred, truth = np.asarray(attributed), np.asarray(masks)
    if pred.dtype != bool or truth.dtype != bool:
        raise TypeError(f"overlap_scores takes boolean arrays (got {pred.dtype} and {truth.dtype}); binarise "
                        "continuous maps with binarise() or call paper_metrics().")
    _check_pair(pred, truth, "masks")
    n = len(pred)
    p, t = pred.reshape(n, -1), truth.reshape(n, -1)
    tp = (p & t).sum(1).astype(float)
    fp = (p & ~t).sum(1).astype(float)
    fn = (~p & t).sum(1).astype(float)
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        iou = np.where(union > 0, tp / union, 0.0)
    # Spearman of two binary vectors = Pearson of their (tied) ranks = Pearson of the binary vectors
    pc, tc = p - p.mean(1, keepdims=True), t - t.mean(1, keepdims=True)
    denom = np.sqrt((pc ** 2).sum(1) * (tc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        spearman = np.where(denom > 0, (pc * tc).sum(1) / denom, np.nan)
    return {"iou": iou, "precision": precision, "recall": recall, "f1": f1, "spearman": spearman,
            "pixel_accuracy": (p == t).mean(1)}


def paper_code_iou(maps, masks, attribution_threshold: float = ATTRIBUTION_THRESHOLD,
                   mask_threshold: float = MASK_THRESHOLD, smooth: float = 1.0) -> np.ndarray:
    """IoU as paper 001's published code computes it (its appendix): the binary attribution goes through a
    sigmoid first (0 → 0.5, 1 → 0.73) and a smoothing term of 1 is added; kept to show why its Table 6 IoU is
    almost the same for every method. Binarised as the code does (:func:`paper_code_binarise`)."""
    pred, truth = paper_code_binarise(maps, masks, attribution_threshold, mask_threshold)
    n = len(pred)
    soft = 1 / (1 + np.exp(-pred.reshape(n, -1).astype(float)))
    t = truth.reshape(n, -1).astype(float)
    inter = (soft * t).sum(1)
    return (inter + smooth) / ((soft + t).sum(1) - inter + smooth)


def paper_code_prf(maps, masks, attribution_threshold: float = ATTRIBUTION_THRESHOLD,
                   mask_threshold: float = MASK_THRESHOLD) -> dict:
    """Precision, recall and F1 as paper 001's published code computes them: scikit-learn's
    ``precision_score(mask, binary_map, average='macro')`` on the 2-D images. scikit-learn reads a 2-D 0/1 array
    as multilabel data (rows = samples, columns = labels), so the score is computed per column and averaged over
    columns, and a column where the score is undefined (no attributed pixel for precision, no mask pixel for
    recall, neither for F1) counts as 0 (``zero_division``'s default). The thesis's code transposes both images
    first (``rot90(flip(., 1), 1)``), so its columns are the image rows. Binarised as the code does
    (:func:`paper_code_binarise`). Returns arrays of length N."""
    pred, truth = paper_code_binarise(maps, masks, attribution_threshold, mask_threshold)
    tp = (pred & truth).sum(2).astype(float)          # per image row = per column of the transposed image
    n_pred, n_true = pred.sum(2).astype(float), truth.sum(2).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, 0.0)
        recall = np.where(n_true > 0, tp / n_true, 0.0)
        f1 = np.where(n_pred + n_true > 0, 2 * tp / (n_pred + n_true), 0.0)
    return {"precision": precision.mean(1), "recall": recall.mean(1), "f1": f1.mean(1)}


# ------------------------------------------------------------------------ localisation (Quantus' definitions)
def _flat_pair(maps, masks):
    maps, masks = _check_pair(maps, masks, "masks")
    n = len(maps)
    return maps.reshape(n, -1), np.asarray(masks).reshape(n, -1).astype(bool)


POINTING_TIES = ("any", "share", "miss")


def pointing_game(maps, masks, ties: str = "any") -> np.ndarray:
    """1 where the map's maximum lies inside the mask, else 0; NaN for an empty mask. When several pixels share the
    maximum (a constant map, a flat LIME segment, a CAM's plateau), ``ties`` decides: "any" — a hit if any of them
    is inside (Quantus' ``PointingGame``; an empty or full map then always hits), "share" — the share of them inside
    (the expected hit when the tie is broken at random: a constant map scores the mask's area), "miss" — a tie is a
    miss. :func:`pointing_ties` counts the maps concerned."""
    if ties not in POINTING_TIES:
        raise ValueError(f"ties={ties!r}; choose 'any' (Quantus), 'share' (random tie-break, expected) or 'miss'.")
    a, s = _flat_pair(maps, masks)
    top = a == a.max(1, keepdims=True)
    inside = (s & top).sum(1)
    if ties == "any":
        hit = (inside > 0).astype(float)
    elif ties == "share":
        hit = inside / top.sum(1)
    else:
        hit = ((inside > 0) & (top.sum(1) == 1)).astype(float)
    hit[s.sum(1) == 0] = np.nan
    return hit


def pointing_ties(maps) -> np.ndarray:
    """How many pixels share each map's maximum (1: the pointing game is decided by one pixel)."""
    a = np.asarray(maps, np.float64)
    if a.ndim != 3:
        raise ValueError(f"maps must be N × H × W, got shape {a.shape}.")
    flat = a.reshape(len(a), -1)
    return (flat == flat.max(1, keepdims=True)).sum(1)


def ranking(maps, tie_break: str = "random", seed: int = 0) -> np.ndarray:
    """Pixel order of each map, most attributed first (N × H·W indices). Tied values — the zeros of a LIME or CAM
    map, a whole LIME segment, a constant map — are ordered by ``tie_break``: "random" (a seeded random order,
    the same for every method on the same image size, so that no method is helped by raster order) or "raster"
    (row by row, numpy's stable sort)."""
    a = np.asarray(maps, np.float64)
    a = a.reshape(len(a), -1)
    if not np.isfinite(a).all():      # NaN sorts last or first depending on the sort: refuse instead
        raise ValueError("maps: the attribution maps hold NaN or inf values; fix the explanation before ranking it.")
    if tie_break == "raster":
        return np.argsort(-a, axis=1, kind="stable")
    if tie_break != "random":
        raise ValueError(f"tie_break={tie_break!r}; use 'random' (seeded) or 'raster'.")
    keys = np.random.default_rng(seed).random(a.shape)
    return np.stack([np.lexsort((k, -row)) for k, row in zip(keys, a)])


def top_k_masks(maps, k, tie_break: str = "random", seed: int = 0) -> np.ndarray:
    """Binary maps holding the k most attributed pixels of each map (``k`` one count or one per map; ties ordered
    by :func:`ranking`): the area-matched binarisation, free of any threshold."""
    a = numeric(maps, "maps", ndim=3, layout="N × H × W", fix="Add a batch axis with maps[None] for one map.")
    k = np.broadcast_to(np.asarray(k, int), (len(a),))
    order = ranking(a, tie_break, seed)
    out = np.zeros(order.shape, bool)
    for i in range(len(a)):
        out[i, order[i, :k[i]]] = True
    return out.reshape(a.shape)


def relevance_rank(maps, masks, tie_break: str = "random", seed: int = 0) -> np.ndarray:
    """Share of the k most attributed pixels that lie in the mask, k = mask size (Quantus'
    ``RelevanceRankAccuracy``; for maps without ties the same numbers); NaN for an empty mask. With k = |mask| it is
    at once the precision, the recall and the F1 of the top-k pixels. Ties: see :func:`ranking`."""
    a, s = _flat_pair(maps, masks)
    k = s.sum(1)
    ranked = np.take_along_axis(s, ranking(a, tie_break, seed), axis=1)
    top = np.arange(a.shape[1])[None, :] < k[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, (ranked & top).sum(1) / np.maximum(k, 1), np.nan)


def top_k_iou(maps, masks, tie_break: str = "random", seed: int = 0) -> np.ndarray:
    """IoU of the top-|mask| pixels with the mask (area-matched IoU = r / (2 − r) for relevance rank r); NaN for
    an empty mask."""
    r = relevance_rank(maps, masks, tie_break, seed)
    return r / (2 - r)


BASELINES = ("random map", "empty map", "full map", "centre blob")


def baseline_maps(kind: str, shape, seed: int = 0) -> np.ndarray:
    """Trivial maps N × H × W to score beside real explanations: "random map" (uniform noise, seeded), "empty map"
    (all 0: nothing attributed), "full map" (all 1: everything attributed equally) and "centre blob" (a Gaussian
    of σ = a quarter of the side at the centre: the prior that objects sit in the middle of a patch).
    Constant maps have no order: ranked scores (and deletion / insertion) order their pixels by the tie rule of
    :func:`ranking`, so they score what a random order scores."""
    n, h, w = (int(v) for v in shape)
    if kind == "random map":
        return np.random.default_rng(seed).random((n, h, w))
    if kind == "empty map":
        return np.zeros((n, h, w))
    if kind == "full map":
        return np.ones((n, h, w), bool)
    if kind == "centre blob":
        yy, xx = np.mgrid[:h, :w]
        blob = np.exp(-(((yy - (h - 1) / 2) / (h / 4)) ** 2 + ((xx - (w - 1) / 2) / (w / 4)) ** 2) / 2)
        return np.broadcast_to(blob, (n, h, w)).copy()
    raise ValueError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}.")


def mask_auc(maps, masks) -> np.ndarray:
    """ROC-AUC of the attribution as a score for mask pixels (Quantus' ``AUC``); NaN when the mask is empty
    or covers everything."""
    from sklearn.metrics import roc_auc_score

    a, s = _flat_pair(maps, masks)
    return np.array([roc_auc_score(si, ai) if 0 < si.sum() < si.size else np.nan for ai, si in zip(a, s)])


def benchmark_scores(maps, masks, seed: int = 0) -> dict:
    """Every ground-truth score of one method's maps against binary masks, per map, by family:

    - the 0.3 cut (paper 001): ``F1 (thesis's code)``, ``IoU (thesis's code, sigmoid)`` (what its Table 6
      reports), ``F1 (per pixel)``, ``IoU (per pixel)`` (the definitions);
    - threshold-free: ``ROC-AUC`` (|map| as a score for mask pixels), ``relevance mass`` (share of |map| inside);
    - area-matched: ``top-k F1`` (the top-|mask| pixels; = relevance rank = their precision and recall) and
      ``top-k IoU``;
    - ``pointing game`` (a tie for the maximum scored by the share of the tied pixels inside the mask: the expected
      hit under a random tie-break, so that an empty or full map scores the mask's area, not 1).
    The ranked and threshold-free scores are NaN where the mask is empty; ties are broken at random (seeded).
    Boolean maps (the full-map baseline) are taken as already binary."""
    masks = np.asarray(masks).astype(bool)
    code = paper_code_prf(maps, masks)
    per_pixel = paper_metrics(maps, masks)
    magnitude = np.abs(np.asarray(maps, np.float64))
    return {"F1 (thesis's code)": code["f1"], "IoU (thesis's code, sigmoid)": paper_code_iou(maps, masks),
            "F1 (per pixel)": per_pixel["f1"], "IoU (per pixel)": per_pixel["iou"],
            "ROC-AUC": mask_auc(magnitude, masks), "relevance mass": relevance_mass(magnitude, masks),
            "top-k F1": relevance_rank(magnitude, masks, seed=seed), "top-k IoU": top_k_iou(magnitude, masks, seed=seed),
            "pointing game": pointing_game(magnitude, masks, ties="share")}


# ------------------------------------------------------------------------------------------ faithfulness
def _target_scores(model, batch, target: int):
    out = model(batch)
    return (torch.softmax(out, 1) if out.shape[1] > 1 else out)[:, target]


def deletion_insertion(model, images, maps, target, steps: int = 20, device="auto", batch_size: int = 64,
                       blur_sigma: float = 5.0, deletion_baseline: str = "blur", tie_break: str = "random",
                       seed: int = 0) -> dict:
    """Deletion and insertion curves (Petsiuk et al., RISE): pixels are taken in order of decreasing
    attribution; deletion replaces the first fraction f of them and follows the target's probability, insertion
    starts from a blurred image and puts them back. ``deletion_baseline``: "blur" (default: the blurred image, as
    insertion starts from) or "zero" (RISE's black pixels — on H&E black patches look like an artefact, so the
    prediction collapses after the first step whatever the order). Tied pixels (the zeros of a CAM or LIME map, a
    constant map) are taken in the order of :func:`ranking` (``tie_break``: seeded random by default; "raster" takes
    them row by row, which favours maps whose ties sit where raster order happens to start). ``target`` is one
    class index or one per image. Returns
    ``deletion_auc`` and ``insertion_auc`` per image (area under the curve over f ∈ [0, 1]; lower deletion and
    higher insertion mean a more faithful map) and the curves."""
    from torchvision.transforms.functional import gaussian_blur

    from .env import select_device

    # uint8 images are 0–255, floats must lie in [0, 1] (helpers.pixels): the blur and the model see [0, 1]
    x = torch.as_tensor(unit_float(np.asarray(images), "images"), dtype=torch.float32)
    maps = np.asarray(maps, np.float64)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be N × 3 × H × W, got shape {tuple(x.shape)}.")
    if maps.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise ValueError(f"maps {maps.shape} do not match the images {tuple(x.shape)}; one N × H × W map per image.")
    if not np.isfinite(maps).all():
        raise ValueError("attribution maps hold NaN or inf values.")
    if deletion_baseline not in ("blur", "zero"):
        raise ValueError(f"unknown deletion baseline {deletion_baseline!r}; use 'blur' or 'zero'.")
    if int(steps) < 1:
        raise ValueError(f"steps={steps}: a deletion curve needs at least one step (DELETION_STEPS ≥ 1).")
    target = np.asarray(target, int)
    if target.ndim > 1 or (target.ndim == 1 and len(target) != len(x)):
        raise ValueError(f"target has shape {target.shape} for {len(x)} images: give one class index, or one per image.")
    targets = np.broadcast_to(target, (len(x),))
    dev = select_device(device)
    model = model.to(dev).eval()
    n_pix = x.shape[2] * x.shape[3]
    fractions = np.linspace(0, 1, steps + 1)
    counts = np.round(fractions * n_pix).astype(int)
    curves = {"deletion": np.zeros((len(x), steps + 1)), "insertion": np.zeros((len(x), steps + 1))}
    k = int(2 * round(3 * blur_sigma) + 1)
    orders = ranking(maps, tie_break, seed)
    with torch.no_grad():
        for i in range(len(x)):
            order = torch.as_tensor(orders[i])
            rank = torch.empty(n_pix, dtype=torch.long)
            rank[order] = torch.arange(n_pix)
            rank = rank.view(1, 1, *x.shape[2:])
            taken = rank < torch.as_tensor(counts).view(-1, 1, 1, 1)                # (steps+1) × 1 × H × W
            image = x[i: i + 1]
            blurred = gaussian_blur(image, [k, k], [blur_sigma, blur_sigma])
            removed = blurred if deletion_baseline == "blur" else torch.zeros_like(image)
            variants = {"deletion": torch.where(taken, removed, image),
                        "insertion": torch.where(taken, image, blurred)}
            for name, batch in variants.items():
                scores = torch.cat([_target_scores(model, batch[s: s + batch_size].to(dev), int(targets[i]))
                                    for s in range(0, len(batch), batch_size)])
                curves[name][i] = scores.double().cpu().numpy()
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return {"deletion_auc": trapezoid(curves["deletion"], fractions, axis=1),
            "insertion_auc": trapezoid(curves["insertion"], fractions, axis=1),
            "fractions": fractions, "deletion_curve": curves["deletion"], "insertion_curve": curves["insertion"]}


# ------------------------------------------------------------------------------------------------ sanity
def randomised_copy(model, seed: int = 0):
    """A copy of ``model`` with every layer's parameters re-initialised (the model-parameter randomisation test
    of Adebayo et al., all layers at once); the original is untouched."""
    import copy

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; randomised_copy takes a torch.nn.Module.")
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        n = 0
        for module in clone.modules():
            if hasattr(module, "reset_parameters") and module is not clone:
                module.reset_parameters()
                n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no layer with reset_parameters(); cannot randomise it.")
    return clone.eval()


def rank_similarity(maps_a, maps_b) -> np.ndarray:
    """Spearman rank correlation between corresponding maps of |attribution| (MPRT's similarity). A map that
    is constant under one model shares no ranking with the other: scored 0 rather than NaN."""
    from scipy.stats import spearmanr

    a, b = _check_pair(maps_a, maps_b, "second maps")
    out = []
    for ai, bi in zip(np.abs(a).reshape(len(a), -1), np.abs(b).reshape(len(b), -1)):
        if np.ptp(ai) == 0 or np.ptp(bi) == 0:
            out.append(0.0)
        else:
            out.append(float(spearmanr(ai, bi)[0]))
    return np.array(out)


def ssim_similarity(maps_a, maps_b, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity (scikit-image's SSIM, its default 7 × 7 uniform window) between corresponding maps, one
    value per pair: the similarity Adebayo et al. used for the randomisation checks. Maps in [0, 1] by default
    (``data_range``); 1 means identical, values near 0 unrelated."""
    from skimage.metrics import structural_similarity

    a, b = _check_pair(maps_a, maps_b, "second maps")
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f"data_range={data_range!r}: give the maps' value range, a positive number (1.0 for [0, 1]).")
    if min(a.shape[1:]) < 7:
        raise ValueError(f"maps of shape {a.shape}: SSIM's 7-px window needs maps of at least 7 × 7 pixels.")
    return np.array([float(structural_similarity(x, y, data_range=data_range)) for x, y in zip(a, b)])


def placement_test(attribution, region, within, n_placements: int = 2000, min_inside: float = 0.9,
                   seed: int = 0) -> dict:
    """Does a map put more importance on one ``region`` (e.g. a real lesion) than on the same shape elsewhere? The
    mean attribution inside the region against the means at ``n_placements`` random translations of the region that
    keep at least ``min_inside`` of its voxels inside ``within`` (e.g. the lung); p = (1 + placements at or above
    the observed mean) / (1 + placements). A single image's test: its unit is the placement, not the image.
    Returns {observed, null_mean, null_high (95th percentile), p, n_placements}."""
    attribution = np.asarray(attribution, np.float64)
    region, within = np.asarray(region, bool), np.asarray(within, bool)
    if not (attribution.shape == region.shape == within.shape):
        raise ValueError(f"attribution {attribution.shape}, region {region.shape} and within {within.shape} must "
                         "share one grid.")
    if not region.any() or not np.isfinite(attribution[within | region]).all():
        raise ValueError("region is empty or the attribution holds NaN/inf where it is scored.")
    coords = np.argwhere(region)
    shape = np.asarray(region.shape)
    low, high = -coords.min(0), shape - 1 - coords.max(0)
    rng = np.random.default_rng(seed)
    null, tries = [], 0
    while len(null) < n_placements and tries < 200 * n_placements:
        tries += 1
        shift = rng.integers(low, high + 1)
        if not shift.any():
            continue
        moved = tuple((coords + shift).T)
        inside = within[moved]
        if inside.mean() >= min_inside:
            null.append(attribution[moved][inside].mean())
    if len(null) < n_placements:
        raise ValueError(f"only {len(null)} of {n_placements} placements keep {min_inside:.0%} of the region inside "
                         "`within`; the region is too large for it (lower min_inside or n_placements).")
    null = np.asarray(null)
    observed = float(attribution[region].mean())
    return {"observed": observed, "null_mean": float(null.mean()), "null_high": float(np.percentile(null, 95)),
            "p": float((1 + (null >= observed).sum()) / (1 + len(null))), "n_placements": int(len(null))}
