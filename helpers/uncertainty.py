"""Uncertainty for comparisons: bootstrap intervals, paired tests, group and rank tests; thin wrappers of scipy.stats.

The collection's rule: before a notebook calls one method (encoder, model, setting) better than another, it shows
the uncertainty its sample size allows. Both functions take the per-unit scores (per slide, per patch, per
subject) that a mean hides, and are seeded, so the same scores give the same interval.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .arrays import numeric

LEVEL = 0.95
N_RESAMPLES = 2000
# Small samples get exact p-values: every sign flip (paired) or every relabelling (two groups) of the data is
# enumerated when there are at most this many, instead of a normal approximation
EXACT_LIMIT = 100_000


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


def block_medians(values, mask, size: int = 8, min_fraction: float = 0.5) -> np.ndarray:
    """Bootstrap units for a map whose neighbouring pixels (voxels) are correlated: the median of ``values`` in each
    ``size`` × ``size`` block of the first two axes (all further axes pooled), over the blocks at least
    ``min_fraction`` inside ``mask``. ``values`` has the mask's shape (NaN where undefined); resampling voxels instead
    would treat thousands of correlated voxels as independent and give far too narrow an interval."""
    values, mask = np.asarray(values, float), np.asarray(mask, bool)
    if values.shape != mask.shape or values.ndim < 2:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must be maps of the same shape (2-D or more).")
    if int(size) < 1 or not 0 < min_fraction <= 1:
        raise ValueError(f"size={size}, min_fraction={min_fraction}: a block is ≥ 1 pixel wide and the fraction in "
                         "(0, 1].")
    medians = []
    for i in range(0, mask.shape[0], size):
        for j in range(0, mask.shape[1], size):
            inside = mask[i:i + size, j:j + size]
            block = values[i:i + size, j:j + size][inside]
            block = block[np.isfinite(block)]
            if inside.size and inside.mean() >= min_fraction and block.size:
                medians.append(float(np.median(block)))
    return np.asarray(medians)


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
    if np.all(diff == 0):
        p, how = 1.0, "all differences 0"
    elif 2 ** diff.size <= EXACT_LIMIT:
        p, how = float(stats.wilcoxon(a, b, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue), "exact"
    else:
        p, how = float(stats.wilcoxon(a, b).pvalue), "scipy"
    better = "a" if out["low"] > 0 else "b" if out["high"] < 0 else "undecided"
    return {"mean_difference": out["mean"], "low": out["low"], "high": out["high"], "p_wilcoxon": p,
            "p_method": how, "n": out["n"], "better": better}



def independent_difference(a, b, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Compare two independent groups of scores (e.g. patches of two classes): mean(a) − mean(b) with a
    percentile bootstrap interval that resamples each group on its own (scipy.stats.bootstrap), and the
    two-sided Mann–Whitney U p-value, exact (every relabelling enumerated) while there are at most EXACT_LIMIT.
    ``better`` as in :func:`paired_difference`."""
    from scipy import stats

    _check_level(level)
    a, b = _scores(a, "a"), _scores(b, "b")
    ci = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                         confidence_level=level, n_resamples=n_resamples, method="percentile", vectorized=True,
                         random_state=np.random.default_rng(seed)).confidence_interval
    low, high = float(ci.low), float(ci.high)
    if np.ptp(np.concatenate([a, b])) == 0:
        p, how = 1.0, "all values equal"
    elif math.comb(a.size + b.size, a.size) <= EXACT_LIMIT:
        p = float(stats.mannwhitneyu(a, b, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue)
        how = "exact"
    else:
        p, how = float(stats.mannwhitneyu(a, b).pvalue), "scipy"
    better = "a" if low > 0 else "b" if high < 0 else "undecided"
    return {"mean_difference": float(a.mean() - b.mean()), "low": low, "high": high, "p_mannwhitney": p,
            "p_method": how, "n": (int(a.size), int(b.size)), "better": better}


def ranked(scores: dict, higher_is_better: bool = True, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
           seed: int = 0) -> list[dict]:
    """Order methods by their mean score (``scores``: name → per-unit scores, the same units in the same order
    for every method) and say how far the sample separates neighbours: each row holds the method, its mean with
    a bootstrap interval, and ``vs_next`` — the paired difference to the next method down (oriented so that a
    positive difference means "better"; None for the last). Units where any method has no score (NaN) are
    dropped for all, so that every comparison is paired."""
    if not isinstance(scores, dict):
        raise TypeError(f"scores is a {type(scores).__name__}; give a dict method name → per-unit scores.")
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"ranked needs at least two methods to order, got {names}.")
    rows = [numeric(scores[n], f"scores[{n!r}]", finite=False).ravel() for n in names]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"scores hold {dict(zip(names, map(len, rows)))} values per method; paired ranking needs the "
                         "same units, in the same order, for every method (NaN where a method has no score).")
    table = np.vstack(rows)
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


def _check_margin(margin, alpha):
    if not (isinstance(margin, (int, float, np.floating)) and np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin={margin!r}: the equivalence margin is a positive number in the scores' units, "
                         "declared before the data are seen (e.g. 0.05 for an F1).")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha!r}: the test level is a fraction below 0.5 (0.05 for 5 %).")


def equivalence_paired(a, b, margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided tests (TOST, statsmodels ``ttost_paired``) that paired scores ``a`` and ``b`` differ by less
    than ``margin`` on average: "no difference" shown, not merely not rejected. Returns {mean_difference, p_tost,
    equivalent (p_tost < alpha), margin, n}."""
    from statsmodels.stats.weightstats import ttost_paired

    _check_margin(margin, alpha)
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a has {a.size} scores and b {b.size}; paired scores come one per unit in both.")
    diff = a - b
    if np.ptp(diff) == 0:      # no spread: the difference is known exactly
        p = 0.0 if abs(diff[0]) < margin else 1.0
    else:
        p = float(ttost_paired(a, b, -margin, margin)[0])
    return {"mean_difference": float(diff.mean()), "p_tost": p, "equivalent": p < alpha, "margin": float(margin),
            "n": int(a.size)}


def equivalence_groups(samples, margin: float, alpha: float = 0.05) -> dict:
    """TOST for several independent groups (a list of 1-D arrays): every pair's difference of means lies within
    ±``margin`` (Welch's TOST for each pair, statsmodels ``ttost_ind``). The groups are called equivalent when every
    pair is (an intersection–union test: no correction for the number of pairs is needed). Returns {p_tost (the
    largest over pairs), largest_difference, equivalent, margin, pairs: [(i, j, difference, p)]}."""
    from statsmodels.stats.weightstats import ttost_ind

    _check_margin(margin, alpha)
    groups = [_scores(g, f"group {i}") for i, g in enumerate(samples)]
    if len(groups) < 2:
        raise ValueError(f"equivalence_groups needs at least two groups, got {len(groups)}.")
    pairs = []
    for i, j in itertools.combinations(range(len(groups)), 2):
        x, y = groups[i], groups[j]
        difference = float(x.mean() - y.mean())
        if np.ptp(np.concatenate([x, y])) == 0:
            p = 0.0
        else:
            p = float(ttost_ind(x, y, -margin, margin, usevar="unequal")[0])
        pairs.append((i, j, difference, p))
    p_max = max(p for *_, p in pairs)
    return {"p_tost": p_max, "largest_difference": max(abs(d) for _, _, d, _ in pairs), "equivalent": p_max < alpha,
            "margin": float(margin), "pairs": pairs}


def holm(p_values):
    """Holm's step-down adjustment of a family of p-values (statsmodels ``multipletests``): a dict name → p or a
    sequence of p, returned in the same form. Reject where the adjusted p is below the level."""
    from statsmodels.stats.multitest import multipletests

    names = list(p_values) if isinstance(p_values, dict) else None
    values = np.asarray([p_values[n] for n in names] if names else list(p_values), dtype=np.float64)
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"p_values must be a non-empty family of p-values in [0, 1], got {p_values!r}.")
    adjusted = multipletests(values, method="holm")[1]
    return {n: float(p) for n, p in zip(names, adjusted)} if names else [float(p) for p in adjusted]


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

    samples = [numeric(s, f"samples[{i}]", fix="Give each group's values, without NaN, one group per entry.").ravel()
               for i, s in enumerate(samples)]
    if len(samples) < 2 or np.ptp(np.concatenate(samples)) == 0:
        return 1.0
    return float(stats.kruskal(*samples).pvalue)


def rank_correlation(x, y) -> float:
    """Spearman's rho of x and y (scipy.stats.spearmanr); 0.0 when either side is constant (nothing to rank),
    where scipy returns NaN. NaN or inf in either is refused (it would read as a constant side and give 0)."""
    from scipy import stats

    fix = "Drop the units without a value from both x and y before ranking."
    x, y = numeric(x, "x", fix=fix).ravel(), numeric(y, "y", fix=fix).ravel()
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values and y {len(y)}; give one pair per unit.")
    return float(stats.spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else 0.0


def kruskal_effect(samples) -> tuple[float, float]:
    """How far groups lie apart, beside :func:`groups_differ_p`'s p-value (which a large sample makes tiny for any
    difference): (spread of the group means, ε² = H / (n − 1)) with H the Kruskal–Wallis statistic
    (scipy.stats.kruskal) over all n values; ε² runs from 0 (no separation) to 1 (complete; Tomczak & Tomczak
    2014). Empty groups are left out; fewer than two groups left, or all values equal, give (0, 0) — nothing
    separates (as :func:`groups_differ_p` gives 1.0), where scipy would raise (e.g. a clustering that put every
    image into one cluster)."""
    from scipy import stats

    fix = "Give each group's values, without NaN, one group per entry."
    samples = [numeric(s, f"samples[{i}]", min_size=0, dtype=None, fix=fix).ravel() for i, s in enumerate(samples)]
    samples = [s for s in samples if s.size]
    if len(samples) < 2:
        return 0.0, 0.0
    means = [float(s.mean()) for s in samples]
    n = sum(s.size for s in samples)
    h = float(stats.kruskal(*samples).statistic) if np.ptp(np.concatenate(samples)) > 0 else 0.0
    return max(means) - min(means), h / (n - 1)


def correlation_difference(x, a, b, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Is ``a`` tied to ``x`` more closely than ``b`` is? Spearman's ρ(x, a) − ρ(x, b) over the same units, with a
    paired percentile bootstrap interval (units resampled together: scipy.stats.bootstrap, ``paired=True``).
    Returns {rho_a, rho_b, difference, low, high, n, better}; ``better`` as in :func:`paired_difference`."""
    from scipy import stats

    _check_level(level)
    fix = "Give one value per unit in x, a and b, without NaN."
    x, a, b = (numeric(v, name, fix=fix).ravel() for v, name in ((x, "x"), (a, "a"), (b, "b")))
    if not len(x) == len(a) == len(b) or len(x) < 3:
        raise ValueError(f"x, a and b have {len(x)}, {len(a)} and {len(b)} values; give the same units (at least 3) "
                         "in each.")

    def statistic(x_, a_, b_):
        return rank_correlation(x_, a_) - rank_correlation(x_, b_)

    ci = stats.bootstrap((x, a, b), statistic, paired=True, vectorized=False, confidence_level=level,
                         n_resamples=n_resamples, method="percentile",
                         random_state=np.random.default_rng(seed)).confidence_interval
    low, high = float(ci.low), float(ci.high)
    return {"rho_a": rank_correlation(x, a), "rho_b": rank_correlation(x, b), "difference": statistic(x, a, b), "low": low, "high": high,
            "n": int(len(x)), "better": "a" if low > 0 else "b" if high < 0 else "undecided"}


def _auc_of_rows(labels, scores) -> np.ndarray:
    """ROC AUC of every row (Mann–Whitney: the chance a positive outscores a negative, ties counted half), NaN for a
    row with one class only. ``labels`` and ``scores`` are R × n."""
    from scipy import stats

    ranks = stats.rankdata(scores, axis=-1)
    n_pos = labels.sum(-1)
    n_neg = labels.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def auc_difference(labels, scores_a, scores_b, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                   seed: int = 0) -> dict:
    """Does score ``a`` rank the positives above the negatives better than score ``b`` on the same units? ROC AUC(a) −
    AUC(b) with a paired percentile bootstrap interval (units resampled together; a resample without both classes is
    skipped). Returns {auc_a, auc_b, mean_difference, low, high, n, better}; ``better`` as in :func:`paired_difference`."""
    _check_level(level)
    fix = "Give one label (0/1) and one score per unit in each, without NaN."
    y = numeric(labels, "labels", fix=fix).ravel()
    a, b = numeric(scores_a, "scores_a", fix=fix).ravel(), numeric(scores_b, "scores_b", fix=fix).ravel()
    if not len(y) == len(a) == len(b):
        raise ValueError(f"labels, scores_a and scores_b have {len(y)}, {len(a)} and {len(b)} values; give the same "
                         "units in each.")
    if not np.isin(y, (0, 1)).all() or y.min() == y.max():
        raise ValueError(f"labels hold {np.unique(y)[:5]}; an AUC needs 0/1 labels with both classes present.")
    y = y.astype(bool)
    rng = np.random.default_rng(seed)
    differences = []
    for start in range(0, n_resamples, 500):     # resamples in blocks: 500 × n ranks at a time
        idx = rng.integers(0, len(y), (min(500, n_resamples - start), len(y)))
        differences.append(_auc_of_rows(y[idx], a[idx]) - _auc_of_rows(y[idx], b[idx]))
    differences = np.concatenate(differences)
    differences = differences[np.isfinite(differences)]
    low, high = (float(q) for q in np.percentile(differences, [50 * (1 - level), 50 * (1 + level)]))
    auc_a, auc_b = (float(_auc_of_rows(y[None], s[None])[0]) for s in (a, b))
    return {"auc_a": auc_a, "auc_b": auc_b, "mean_difference": auc_a - auc_b, "low": low, "high": high,
            "n": int(len(y)), "better": "a" if low > 0 else "b" if high < 0 else "undecided"}
