"""Seeded iterative clustering (helpers.methods.seeded.sic) on one slide-sized problem: 10 000 patches × 512 dims with a
lesion of 8 % of the patches and 5 clicks per class. Prints the time of the whole algorithm (acceptance: ≤ 1 s per
10 000-patch slide), of one seeded 2-means on the float32 store (scikit-learn's Lloyd iterations started at
the seed means) beside the same fit in float64 (same labels, checked), and the patch-level F1. On demand, never in CI:

    .venv/bin/python benchmarks/sic_benchmark.py [--patches 10000 --dims 512]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.methods.seeded import sic  # noqa: E402


def main(n_patches: int, dims: int, lesion_fraction: float, clicks: int, seed: int):
    from sklearn.cluster import KMeans
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    n_lesion = int(lesion_fraction * n_patches)
    tissue_types = rng.normal(0, 3, (3, dims))
    lesion_centre = tissue_types[2] + rng.normal(0, 1.5, dims)
    benign_type = rng.integers(0, 3, n_patches - n_lesion)
    x = np.vstack([tissue_types[benign_type] + rng.normal(0, 1, (n_patches - n_lesion, dims)),
                   lesion_centre + rng.normal(0, 1, (n_lesion, dims))]).astype(np.float32)
    truth = np.r_[np.zeros(n_patches - n_lesion, int), np.ones(n_lesion, int)]
    seeds = np.full(n_patches, -1)
    seeds[rng.choice(np.flatnonzero((truth == 0) & (np.r_[benign_type, np.full(n_lesion, -1)] == 0)), clicks,
                     replace=False)] = 0
    seeds[rng.choice(np.flatnonzero(truth == 1), clicks, replace=False)] = 1

    started = time.perf_counter()
    result = sic.seeded_iterative_clustering(x, seeds, seed=seed)
    t_sic = time.perf_counter() - started
    started = time.perf_counter()
    ours = sic.SeededKMeans(2).fit(x, seeds)
    t_ours = time.perf_counter() - started
    means = np.stack([x[seeds == c].mean(0) for c in range(2)]).astype(np.float64)
    started = time.perf_counter()
    ref = KMeans(2, init=means, n_init=1).fit(x.astype(np.float64))
    t_ref = time.perf_counter() - started
    agree = float((ours.labels_ == ref.labels_).mean())
    print(f"{n_patches} patches × {dims} dims, lesion {lesion_fraction:.0%}, {clicks} clicks per class")
    print(f"seeded iterative clustering: {t_sic:6.2f} s, {len(result.history)} steps "
          f"({', '.join(h['rule'] + (' kept' if h['kept'] else ' refused') for h in result.history)})")
    print(f"patch F1: first seeded split {f1_score(truth, ours.labels_ == 1):.3f}, "
          f"after SIC {f1_score(truth, result.positive):.3f}")
    print(f"one seeded 2-means: float32 {t_ours:.2f} s, float64 {t_ref:.2f} s (float64/float32 = "
          f"{t_ref / t_ours:.1f}); labels agree on {agree:.1%} of patches")
    print(f"time per 10 000 patches: {t_sic * 10_000 / n_patches:.2f} s (target ≤ 1 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--lesion-fraction", type=float, default=0.08)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.patches, args.dims, args.lesion_fraction, args.clicks, args.seed)
