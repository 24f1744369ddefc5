"""Tissue on a slide: tissue masks from RGB, tiling by tissue fraction (paper 000's rule), random tissue tiles for
galleries, and H&E stain statistics."""
from __future__ import annotations

import numpy as np

from ..arrays import numeric
from ..pixels import check_range


# ---------------------------------------------------------------------------------------------------- tiling
def integral_image(mask):
    """Summed-area table of a 2-D mask (one extra zero row and column), for box sums in O(1)."""
    mask = numeric(mask, "mask", ndim=2, layout="one H × W mask", dtype=None)
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    ii[1:, 1:] = np.cumsum(np.cumsum(mask, 0, dtype=np.int64), 1)
    return ii


def box_sums(ii, ys, xs, size):
    """Sums of the ``size``×``size`` boxes with top-left corners (ys, xs) from an :func:`integral_image`."""
    ys, xs = np.asarray(ys), np.asarray(xs)
    for name, v in (("ys", ys), ("xs", xs)):
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name} of dtype {v.dtype}: box corners are integer pixel positions (use np.rint(...)"
                            ".astype(int)).")
    ii = np.asarray(ii)
    if ii.ndim != 2:
        raise ValueError(f"ii of shape {ii.shape}: give the 2-D table integral_image(mask) returns.")
    if ys.size and (ys.min() < 0 or xs.min() < 0 or ys.max() + size >= ii.shape[0] or xs.max() + size >= ii.shape[1]):
        raise ValueError(f"boxes of size {size} at rows {ys.min()}…{ys.max()}, columns {xs.min()}…{xs.max()} leave "
                         f"the {ii.shape[0] - 1} × {ii.shape[1] - 1} mask; keep corners within it.")
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
    frac = box_sums(integral_image(tissue), gy, gx, tile) / float(tile * tile)
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
        cf = box_sums(integral_image(label_mask), gy[keep] + off, gx[keep] + off, c) / float(c * c)
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


def random_tiles(image, tissue, tile: int, n: int, seed: int = 0, min_tissue: float = 0.8):
    """``n`` random tissue tiles (``tile`` px) from a large image, for galleries."""
    if int(n) < 1:
        raise ValueError(f"n={n}: ask for at least one tile.")
    t = tile_slide(tissue, tile, max(1, tile // 2), min_tissue)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(t["coords"]), size=min(n, len(t["coords"])), replace=False)
    return [np.asarray(image[y: y + tile, x: x + tile]) for y, x in t["coords"][pick]]


def stain_statistics(images, tissue_masks=None) -> dict:
    """Median and 95th percentile of hematoxylin and eosin optical density (``skimage.color.rgb2hed``) over
    tissue pixels of a stack of RGB images: a quantitative check that simulated tiles stain like real ones."""
    from skimage.color import rgb2hed

    if len(images) == 0:
        raise ValueError("images is empty; give at least one RGB image.")
    if tissue_masks is not None and len(tissue_masks) != len(images):
        raise ValueError(f"{len(tissue_masks)} tissue masks for {len(images)} images; give one mask per image.")
    hs, es = [], []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] not in (3, 4):
            raise ValueError(f"image {i} has shape {img.shape}; stain statistics need H×W×3 RGB images.")
        hed = rgb2hed(check_range(img[..., :3], f"images[{i}]"))
        sel = np.ones(hed.shape[:2], bool) if tissue_masks is None else np.asarray(tissue_masks[i], bool)
        if sel.shape != hed.shape[:2]:
            raise ValueError(f"tissue mask {i} {sel.shape} differs from its image {hed.shape[:2]}.")
        hs.append(hed[..., 0][sel])
        es.append(hed[..., 1][sel])
    h, e = np.concatenate(hs), np.concatenate(es)
    return {"h_median": float(np.median(h)), "h_p95": float(np.percentile(h, 95)),
            "e_median": float(np.median(e)), "e_p95": float(np.percentile(e, 95))}
