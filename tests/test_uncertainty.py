import numpy as np
import pytest
from scipy import stats

from helpers import uncertainty


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_units():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 10), rng.normal(1.0, 1.0, 1000)
    a, b = uncertainty.bootstrap_ci(small), uncertainty.bootstrap_ci(large)
    assert a["low"] < a["mean"] < a["high"] and b["low"] < b["mean"] < b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5
    assert b["low"] < 1.0 < b["high"]
    assert uncertainty.bootstrap_ci(small, seed=3) == uncertainty.bootstrap_ci(small, seed=3)   # seeded
    assert uncertainty.bootstrap_ci([2.0, 2.0, 2.0]) == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 3}


def test_paired_difference_decides_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.9, 30)
    clear = uncertainty.paired_difference(base + 0.1 + rng.normal(0, 0.02, 30), base)
    assert clear["better"] == "a" and clear["low"] > 0
    assert clear["p_wilcoxon"] < 1e-4
    noise = uncertainty.paired_difference(base + rng.normal(0, 0.05, 30), base)
    assert noise["better"] == "undecided" and noise["low"] < 0 < noise["high"]
    worse = uncertainty.paired_difference(base, base + 0.2)
    assert worse["better"] == "b"


def test_paired_difference_p_value_is_scipys_wilcoxon():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 20), rng.normal(0.3, 1, 20)
    assert uncertainty.paired_difference(a, b)["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


@pytest.mark.parametrize("a, b, match", [
    ([0.5], [0.4], "at least 2"),
    ([0.5, np.nan], [0.4, 0.3], "NaN"),
    ([0.5, 0.6, 0.7], [0.4, 0.3], "paired"),
])
def test_paired_difference_rejects_bad_scores(a, b, match):
    with pytest.raises(ValueError, match=match):
        uncertainty.paired_difference(a, b)


def test_groups_differ_p_is_scipys_kruskal_and_one_when_nothing_differs():
    rng = np.random.default_rng(3)
    groups = [rng.normal(0, 1, 20), rng.normal(1.5, 1, 20), rng.normal(0, 1, 15)]
    assert uncertainty.groups_differ_p(groups) == pytest.approx(stats.kruskal(*groups).pvalue, rel=1e-12)
    assert uncertainty.groups_differ_p(groups) < 0.01
    assert uncertainty.groups_differ_p([np.ones(5), np.ones(4)]) == 1.0          # all equal: scipy would raise
    assert uncertainty.groups_differ_p([rng.normal(0, 1, 9)]) == 1.0             # one group: nothing to compare


def test_rank_correlation_is_scipys_spearman_and_zero_for_a_constant():
    rng = np.random.default_rng(4)
    x = rng.normal(size=40)
    y = x ** 3 + rng.normal(0, 0.1, 40)
    assert uncertainty.rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert uncertainty.rank_correlation(x, np.full(40, 2.0)) == 0.0            # scipy: NaN
    with pytest.raises(ValueError, match="one pair per unit"):
        uncertainty.rank_correlation(x, y[:-1])



def test_independent_difference_and_ranked():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1, 40), rng.normal(0.0, 1, 60)
    out = uncertainty.independent_difference(a, b)
    assert out["mean_difference"] == pytest.approx(a.mean() - b.mean())
    assert out["low"] < out["mean_difference"] < out["high"] and out["better"] == "a"
    assert out["p_mannwhitney"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue)
    same = uncertainty.independent_difference(a, a + 1e-9)
    assert same["better"] == "undecided"

    base = rng.normal(0, 1, 50)
    scores = {"weak": base, "strong": base + 1.0 + rng.normal(0, 0.1, 50), "tie": base + rng.normal(0, 0.1, 50)}
    rows = uncertainty.ranked(scores)
    assert [r["method"] for r in rows][0] == "strong"
    assert rows[0]["vs_next"]["better"] == "a"                  # strong is separated from the next
    assert rows[-1]["vs_next"] is None
    lower = uncertainty.ranked(scores, higher_is_better=False)   # e.g. deletion AUC: lower is better
    assert lower[0]["method"] != "strong" and lower[-1]["method"] == "strong"
    assert lower[-1]["low"] <= lower[-1]["mean"] <= lower[-1]["high"]
    scores["weak"] = np.where(np.arange(50) < 5, np.nan, base)   # units without a score are dropped for all
    assert uncertainty.ranked(scores)[0]["n"] == 45
    with pytest.raises(ValueError, match="at least two"):
        uncertainty.ranked({"only": base})


def test_mean_interval_text_drops_missing_units():
    values = [0.1, np.nan, 0.3, 0.2]
    assert uncertainty.mean_interval_text(values) == uncertainty.interval_text(
        uncertainty.bootstrap_ci([0.1, 0.3, 0.2]), 3)
    assert uncertainty.mean_interval_text([0.5, np.nan]) == "n < 2"


def test_small_samples_get_exact_p_values_equal_to_full_enumeration():
    from itertools import product

    from scipy import stats

    rng = np.random.default_rng(4)
    a, b = rng.normal(0.3, 1, 9), rng.normal(0, 1, 9)
    paired = uncertainty.paired_difference(a, b)
    assert paired["p_method"] == "exact"
    # by hand: the signed-rank statistic over all 2^9 sign flips
    d = a - b
    ranks = stats.rankdata(np.abs(d))
    observed = min(ranks[d > 0].sum(), ranks[d < 0].sum())
    flips = [min(ranks[np.array(s) > 0].sum(), ranks[np.array(s) < 0].sum()) for s in product((1, -1), repeat=9)]
    assert paired["p_wilcoxon"] == pytest.approx(np.mean(np.array(flips) <= observed + 1e-12))
    groups = uncertainty.independent_difference(a[:5], b[:6])
    assert groups["p_method"] == "exact"
    large = uncertainty.paired_difference(rng.normal(size=40), rng.normal(size=40))
    assert large["p_method"] == "scipy"


def test_equivalence_needs_the_difference_inside_the_margin_not_an_interval_containing_zero():
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.05, 200)
    close = base + rng.normal(0.005, 0.01, 200)
    assert uncertainty.equivalence_paired(close, base, margin=0.02)["equivalent"]
    # few, noisy units: no difference detected, and no equivalence shown either
    few_a, few_b = rng.normal(0.5, 0.2, 6), rng.normal(0.5, 0.2, 6)
    assert uncertainty.paired_difference(few_a, few_b)["better"] == "undecided"
    assert not uncertainty.equivalence_paired(few_a, few_b, margin=0.02)["equivalent"]
    groups = [rng.normal(0.5, 0.05, 300) for _ in range(3)]
    result = uncertainty.equivalence_groups(groups, margin=0.03)
    assert result["equivalent"] and len(result["pairs"]) == 3
    assert not uncertainty.equivalence_groups(groups + [rng.normal(0.6, 0.05, 300)], margin=0.03)["equivalent"]
    with pytest.raises(ValueError, match="margin"):
        uncertainty.equivalence_paired(close, base, margin=0)


def test_holm_matches_statsmodels_and_keeps_names():
    adjusted = uncertainty.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert uncertainty.holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="p_values"):
        uncertainty.holm([1.5])


def test_kruskal_effect_is_scipys_h_over_n_minus_1_beside_the_spread_of_means():
    rng = np.random.default_rng(11)
    groups = [rng.normal(0, 1, 12), rng.normal(0.5, 1, 9), rng.normal(3, 1, 10), np.array([])]
    spread, eps2 = uncertainty.kruskal_effect(groups)
    assert spread == pytest.approx(groups[2].mean() - groups[0].mean())
    assert eps2 == pytest.approx(stats.kruskal(*groups[:3]).statistic / (31 - 1), rel=1e-12)
    # complete separation (no overlap between any two groups) gives ε² close to 1; identical groups exactly 0
    separate = [np.arange(10.0) + 100 * g for g in range(3)]
    assert uncertainty.kruskal_effect(separate)[1] > 0.85
    assert uncertainty.kruskal_effect([np.ones(4), np.ones(6)]) == (0.0, 0.0)
    # one non-empty group (a clustering that put every image into one cluster): nothing separates, no scipy error
    assert uncertainty.kruskal_effect([np.arange(4.0), []]) == (0.0, 0.0)
    with pytest.raises(ValueError, match=r"samples\[1\] holds 1 NaN"):
        uncertainty.kruskal_effect([np.arange(4.0), [np.nan]])


def test_correlation_difference_is_a_paired_bootstrap_of_two_spearman_rhos():
    rng = np.random.default_rng(12)
    x = rng.normal(size=40)
    close, loose = x + rng.normal(0, 0.2, 40), x + rng.normal(0, 3, 40)
    result = uncertainty.correlation_difference(x, close, loose, seed=1)
    assert result["rho_a"] == pytest.approx(stats.spearmanr(x, close).statistic)
    assert result["difference"] == pytest.approx(stats.spearmanr(x, close).statistic - stats.spearmanr(x, loose).statistic)
    assert result["low"] < result["difference"] < result["high"] and result["better"] == "a"
    assert result == uncertainty.correlation_difference(x, close, loose, seed=1)         # seeded
    same = uncertainty.correlation_difference(x, close, close + 1e-9 * rng.normal(size=40), seed=1)
    assert same["better"] == "undecided" and same["low"] <= 0 <= same["high"]
    with pytest.raises(ValueError, match="40, 40 and 39"):
        uncertainty.correlation_difference(x, close, loose[:-1])


def test_auc_difference_counts_ties_as_sklearn_and_decides_by_its_interval():
    from sklearn.metrics import roc_auc_score

    from helpers.uncertainty import _auc_of_rows

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    a = np.round(y + rng.normal(0, 0.6, 300), 1)          # rounded: many ties, which count half
    b = rng.normal(0, 1, 300)                              # knows nothing of y
    idx = rng.integers(0, 300, (5, 300))                   # bootstrap resamples hold duplicates
    assert _auc_of_rows(y[idx], a[idx]) == pytest.approx([roc_auc_score(y[i], a[i]) for i in idx])
    res = uncertainty.auc_difference(y, a, b, seed=0)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a)) and res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert res["low"] < res["mean_difference"] < res["high"] and res["better"] == "a"
    assert uncertainty.auc_difference(y, a, b, seed=0) == res                          # seeded
    same = uncertainty.auc_difference(y, a, a + 1e-9 * rng.normal(size=300), seed=0)
    assert same["better"] == "undecided" and same["low"] <= 0 <= same["high"]
    with pytest.raises(ValueError, match="both classes"):
        uncertainty.auc_difference(np.ones(10), a[:10], b[:10])
    with pytest.raises(ValueError, match="same units"):
        uncertainty.auc_difference(y, a[:10], b)


def test_block_medians_are_one_unit_per_block_inside_the_mask():
    values = np.arange(16, dtype=float).reshape(4, 4)
    mask = np.ones((4, 4), bool)
    mask[2:, 2:] = False                      # the lower-right block is outside
    mask[0, 0] = False                        # the upper-left block is 3/4 inside
    values[0, 1] = np.nan                     # an undefined value is left out, not counted as a number
    np.testing.assert_array_equal(uncertainty.block_medians(values, mask, size=2),
                                  [np.median([4, 5]), np.median([2, 3, 6, 7]), np.median([8, 9, 12, 13])])
    assert uncertainty.block_medians(values, mask, size=2, min_fraction=1.0).tolist() == [4.5, 10.5]
    # further axes (slices) are pooled into the same block
    stacked = np.stack([values, values + 100], -1)
    assert uncertainty.block_medians(stacked, np.stack([mask, mask], -1), size=2)[1] == np.median([2, 3, 6, 7, 102,
                                                                                                   103, 106, 107])
    with pytest.raises(ValueError, match="same shape"):
        uncertainty.block_medians(values, mask[:3])
