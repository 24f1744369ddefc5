"""Figures shared by the notebooks: image galleries and ground-truth overlays."""
from __future__ import annotations

import numpy as np

from .pixels import unit_float

# nucleus types: 1 neoplastic (red), 2 non-neoplastic (blue), as in paper 001's figures
TYPE_COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.35, 1.0)}
REGION_COLOURS = {"tumour": (1.0, 0.85, 0.0), "glands": (0.0, 0.8, 0.3), "lumen": (0.0, 0.9, 0.9),
                  "stroma": (0.9, 0.3, 0.9), "fat": (1.0, 0.6, 0.2), "edge": (0.2, 0.2, 0.2),
                  "artefact": (0.5, 1.0, 0.5), "tissue": (0.6, 0.6, 0.6)}


def interval_error_bars(estimate, low, high) -> np.ndarray:
    """Matplotlib's ``yerr`` / ``xerr`` (2 × n: below, above) for estimates with intervals [low, high].

    Matplotlib refuses a negative length, and a percentile bootstrap interval can exclude its own estimate: by a
    rounding error when every value is equal, or for a skewed statistic. Each bar then runs from the estimate to the
    far end of the interval, so it always covers both the estimate and the whole interval."""
    estimate, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (estimate, low, high))
    if not estimate.shape == low.shape == high.shape:
        raise ValueError(f"estimate, low and high have shapes {estimate.shape}, {low.shape}, {high.shape}: give one "
                         "value of each per bar.")
    return np.clip(np.stack([estimate - low, high - estimate]), 0.0, None)


def overlay_regions(rgb, masks: dict, names=("tumour", "glands", "lumen"), alpha: float = 0.35):
    """Tint ``rgb`` (H×W×3, uint8 or floats in [0, 1]) with the boolean masks named in ``names``; returns float RGB
    in [0, 1]."""
    out = unit_float(rgb, "rgb").copy()
    for name in names:
        m = np.asarray(masks[name], bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(REGION_COLOURS.get(name, (1, 1, 0)), np.float32)
    return out


def outline_nuclei(rgb, instances, types, thickness: int = 1):
    """Draw nucleus outlines coloured by type (red neoplastic, blue non-neoplastic) on ``rgb`` (uint8, or floats in
    [0, 1]); returns float RGB in [0, 1]."""
    from skimage.segmentation import find_boundaries

    out = unit_float(rgb, "rgb").copy()
    edges = find_boundaries(np.asarray(instances), mode="inner")
    if thickness > 1:
        from scipy import ndimage

        edges = ndimage.binary_dilation(edges, iterations=thickness - 1) & (np.asarray(instances) > 0)
    for t, colour in TYPE_COLOURS.items():
        sel = edges & (np.asarray(types) == t)
        out[sel] = colour
    return out


def gallery(images, titles=None, ncols: int = 6, size: float = 2.0, suptitle: str | None = None):
    """A grid of images with optional titles; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images; give one title per image (or titles=None).")
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray" if np.asarray(img).ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def paper_colours(rgb, attribution_on, tumour, non_tumour, alpha: float = 0.55):
    """Paper 001's overlay: attribution green, tumour mask red, non-tumour mask blue, attribution on tumour
    yellow; all masks boolean H × W. Returns a float RGB image in [0, 1]."""
    rgb = unit_float(rgb, "rgb")
    colour = np.zeros_like(rgb)
    layer = np.zeros(rgb.shape[:2], bool)
    for mask, c in ((non_tumour, (0.1, 0.3, 1.0)), (tumour, (0.9, 0.1, 0.1)), (attribution_on, (0.1, 0.8, 0.1)),
                    (np.logical_and(attribution_on, tumour), (1.0, 0.9, 0.0))):
        mask = np.asarray(mask, bool)
        colour[mask] = c
        layer |= mask
    out = rgb.copy()
    out[layer] = (1 - alpha) * rgb[layer] + alpha * colour[layer]
    return out
