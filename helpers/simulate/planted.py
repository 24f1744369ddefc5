"""Images with a planted mechanism: the evidence that decides the label is put there by construction, so the
right explanation of a model trained on them is known (issue 31, item 9; see :mod:`helpers.metric_validation`).

Each mechanism changes a random half of the patches (class 1) and leaves the other half as they are (class 0); the
label depends on nothing else, so a model that separates the classes must read the planted evidence:

- ``"marker"``: a dark square of ``MARKER_PX`` px at a random place (evidence: the square);
- ``"nuclei"``: the nuclei darkened to ``NUCLEI_FACTOR`` of their intensity (evidence: the nuclei);
- ``"stroma"``: fine vertical stripes (period ``STRIPE_PERIOD`` px) on the tissue between the nuclei (evidence:
  everything that is not a nucleus).
"""
from __future__ import annotations

import numpy as np

PLANTED_MECHANISMS = ("marker", "nuclei", "stroma")
# the smallest square the grading CNN's architecture learnt in 8 epochs (validation accuracy ≥ 0.9): an 8 px one
# (0.7 % of a 96 px patch) stayed near chance at every learning rate tried (benchmarks/planted_marker_size.py)
MARKER_PX = 12
MARKER_RGB = (40, 30, 90)        # a dark blue-violet, darker than any nucleus of the simulator
NUCLEI_FACTOR = 0.7
STRIPE_PERIOD, STRIPE_AMPLITUDE = 4, 14.0


def planted_dataset(images, nuclei, mechanism: str, seed: int = 0, marker_px: int = MARKER_PX) -> dict:
    """``images`` N×H×W×3 uint8 and their nuclei masks N×H×W (any nonzero value is a nucleus) → {"images",
    "labels" (half 1, half 0, shuffled), "evidence" (N×H×W bool: where class 1's change is; empty for class 0)}.
    ``marker_px``: the side of the "marker" square."""
    if mechanism not in PLANTED_MECHANISMS:
        raise ValueError(f"mechanism={mechanism!r}; choose one of {', '.join(PLANTED_MECHANISMS)}.")
    images = np.asarray(images)
    nuclei = np.asarray(nuclei) > 0
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or nuclei.shape != images.shape[:3]:
        raise ValueError(f"images {images.shape} {images.dtype} and nuclei {nuclei.shape}: give N×H×W×3 uint8 patches "
                         "and one N×H×W nuclei mask per patch.")
    n, h, w = nuclei.shape
    if mechanism == "marker" and not 1 <= int(marker_px) <= min(h, w):
        raise ValueError(f"marker_px={marker_px} on {h}×{w} px patches; give a side between 1 and {min(h, w)}.")
    rng = np.random.default_rng([seed, 9009, PLANTED_MECHANISMS.index(mechanism)])
    labels = rng.permutation(np.arange(n) % 2)
    out = images.astype(np.float32)
    evidence = np.zeros((n, h, w), bool)
    # half a pixel of phase: no column falls on a zero crossing, so every stroma pixel changes
    stripes = STRIPE_AMPLITUDE * np.sin(2 * np.pi * (np.arange(w) + 0.5) / STRIPE_PERIOD)[None, :, None]
    for i in np.flatnonzero(labels == 1):
        if mechanism == "marker":
            top, left = rng.integers(0, h - marker_px + 1), rng.integers(0, w - marker_px + 1)
            evidence[i, top:top + marker_px, left:left + marker_px] = True
            out[i][evidence[i]] = MARKER_RGB
        elif mechanism == "nuclei":
            evidence[i] = nuclei[i]
            out[i][evidence[i]] *= NUCLEI_FACTOR
        else:
            evidence[i] = ~nuclei[i]
            out[i] = np.where(evidence[i][..., None], out[i] + stripes, out[i])
    return {"images": np.clip(np.round(out), 0, 255).astype(np.uint8), "labels": labels.astype(np.int64),
            "evidence": evidence}
