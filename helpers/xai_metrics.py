"""Scores of attribution maps against ground truth: where the attribution mass lies, and how it correlates with
a ground-truth map."""
from __future__ import annotations

import numpy as np


def _check_pair(maps, truth, what: str):
    maps, truth = np.asarray(maps, np.float64), np.asarray(truth)
    if maps.shape != truth.shape:
        raise ValueError(f"attribution maps {maps.shape} and {what} {truth.shape} differ in shape; resize one to "
                         f"the other (maps are N × H × W at input resolution).")
    if not np.isfinite(maps).all():
        raise ValueError("attribution maps hold NaN or inf values.")
    return maps, truth


def relevance_mass(maps, masks) -> np.ndarray:
    """Relevance mass accuracy (Arras et al.; Quantus' definition): the share of the positive attribution that
    falls inside the mask, per map (NaN when a map has no positive attribution)."""
    maps, masks = _check_pair(maps, masks, "masks")
    pos = np.clip(maps, 0, None).reshape(len(maps), -1)
    inside = (pos * masks.reshape(len(masks), -1).astype(bool)).sum(1)
    total = pos.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def map_correlation(maps, truth_maps) -> np.ndarray:
    """Pearson correlation between each attribution map and its ground-truth map (NaN where one is constant)."""
    maps, truth = _check_pair(maps, truth_maps, "ground-truth maps")
    a = maps.reshape(len(maps), -1)
    b = truth.reshape(len(truth), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)
