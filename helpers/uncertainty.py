"""Uncertainty for comparisons: bootstrap intervals, paired tests, group and rank tests; thin wrappers of scipy.stats.

The collection's rule: before a notebook calls one method (encoder, model, setting) better than another, it shows
the uncertainty its sample size allows. Both functions take the per-unit scores (per slide, per patch, per
subject) that a mean hides, and are seeded, so the same scores give the same interval.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 2000


def _scores(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError(f"{name} has {values.size} value(s); an interval needs at least 2 (one per slide, patch or "
                         "subject).")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf; drop the units without a score before comparing.")
    return values


def _check_level(level):
    if not 0 < level < 1:
        raise ValueError(f"level={level}: the confidence level is a fraction between 0 and 1 (0.95 for 95 %).")


def bootstrap_ci(values, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Mean of ``values`` with a percentile bootstrap interval (scipy.stats.bootstrap): {mean, low, high, n}."""
    from scipy import stats

    _check_level(level)
    values = _scores(values, "values")
    if np.ptp(values) == 0:      # every resample has the same mean; scipy warns and returns NaN
        low = high = float(values[0])
    else:
        ci = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=n_resamples,
                             method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    return {"mean": float(values.mean()), "low": low, "high": high, "n": int(values.size)}


def paired_difference(a, b, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Compare paired scores ``a`` and ``b`` (same units in the same order): the mean of a − b with its bootstrap
    interval, and the two-sided Wilcoxon signed-rank p-value. ``better`` is "a" or "b" only when the interval
    excludes 0, otherwise "undecided"."""
    from scipy import stats

    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} scores and b {b.size}; paired scores come one per unit in both.")
    diff = a - b
    out = bootstrap_ci(diff, level, n_resamples, seed)
    p = 1.0 if np.all(diff == 0) else float(stats.wilcoxon(a, b).pvalue)
    better = "a" if out["low"] > 0 else "b" if out["high"] < 0 else "undecided"
    return {"mean_difference": out["mean"], "low": out["low"], "high": out["high"], "p_wilcoxon": p,
            "n": out["n"], "better": better}



def independent_difference(a, b, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Compare two independent groups of scores (e.g. patches of two classes): mean(a) − mean(b) with a
    percentile bootstrap interval that resamples each group on its own (scipy.stats.bootstrap), and the
    two-sided Mann–Whitney U p-value. ``better`` as in :func:`paired_difference`."""
    from scipy import stats

    _check_level(level)
    a, b = _scores(a, "a"), _scores(b, "b")
    ci = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                         confidence_level=level, n_resamples=n_resamples, method="percentile", vectorized=True,
                         random_state=np.random.default_rng(seed)).confidence_interval
    low, high = float(ci.low), float(ci.high)
    p = 1.0 if np.ptp(np.concatenate([a, b])) == 0 else float(stats.mannwhitneyu(a, b).pvalue)
    better = "a" if low > 0 else "b" if high < 0 else "undecided"
    return {"mean_difference": float(a.mean() - b.mean()), "low": low, "high": high, "p_mannwhitney": p,
            "n": (int(a.size), int(b.size)), "better": better}


def ranked(scores: dict, higher_is_better: bool = True, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
           seed: int = 0) -> list[dict]:
    """Order methods by their mean score (``scores``: name → per-unit scores, the same units in the same order
    for every method) and say how far the sample separates neighbours: each row holds the method, its mean with
    a bootstrap interval, and ``vs_next`` — the paired difference to the next method down (oriented so that a
    positive difference means "better"; None for the last). Units where any method has no score (NaN) are
    dropped for all, so that every comparison is paired."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"ranked needs at least two methods to order, got {names}.")
    table = np.vstack([np.asarray(scores[n], np.float64).ravel() for n in names])
    keep = np.isfinite(table).all(0)
    table = table[:, keep] if higher_is_better else -table[:, keep]
    order = np.argsort(-table.mean(1), kind="stable")
    rows = []
    for position, i in enumerate(order):
        ci = bootstrap_ci(table[i], level, n_resamples, seed)
        sign = 1 if higher_is_better else -1
        row = {"method": names[i], "mean": sign * ci["mean"], "low": min(sign * ci["low"], sign * ci["high"]),
               "high": max(sign * ci["low"], sign * ci["high"]), "n": ci["n"], "vs_next": None}
        if position + 1 < len(order):
            row["vs_next"] = paired_difference(table[i], table[order[position + 1]], level, n_resamples, seed)
        rows.append(row)
    return rows


def mean_interval_text(values, digits: int = 3, seed: int = 0) -> str:
    """'mean [low, high]' of the finite values (NaN units, e.g. patches without a mask, dropped), or 'n < 2' when
    fewer than two are left: the cell of a table of means with their bootstrap intervals."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return interval_text(bootstrap_ci(values, seed=seed), digits) if len(values) > 1 else "n < 2"


def interval_text(result: dict, digits: int = 2) -> str:
    """'0.12 [0.03, 0.20]' for a bootstrap_ci or paired_difference result."""
    centre = result.get("mean", result.get("mean_difference"))
    return f"{centre:.{digits}f} [{result['low']:.{digits}f}, {result['high']:.{digits}f}]"


def groups_differ_p(samples) -> float:
    """Kruskal–Wallis p-value that the groups' values (a list of 1-D arrays) come from one distribution
    (scipy.stats.kruskal); 1.0 when there is nothing to compare (fewer than two groups, or all values equal),
    where scipy would raise."""
    from scipy import stats

    samples = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if len(samples) < 2 or np.ptp(np.concatenate(samples)) == 0:
        return 1.0
    return float(stats.kruskal(*samples).pvalue)


def rank_correlation(x, y) -> float:
    """Spearman's rho of x and y (scipy.stats.spearmanr); 0.0 when either side is constant (nothing to rank),
    where scipy returns NaN."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values and y {len(y)}; give one pair per unit.")
    return float(stats.spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0
