"""Seeded iterative clustering (paper 002, Algorithm 1): split patch embeddings into "positive" and "negative"
from a few clicked seed patches.

- :class:`SeededKMeans` — k-means whose centres start at the mean of each class's seeds (Basu et al. 2002),
  then ordinary Lloyd iterations with scikit-learn's stopping rule (tested against
  ``sklearn.cluster.KMeans(init=seed_means, n_init=1)``).
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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class SeedError(ValueError):
    """Bad embeddings or seeds, with what to change."""


def _check(embeddings, seeds):
    x = np.asarray(embeddings, dtype=np.float64)
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
    """2-class (or K-class) k-means initialised from the seeds' class means.

    ``fit(X, seeds)``: seeds as in the module docstring (classes 0…K-1, -1 unlabelled); every class needs at
    least one seed. ``labels_`` follow the classes: cluster c started at class c's seed mean."""

    def __init__(self, n_clusters: int = 2, max_iter: int = 300, tol: float = 1e-4):
        self.n_clusters, self.max_iter, self.tol = int(n_clusters), int(max_iter), float(tol)

    def fit(self, embeddings, seeds):
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(seeds).astype(int)
        if x.ndim != 2 or y.shape != (len(x),):
            raise SeedError(f"embeddings {x.shape} and seeds {y.shape}: give patches × dims and one seed per patch.")
        missing = [c for c in range(self.n_clusters) if not (y == c).any()]
        if missing:
            raise SeedError(f"no seed of class {missing}; seeded k-means needs at least one seed per class "
                            "(use plain k-means when one class has no seeds).")
        centres = np.stack([x[y == c].mean(0) for c in range(self.n_clusters)])
        tol = self.tol * np.mean(np.var(x, axis=0))        # scikit-learn's tolerance, scaled by the data
        labels = None
        for iteration in range(1, self.max_iter + 1):
            new_labels = _nearest(x, centres)
            if labels is not None and np.array_equal(new_labels, labels):
                break                                       # strict convergence: nothing moved
            labels = new_labels
            new_centres = np.stack([x[labels == c].mean(0) if (labels == c).any() else centres[c]
                                    for c in range(self.n_clusters)])
            shift = float(((new_centres - centres) ** 2).sum())
            centres = new_centres
            if shift <= tol:
                break
        self.cluster_centers_ = centres
        self.labels_ = _nearest(x, centres)
        self.n_iter_ = iteration
        self.inertia_ = float(((x - centres[self.labels_]) ** 2).sum())
        return self


def _nearest(x, centres):
    d2 = (x ** 2).sum(1)[:, None] - 2 * x @ centres.T + (centres ** 2).sum(1)[None]
    return d2.argmin(1)


def seed_f1(seeds, positive) -> float:
    """F1 of the positive prediction at the seeded patches only (what the clicks can judge)."""
    from sklearn.metrics import f1_score

    seeds, positive = np.asarray(seeds), np.asarray(positive, bool)
    known = seeds >= 0
    return float(f1_score(seeds[known], positive[known].astype(int), zero_division=0.0))


@dataclass
class SICResult:
    positive: np.ndarray                 # bool per patch, the final positive region
    score: float                         # F1 on the seeds
    history: list = field(default_factory=list)   # per split: rule used, positive count, score, kept


def seeded_iterative_clustering(embeddings, seeds, max_splits: int = 20, min_size: int = 2, seed: int = 0,
                                max_fallback: int = 1) -> SICResult:
    """Algorithm 1 of paper 002 (see the module docstring for the interpretation)."""
    from sklearn.cluster import KMeans

    x, y = _check(embeddings, seeds)
    if not ((y == 0).any() and (y == 1).any()):
        raise SeedError("seeded iterative clustering needs at least one positive (1) and one negative (0) seed.")
    first = SeededKMeans(2).fit(x, y)
    positive = first.labels_ == 1
    score = seed_f1(y, positive)
    history = [{"rule": "seeded 2-means (all patches)", "positive": int(positive.sum()), "score": score,
                "kept": True}]
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
        new_score = seed_f1(y, candidate)
        kept = new_score >= score
        history.append({"rule": rule, "positive": int(candidate.sum()), "score": new_score, "kept": kept})
        if not kept:
            break
        positive, score = candidate, new_score
    return SICResult(positive=positive, score=score, history=history)
