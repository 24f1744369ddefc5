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
