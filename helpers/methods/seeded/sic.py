"""Seeded iterative clustering (paper 002, Algorithm 1): split patch embeddings into "positive" and "negative"
from a few clicked seed patches.

- :class:`SeededKMeans` — k-means whose centres start at the mean of each class's seeds (Basu et al. 2002),
  then scikit-learn's Lloyd iterations (``sklearn.cluster.KMeans(init=seed_means, n_init=1)``).
- :func:`seeded_iterative_clustering` — Algorithm 1 as interpreted here (the paper's pseudocode is ambiguous):

  seeds: one entry per patch, -1 unlabelled, 0 negative (benign click), 1 positive (cancer click).
  1. Seeded 2-means on all patches; "positive" = the cluster whose centre started at the positive seeds.
  2. Repeat: take the patches currently positive and the seeds inside them.
     - both classes inside → seeded 2-means on them (positive as in 1);
     - only positive seeds inside → plain 2-means, once (the paper's "additional step of conventional KMeans"
       for small lesions; the seeds cannot judge such a split — F1 stays equal whatever it cuts — so repeating
       it would shrink the region towards the clicked patches); positive = the sub-cluster holding most positive
       seeds (ties: the smaller sub-cluster);
     - no positive seed inside → stop.
     The split is kept only if the F1 on ALL seeds (patches outside the positive set count as negative) does
     not go down; otherwise stop with the previous labels. Also stop when the positive set stops shrinking,
     falls below ``min_size`` patches, or after ``max_splits``.
  The paper writes the loop as "while score ≤ score_prev", which would never start from score_prev = 0 with a
  positive first score; read here as "while the score does not go down".

  Which seeds score a split: the pseudocode compares "only sparse annotations" inside the set being split
  (``y = seeds[labels == 1]``, then ``metric(y, label)``): ``score_on="inside"``. Our default,
  ``score_on="all"``, scores every candidate region on all the seeds (a seed outside the region counts as
  predicted negative), so that a split which drops clicked cancer patches out of the region is seen as the loss
  it is. Both are kept so that the notebook can show what the choice changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...arrays import labels as check_labels, numeric


class SeedError(ValueError):
    """Bad embeddings or seeds, with what to change."""


def _float_matrix(embeddings):
    x = np.asarray(embeddings)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)   # float32 stays: half the memory


def checked_inputs(embeddings, seeds):
    """(embeddings as a float matrix, seeds as int) after the checks every method from clicks needs: patches ×
    dims, finite, one seed per patch, seed values -1, 0 or 1."""
    x = _float_matrix(embeddings)
    if x.ndim != 2:
        raise SeedError(f"embeddings of shape {x.shape}: expected patches × dims.")
    if not np.isfinite(x).all():
        raise SeedError("embeddings contain NaN or inf; recompute or drop those patches.")
    y = np.asarray(seeds)
    if y.shape != (len(x),):
        raise SeedError(f"{y.shape} seeds for {len(x)} patches: give one entry per patch (-1 unlabelled, "
                        "0 negative, 1 positive).")
    if not np.isin(y, (-1, 0, 1)).all():
        raise SeedError(f"seed values {sorted(set(np.unique(y)) - {-1, 0, 1})} are not -1, 0 or 1.")
    return x, y.astype(int)


class SeededKMeans:
    """2-class (or K-class) k-means initialised from the seeds' class means (Basu et al. 2002).

    ``fit(X, seeds)``: seeds as in the module docstring (classes 0…K-1, -1 unlabelled); every class needs at
    least one seed. The seeding is ours; the Lloyd iterations are scikit-learn's ``KMeans(init=seed means,
    n_init=1)``. ``labels_`` follow the classes: cluster c started at class c's seed mean."""

    def __init__(self, n_clusters: int = 2, max_iter: int = 300, tol: float = 1e-4):
        self.n_clusters, self.max_iter, self.tol = int(n_clusters), int(max_iter), float(tol)

    def fit(self, embeddings, seeds):
        from sklearn.cluster import KMeans

        x = _float_matrix(embeddings)
        y = np.asarray(seeds).astype(int)
        if x.ndim != 2 or y.shape != (len(x),):
            raise SeedError(f"embeddings {x.shape} and seeds {y.shape}: give patches × dims and one seed per patch.")
        missing = [c for c in range(self.n_clusters) if not (y == c).any()]
        if missing:
            raise SeedError(f"no seed of class {missing}; seeded k-means needs at least one seed per class "
                            "(use plain k-means when one class has no seeds).")
        means = np.stack([x[y == c].mean(0) for c in range(self.n_clusters)])
        if len(np.unique(means, axis=0)) < self.n_clusters:
            raise SeedError("two classes of seeds have the same mean embedding (identical patches clicked as "
                            "positive and negative?); click different patches.")
        fitted = KMeans(self.n_clusters, init=means, n_init=1, max_iter=self.max_iter, tol=self.tol).fit(x)
        self.cluster_centers_, self.labels_ = fitted.cluster_centers_, fitted.labels_
        self.n_iter_, self.inertia_ = fitted.n_iter_, float(fitted.inertia_)
        return self


def seed_f1(seeds, positive) -> float:
    """F1 of the positive prediction at the seeded patches only (what the clicks can judge)."""
    from sklearn.metrics import f1_score

    seeds = check_labels(seeds, "seeds", fix="Give 1 (clicked positive), 0 (clicked negative) or -1 per patch.")
    positive = numeric(positive, "positive", dtype=bool)
    if seeds.shape != positive.shape:
        raise SeedError(f"{seeds.shape} seeds and {positive.shape} predictions; give one of each per patch.")
    if not np.isin(seeds, (-1, 0, 1)).all():
        raise SeedError(f"seeds hold {sorted(set(np.unique(seeds).tolist()) - {-1, 0, 1})}; a seed is 1 (clicked "
                        "positive), 0 (clicked negative) or -1 (not clicked).")
    known = seeds >= 0
    if not known.any():
        raise SeedError("seeds has no clicked patch (every value is -1): an F1 on the seeds needs at least one; "
                        "check that the clicks fall on the slide's patches.")
    return float(f1_score(seeds[known], positive[known].astype(int), zero_division=0.0))


@dataclass
class SICResult:
    positive: np.ndarray                 # bool per patch, the final positive region
    score: float                         # F1 on the seeds
    history: list = field(default_factory=list)   # per split: rule, positive count, score, kept, its mask


SCORES_ON = ("all", "inside")


def _check_score_on(score_on):
    if score_on not in SCORES_ON:
        raise SeedError(f"score_on={score_on!r}: choose 'all' (every seed scores the candidate region) or 'inside' "
                        "(the paper's pseudocode: only the seeds inside the set being split).")


def seeded_iterative_clustering(embeddings, seeds, max_splits: int = 20, min_size: int = 2, seed: int = 0,
                                max_fallback: int = 1, score_on: str = "all") -> SICResult:
    """Algorithm 1 of paper 002 (see the module docstring for the interpretation and for ``score_on``)."""
    from sklearn.cluster import KMeans

    _check_score_on(score_on)
    x, y = checked_inputs(embeddings, seeds)
    if not ((y == 0).any() and (y == 1).any()):
        raise SeedError("seeded iterative clustering needs at least one positive (1) and one negative (0) seed.")
    first = SeededKMeans(2).fit(x, y)
    positive = first.labels_ == 1
    score = seed_f1(y, positive)
    history = [{"rule": "seeded 2-means (all patches)", "positive": int(positive.sum()), "score": score,
                "kept": True, "mask": positive}]
    fallbacks = 0
    for _ in range(max_splits):
        inside = np.flatnonzero(positive)
        if len(inside) < max(min_size, 2):
            break
        xs, ys = x[inside], y[inside]
        if (ys == 1).any() and (ys == 0).any():
            sub = SeededKMeans(2).fit(xs, ys).labels_ == 1
            rule = "seeded 2-means"
        elif (ys == 1).any() and fallbacks < max_fallback:
            fallbacks += 1
            labels = KMeans(2, n_init=10, random_state=seed).fit(xs).labels_
            counts = [int(((labels == c) & (ys == 1)).sum()) for c in range(2)]
            sizes = [int((labels == c).sum()) for c in range(2)]
            pick = max(range(2), key=lambda c: (counts[c], -sizes[c]))
            sub = labels == pick
            rule = "2-means (only positive seeds inside)"
        else:
            break
        candidate = np.zeros_like(positive)
        candidate[inside[sub]] = True
        if candidate.sum() == positive.sum() or candidate.sum() == 0:
            break
        new_score = seed_f1(y, candidate) if score_on == "all" else seed_f1(ys, sub)
        kept = new_score >= score
        history.append({"rule": rule, "positive": int(candidate.sum()), "score": new_score, "kept": kept,
                        "mask": candidate})
        if not kept:
            break
        positive, score = candidate, new_score
    return SICResult(positive=positive, score=score, history=history)


# ------------------------------------------------------------------------------ the click protocol (§3.2)
def click_seeds(n_patches: int, positive_clicks, negative_clicks) -> np.ndarray:
    """Seeds array (-1 unlabelled, 0 negative, 1 positive) from the indices of clicked patches."""
    seeds = np.full(int(n_patches), -1)
    for value, clicks, what in ((1, positive_clicks, "positive"), (0, negative_clicks, "negative")):
        idx = np.asarray(clicks)
        if idx.size == 0:
            raise SeedError(f"no {what} click: seeded clustering needs at least one click in each class.")
        if idx.dtype.kind not in "iu":
            raise SeedError(f"{what} clicks must be patch indices (integers), got {idx.dtype}.")
        bad = idx[(idx < 0) | (idx >= n_patches)]
        if bad.size:
            raise SeedError(f"{what} click indices {bad.tolist()[:5]} are outside 0…{n_patches - 1}: the slide "
                            f"has {n_patches} patches; are the clicks from another slide or tiling?")
        if (seeds[idx] >= 0).any():
            raise SeedError(f"patches {sorted(set(idx[seeds[idx] >= 0].tolist()))[:5]} are clicked as both positive "
                            "and negative.")
        seeds[idx] = value
    return seeds


def clickable(cancer_fraction, positive_at: float = 0.5):
    """Indices of the patches a simulated pathologist may click: (cancer, benign) = (fraction ≥ ``positive_at``,
    fraction 0). Partly cancerous patches below ``positive_at`` are never clicked."""
    frac = np.asarray(cancer_fraction)
    return np.flatnonzero(frac >= positive_at), np.flatnonzero(frac == 0)


def random_clicks(rng, cancer_fraction, n_clicks: int, positive_at: float = 0.5) -> np.ndarray:
    """Paper 002's simulated clicks: ``n_clicks`` random patches inside the cancer mask (fraction ≥
    ``positive_at``, the ground-truth rule) and ``n_clicks`` inside the benign tissue (no cancer at all); fewer
    when a slide has fewer such patches."""
    frac = np.asarray(cancer_fraction)
    pos, neg = clickable(frac, positive_at)
    if not len(pos) or not len(neg):
        raise SeedError(f"the slide has {len(pos)} cancer and {len(neg)} benign patches; clicks need both.")
    return click_seeds(len(frac), rng.choice(pos, min(n_clicks, len(pos)), replace=False),
                       rng.choice(neg, min(n_clicks, len(neg)), replace=False))


def click_draws(cancer_fraction, clicks=(1, 3, 5), repeats: int = 5, seed: int = 0, positive_at: float = 0.5):
    """The clicks of :func:`click_protocol`, in its order: (click count, repeat, seeds) for each click count and
    repeat, from one random stream seeded with ``seed`` — so that another method can be given exactly the clicks
    SIC was given."""
    rng = np.random.default_rng(seed)
    for n_clicks in clicks:
        for repeat in range(repeats):
            yield int(n_clicks), repeat, random_clicks(rng, cancer_fraction, n_clicks, positive_at)


def patch_scores(truth, predicted, seeds) -> dict:
    """Patch-level F1, precision and recall of ``predicted`` against ``truth`` (bool per patch), and the F1 of
    the patches nobody clicked (``seeds`` < 0; the clicked ones are right by construction). That last F1 is NaN
    when no unclicked patch is cancer: F1 has no positive class to find there (scikit-learn would say 0)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    truth, predicted, seeds = np.asarray(truth, bool), np.asarray(predicted, bool), np.asarray(seeds)
    unclicked = seeds < 0
    return {"f1": float(f1_score(truth, predicted, zero_division=0.0)),
            "precision": float(precision_score(truth, predicted, zero_division=0.0)),
            "recall": float(recall_score(truth, predicted, zero_division=0.0)),
            "f1_unclicked": float(f1_score(truth[unclicked], predicted[unclicked], zero_division=0.0))
            if truth[unclicked].any() else float("nan")}


def click_protocol(embeddings, cancer_fraction, clicks=(1, 3, 5), repeats: int = 5, seed: int = 0,
                   positive_at: float = 0.5, max_fallback: int = 1, score_on: str = "all") -> list[dict]:
    """§3.2 on one slide: for each click count, ``repeats`` runs with fresh random clicks (:func:`click_draws`);
    per run the patch scores against the ground truth (patches at least ``positive_at`` inside cancer;
    :func:`patch_scores`), the clicks actually placed per class (fewer than asked when a slide has fewer such
    patches), the F1 on the seeds and the time of the clustering. ``max_fallback=0`` leaves out the plain 2-means
    step; ``score_on`` as in :func:`seeded_iterative_clustering`. Returns one row per run."""
    import time

    _check_score_on(score_on)
    x, _ = checked_inputs(embeddings, np.full(len(embeddings), -1))
    frac = np.asarray(cancer_fraction, float)
    if frac.shape != (len(x),):
        raise SeedError(f"{frac.shape} cancer fractions for {len(x)} patches: give one per patch.")
    truth = frac >= positive_at
    rows = []
    for n_clicks, repeat, seeds in click_draws(frac, clicks, repeats, seed, positive_at):
        started = time.perf_counter()
        result = seeded_iterative_clustering(x, seeds, seed=seed, max_fallback=max_fallback, score_on=score_on)
        rows.append({"clicks": n_clicks, "repeat": repeat, "seconds": time.perf_counter() - started,
                     **patch_scores(truth, result.positive, seeds),
                     "cancer_clicks": int((seeds == 1).sum()), "benign_clicks": int((seeds == 0).sum()),
                     "seed_f1": result.score, "steps": len(result.history),
                     "fallback_kept": any(h["kept"] and h["rule"].startswith("2-means") for h in result.history),
                     "predicted_ratio": float(result.positive.mean()), "positive_ratio": float(truth.mean()),
                     "positive": result.positive})
    return rows


# ------------------------------------------------------------------------------ clicks in, regions out (QuPath)
def clicks_to_seeds(clicks, centres, patch: int, positive=("Tumor",)) -> np.ndarray:
    """Seeds (−1 unlabelled, 0 negative, 1 positive; see :func:`seeded_iterative_clustering`) from clicks given as
    a table with x, y (level-0 pixels) and classification — :func:`helpers.data.annotations.read_qupath_points`
    reads them from QuPath. A click seeds the patch whose ``patch``-pixel square (``centres``: row, col of each
    patch centre, level-0 pixels) contains it; a click in a class named in ``positive`` is positive, any other
    class negative. A click outside every patch is an error that names it."""
    centres = np.asarray(centres, np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise SeedError(f"centres of shape {centres.shape}: give one (row, col) per patch.")
    seeds = np.full(len(centres), -1, np.int64)
    half = patch / 2
    for x, y, name in zip(clicks["x"], clicks["y"], clicks["classification"]):
        inside = np.flatnonzero((np.abs(centres[:, 0] - y) <= half) & (np.abs(centres[:, 1] - x) <= half))
        if not len(inside):
            raise SeedError(f"the click at (x={x:.0f}, y={y:.0f}) ({name}) lies in no patch: it is outside the tissue "
                            "that was tiled; move it onto tissue or tile with a lower tissue threshold.")
        nearest = inside[np.argmin(np.hypot(centres[inside, 0] - y, centres[inside, 1] - x))]
        seeds[nearest] = 1 if name in positive else 0
    return seeds


def region_mask(positive, centres, patch: int, slide_shape, downsample: float) -> np.ndarray:
    """The positive patches painted on a grid of the slide at ``downsample`` (level-0 pixels per mask pixel):
    a (height / downsample) × (width / downsample) boolean mask, ``slide_shape`` = (height, width) at level 0."""
    positive, centres = np.asarray(positive, bool), np.asarray(centres, np.float64)
    if positive.shape != (len(centres),):
        raise SeedError(f"{positive.size} positive flags for {len(centres)} patches; give one per patch.")
    shape = (int(np.ceil(slide_shape[0] / downsample)), int(np.ceil(slide_shape[1] / downsample)))
    mask = np.zeros(shape, bool)
    for r, c in centres[positive]:
        top, left = (r - patch / 2) / downsample, (c - patch / 2) / downsample
        mask[max(int(round(top)), 0): int(round(top + patch / downsample)),
             max(int(round(left)), 0): int(round(left + patch / downsample))] = True
    return mask
